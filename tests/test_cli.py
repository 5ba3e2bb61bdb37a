"""The command line as users run it: real processes, exit codes, one-sentence errors, sweeps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TinyModels, tiny_run_overrides

ROOT = Path(__file__).resolve().parents[1]


def opd(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "opd_core", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_one_sentence_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("opd_core: error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    for needle in needles:
        assert needle in errors[0]


def test_cfg_job_prints_the_composed_seed_experiment() -> None:
    result = opd("+task=math", "+teacher=qwen3_32b", "--cfg", "job")
    assert result.returncode == 0, result.stderr
    assert "path: Qwen/Qwen3-8B-Base" in result.stdout
    assert "path: Qwen/Qwen3-32B" in result.stdout
    assert "name: math" in result.stdout


def test_missing_weights_stop_with_one_sentence(tmp_path: Path) -> None:
    result = opd("+task=math", "+teacher=qwen3_32b", f"hydra.run.dir={tmp_path}")
    assert_one_sentence_error(
        result, "student model 'Qwen/Qwen3-8B-Base'", "student.model.path=/path/to/model"
    )


def test_missing_local_teacher_folder(tiny_models: TinyModels, tmp_path: Path) -> None:
    result = opd(
        "+task=arithmetic",
        "+teacher=hf",
        "teacher.model.path=/no/such/teacher",
        f"student.model.path={tiny_models.student}",
        f"hydra.run.dir={tmp_path}",
    )
    assert_one_sentence_error(result, "/no/such/teacher does not exist", "teacher.model.path=")


def test_bad_value_and_unknown_option(tmp_path: Path) -> None:
    assert_one_sentence_error(opd("train.lr=-1", f"hydra.run.dir={tmp_path}"), "train.lr=-1")
    result = opd("+task=nosuchtask", f"hydra.run.dir={tmp_path}")
    assert_one_sentence_error(result, "Unknown task 'nosuchtask'. Available: arithmetic, chat")


def test_malformed_data_file_is_named(tiny_models: TinyModels, tmp_path: Path) -> None:
    bad = tmp_path / "train.jsonl"
    bad.write_text('{"problem": "1+1", "answer": "2"}\n{not json\n')
    result = opd(
        "+task=math",
        "+teacher=hf",
        f"teacher.model.path={tiny_models.teacher}",
        f"student.model.path={tiny_models.student}",
        "task.train.path=json",
        f"task.train.data_files={bad}",
        "task.eval=null",
        "~evaluators.task_accuracy",
        "train.max_new_tokens=16",  # the math schedule's 8192 does not fit the tiny student
        "eval.max_new_tokens=16",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert_one_sentence_error(result, "Cannot load the math task's train data 'json'")


def test_multirun_sweeps_two_points(tiny_models: TinyModels, tmp_path: Path) -> None:
    overrides = [
        o
        for o in tiny_run_overrides(tiny_models, tmp_path, steps=1)
        if not o.startswith(("hydra.run.dir", "train.lr="))
    ]
    result = opd(
        "-m",
        "train.lr=1e-3,2e-3",
        *overrides,
        "eval.teacher=false",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summaries = sorted((tmp_path / "sweep").glob("*/summary.json"))
    assert len(summaries) == 2
    lrs = {json.loads(s.read_text())["final_train_metrics"]["lr"] for s in summaries}
    assert lrs == {1e-3, 2e-3}


@pytest.mark.parametrize("task", ["reverse_digits"])
def test_third_party_task_from_the_example_package(
    tiny_models: TinyModels, tmp_path: Path, task: str
) -> None:
    out = tmp_path / "run"
    overrides = [
        o.replace("+task=arithmetic", f"+task={task}")
        for o in tiny_run_overrides(tiny_models, out, steps=1)
        if not o.startswith("task.")
    ]
    result = opd(*overrides, "eval.teacher=false", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["student_after"]["eval_examples"] == 50  # the example config's eval_size
