"""The run report: the folder at start, the end table, and the learning-curve PNG."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

import opd_report
from conftest import TinyModels, tiny_run_overrides
from opd_core.app import run
from opd_core.plugin_manager import make_plugin_manager
from opd_report.plot import FILENAME, plot_learning_curve
from opd_report.table import summary_table

SUMMARY = {
    "student_before": {"accuracy": 0.36, "format": 0.5},
    "student_after": {"accuracy": 0.61, "format": 0.75},
    "teacher": {"accuracy": 0.93},
    "steps": 600,
    "flops": {"flops/student": 1.25e15, "flops/teacher": 3.5e14},
    "checkpoint": "outputs/x/checkpoints/step_000600",
    "wall_time_s": 283.4,
}


def test_the_table_shows_scores_deltas_time_flops_and_checkpoint() -> None:
    lines = summary_table(SUMMARY).splitlines()
    assert lines[0].split() == [
        "metric",
        "before",
        "after",
        "teacher",
        "after-before",
        "after-teacher",
    ]
    assert lines[1].split() == ["accuracy", "0.36", "0.61", "0.93", "+0.25", "-0.32"]
    assert lines[2].split() == ["format", "0.5", "0.75", "-", "+0.25", "-"]
    assert "4 min 43 s" in lines[4]
    assert "student 1.25e+15, teacher 3.5e+14" in lines[5]
    assert lines[6].endswith("outputs/x/checkpoints/step_000600")


def test_a_run_without_evaluators_says_so() -> None:
    assert "no evaluation" in summary_table({"steps": 2, "wall_time_s": 1.0})


def write_run(folder: Path, summary: dict[str, object], evals: list[float]) -> None:
    folder.mkdir()
    (folder / "summary.json").write_text(json.dumps(summary))
    lines = [{"step": 100 * (i + 1), "eval/accuracy": v} for i, v in enumerate(evals)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))


def test_the_learning_curve_is_a_png_of_every_eval_metric(tmp_path: Path) -> None:
    write_run(tmp_path / "run", {**SUMMARY}, [0.4, 0.5])
    path = plot_learning_curve(tmp_path / "run")
    assert path == tmp_path / "run" / FILENAME
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from matplotlib.image import imread

    assert imread(path).shape[:2] == (450, 700)


def test_no_evaluator_means_no_curve(tmp_path: Path) -> None:
    write_run(tmp_path / "run", {"steps": 2}, [])
    assert plot_learning_curve(tmp_path / "run") is None
    assert not (tmp_path / "run" / FILENAME).exists()


def test_a_run_reports_its_folder_and_ends_with_the_table(
    tiny_models: TinyModels,
    compose_config: Callable[[list[str]], DictConfig],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    out = tmp_path / "run"
    pm = make_plugin_manager()
    if not pm.is_registered(opd_report):  # an install older than the report entry point
        pm.register(opd_report, name="report")
    with caplog.at_level(logging.INFO, logger="opd_core.report"):
        run(compose_config(tiny_run_overrides(tiny_models, out, steps=2)), out, pm=pm)
    messages = [r.getMessage() for r in caplog.records if r.name == "opd_core.report"]
    assert messages[0] == f"run folder: {out}"
    assert "after-teacher" in messages[1] and "checkpoint  " in messages[1]
    assert (out / FILENAME).is_file()
