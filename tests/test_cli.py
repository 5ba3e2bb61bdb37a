"""The command line as users run it: real processes, exit codes, one-sentence errors, sweeps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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


def test_help_opens_with_the_program_and_what_it_does() -> None:
    result = opd("--help")
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert first.startswith("opd-core: on-policy distillation"), first
    assert "powered by Hydra" not in first


def group_line(help_text: str, group: str) -> str:
    return next(line for line in help_text.splitlines() if line.startswith(f"{group}: "))


def test_a_disabled_plugin_takes_its_options_with_it() -> None:
    shown = opd("--help")
    hidden = opd("disable_plugins=[vllm,lm_eval]", "--help")
    assert hidden.returncode == 0, hidden.stderr
    assert "vllm" in group_line(shown.stdout, "sampler")
    assert "vllm" not in group_line(hidden.stdout, "sampler")
    assert "vllm" not in group_line(hidden.stdout, "teacher")
    assert "lm_eval" in group_line(shown.stdout, "evaluator")
    assert "lm_eval" not in group_line(hidden.stdout, "evaluator")
    chosen = opd("disable_plugins=[vllm]", "sampler=vllm", "--cfg", "job")
    assert_one_sentence_error(chosen, "sampler")


HEAVY = ("torch", "transformers")
"""What ``--help`` and ``--cfg job`` need not import: every plugin loads, no model does."""


def test_help_and_cfg_job_import_no_torch() -> None:
    probe = (
        "import sys\n"
        "from opd_core.app import main\n"
        "sys.argv = ['opd-core', *sys.argv[1:]]\n"
        "try:\n"
        "    main()\n"
        "finally:\n"
        f"    print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    for args in (["--help"], ["--cfg", "job"], ["+task=math", "logger=[trackio]", "--cfg", "job"]):
        result = subprocess.run(
            [sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert "HEAVY []" in result.stdout, (args, result.stdout[-300:])


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
    assert_one_sentence_error(
        result, "Unknown task 'nosuchtask'. Available: arithmetic, calculator, chat"
    )


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


def test_every_component_of_the_example_package_runs(
    tiny_models: TinyModels, tmp_path: Path
) -> None:
    """Task, advantage, evaluator and logger from the package's configs, a wrapper hook from
    plugins=[...]: all in one run, each leaving its mark."""
    out = tmp_path / "run"
    overrides = [
        o.replace("+task=arithmetic", "+task=reverse_digits")
        for o in tiny_run_overrides(tiny_models, out, steps=2)
        if not o.startswith("task.")
    ]
    result = opd(
        *overrides,
        "eval.teacher=false",
        "objective=opd",  # importance sampling, which reads the advantages
        "advantage=clipped_reverse_kl",
        "advantage.clip=0.25",
        "evaluator=[task_accuracy,answer_format]",
        "evaluators.answer_format.max_examples=4",
        "logger=[csv]",
        "plugins=[opd_example_task.stage_times]",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["student_after"]["eval_examples"] == 50  # the task config's eval_size
    assert 0.0 <= summary["student_after"]["format_rate"] <= 1.0  # the evaluator
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(-0.25 <= s["advantage/min"] <= s["advantage/max"] <= 0.25 for s in steps)
    assert all("clipped_fraction" in s for s in steps)  # the advantage's own metric
    rows = (out / "metrics.csv").read_text().splitlines()  # the logger
    assert rows[0] == "step,metric,value"
    assert {row.split(",")[0] for row in rows[1:]} == {"1", "2"}
    assert any(row.startswith("2,loss,") for row in rows)
    times = json.loads((out / "stage_times.json").read_text())  # the wrapper
    assert {k: len(v) for k, v in times.items()} == {
        "opd_sample_rollouts": 2,
        "opd_score_rollouts": 2,
        "opd_compute_advantages": 2,
    }
