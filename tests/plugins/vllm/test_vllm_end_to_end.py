"""A whole run with sampler=vllm and teacher=vllm, as a user starts it (a real process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TinyModels, tiny_run_overrides
from opd_core.metrics import read_metrics
from vllm_helpers import ENGINE, require_vllm, vllm_models

require_vllm()

ROOT = Path(__file__).resolve().parents[3]


def engine_overrides(group: str) -> list[str]:
    options = {**ENGINE, "enforce_eager": "true"}
    return [f"{group}.engine.{key}={value}" for key, value in options.items()]


@pytest.mark.slow
def test_opd_run_with_vllm_sampler_and_teacher(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    models: TinyModels = vllm_models(tmp_path_factory)
    out = tmp_path / "run"
    overrides = [
        "+teacher=vllm" if o == "+teacher=hf" else o
        for o in tiny_run_overrides(models, out, steps=3)
    ]
    command = [
        sys.executable,
        "-m",
        "opd_core",
        *overrides,
        "sampler=vllm",
        "teacher.model.dtype=float32",
        "sampler.dtype=float32",
        *engine_overrides("sampler"),
        *engine_overrides("teacher"),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=420)
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 3
    for entry in ("student_before", "student_after", "teacher"):
        assert "accuracy" in summary[entry], entry
    assert summary["flops"]["flops/teacher"] > 0  # teacher=vllm answers opd_model_shape
    metrics = read_metrics(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2, 3]
    for record in metrics:
        assert record["tokens"] > 0
        assert record["teacher_reverse_kl"] == record["teacher_reverse_kl"]  # not NaN
    # the engine got the student's weights for the first evaluation, then after each update
    # (before steps 2 and 3 and the final evaluation); step 1 found them unchanged
    syncs = [line for line in (out / "app.log").read_text().splitlines() if "weight sync" in line]
    assert len(syncs) == 4, result.stderr[-3000:]


@pytest.mark.slow
def test_overlap_with_the_vllm_sampler_samples_ahead(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """train.overlap with sampler=vllm and an HF teacher: steps 2 and 3 were sampled ahead."""
    models: TinyModels = vllm_models(tmp_path_factory)
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "opd_core",
        *tiny_run_overrides(models, out, steps=3),
        "eval.teacher=false",
        "sampler=vllm",
        "sampler.dtype=float32",
        "train.overlap=true",
        *engine_overrides("sampler"),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=420)
    assert result.returncode == 0, result.stderr[-4000:]
    metrics = read_metrics(out / "metrics.jsonl")
    assert [m["overlap/stale_steps"] for m in metrics] == [0, 1, 1]
    assert all(m["tokens"] > 0 and m["overlap/sample_s"] > 0 for m in metrics[1:])
