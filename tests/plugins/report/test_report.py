"""The run report: the folder at start, the end table, and the learning-curve PNG."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from matplotlib.axes import Axes
from matplotlib.lines import Line2D
from omegaconf import DictConfig

import opd_report
import opd_report.plot
from conftest import TinyModels, tiny_run_overrides
from opd_core.app import run
from opd_core.plugin_manager import make_plugin_manager
from opd_report.panels import RATES, is_count, panels
from opd_report.plot import FILENAME, learning_curve_figure, plot_learning_curve
from opd_report.run_label import RunLabel
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


def test_the_table_names_the_best_checkpoint_and_an_early_stop() -> None:
    assert "best" not in summary_table(SUMMARY) and "stopped" not in summary_table(SUMMARY)
    summary = {
        **SUMMARY,
        "best_checkpoint": {
            "step": 300,
            "metric": "accuracy",
            "value": 0.7125,
            "mode": "max",
            "checkpoint": "outputs/x/checkpoints/step_000300",
        },
        "stopped_early": {"step": 450, "reason": "accuracy stayed below its best for 3 evals"},
    }
    lines = summary_table(summary).splitlines()
    assert lines[7].split() == [
        "best", "outputs/x/checkpoints/step_000300", "(accuracy", "0.7125", "at", "step", "300)"
    ]  # fmt: skip
    assert lines[8] == (
        "stopped     early after step 450: accuracy stayed below its best for 3 evals"
    )


def test_a_run_without_evaluators_says_so() -> None:
    assert "no evaluation" in summary_table({"steps": 2, "wall_time_s": 1.0})


def write_run(
    folder: Path,
    summary: dict[str, object],
    evals: list[float],
    config: str | None = None,
    extra: dict[str, float] | None = None,
) -> None:
    """A finished run folder: ``summary.json``, ``metrics.jsonl`` with ``eval/accuracy`` (and
    ``extra`` eval metrics) at steps 100, 200, ... and a last step without (the loop evaluates
    the last step into the summary), and ``config`` as ``.hydra/config.yaml``."""
    folder.mkdir()
    (folder / "summary.json").write_text(json.dumps(summary))
    lines = [
        {
            "step": 100 * (i + 1),
            "eval/accuracy": v,
            **{f"eval/{k}": x for k, x in (extra or {}).items()},
        }
        for i, v in enumerate(evals)
    ]
    lines.append({"step": 100 * (len(evals) + 1)})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    if config is not None:
        (folder / ".hydra").mkdir()
        (folder / ".hydra" / "config.yaml").write_text(config)


DEMO_SUMMARY = {
    "student_before": {"accuracy": 0.566, "eval_examples": 500.0},
    "student_after": {"accuracy": 0.9, "eval_examples": 500.0},
    "teacher": {"accuracy": 0.926, "eval_examples": 500.0},
    "steps": 600,
}
DEMO_CONFIG = """\
task: null
teacher: null
demo:
  task: {name: arithmetic, eval_size: 500}
  teacher: {name: hf, model: {path: demo://arithmetic/teacher}}
loss: {name: reverse_kl_topk, top_k: 20}
student: {model: {path: demo://arithmetic/student, dtype: float32}}
"""


def line(ax: Axes, label: str) -> Line2D:
    """The line of ``ax`` labelled ``label``."""
    return next(ln for ln in ax.get_lines() if ln.get_label() == label)


def test_the_accuracy_curve_spans_its_axis_and_the_title_says_what_ran(tmp_path: Path) -> None:
    # the demo's run: accuracy 0-1 and eval_examples 500 used to share one axis (a flat line)
    evals = [0.72, 0.77, 0.834, 0.898, 0.898]
    write_run(tmp_path / "run", DEMO_SUMMARY, evals, DEMO_CONFIG, {"eval_examples": 500.0})
    fig = learning_curve_figure(tmp_path / "run")
    assert fig is not None
    (ax,) = fig.axes  # counts are never drawn: no second panel for eval_examples
    labels = [ln.get_label() for ln in ax.get_lines()]
    assert labels == ["accuracy", "teacher accuracy"]
    accuracy = line(ax, "accuracy")
    assert list(accuracy.get_xdata()) == [0, 100, 200, 300, 400, 500, 600]
    assert list(accuracy.get_ydata()) == [0.566, *evals, 0.9]
    low, high = ax.get_ylim()
    assert -0.02 <= low <= 0.566 and 0.926 <= high <= 1.02
    assert (0.9 - 0.566) / (high - low) > 0.5  # the curve spans most of its axis
    teacher = line(ax, "teacher accuracy")
    assert teacher.get_linestyle() == "--" and list(teacher.get_ydata()) == [0.926, 0.926]
    assert teacher.get_color() == accuracy.get_color()
    title = fig.get_suptitle()
    assert title == "task arithmetic · loss reverse_kl_topk · student demo://arithmetic/student"


def test_metrics_of_another_scale_get_their_own_panel_and_counts_none(tmp_path: Path) -> None:
    summary = {
        "student_before": {"accuracy": 0.3, "perplexity": 40.0, "ifeval/prompts": 200.0},
        "student_after": {"accuracy": 0.6, "perplexity": 12.0, "ifeval/prompts": 200.0},
    }
    extra = {"perplexity": 20.0, "ifeval/prompts": 200.0}
    write_run(tmp_path / "run", summary, [0.5], extra=extra)
    fig = learning_curve_figure(tmp_path / "run", RunLabel("chat", "forward_kl", "/m/student"))
    assert fig is not None
    rates, perplexity = fig.axes
    assert [ln.get_label() for ln in rates.get_lines()] == ["accuracy"]
    assert rates.get_ylim()[1] <= 1.02
    assert list(line(perplexity, "perplexity").get_ydata()) == [40.0, 20.0, 12.0]
    assert fig.get_suptitle() == "task chat · loss forward_kl · student /m/student"


def test_counts_and_rates_are_told_apart_by_name_and_by_value() -> None:
    for name in ("eval_examples", "qa_examples", "ifeval/examples", "eval_problems", "n_tokens"):
        assert is_count(name, [0.5]), name
    assert is_count("ifeval/prompts", [200.0, 200.0])  # the same whole number throughout
    assert not is_count("accuracy", [0.5, 0.7]) and not is_count("perplexity", [40.0, 12.0])
    layout = panels(
        {"pass@16": [0.2, 0.4], "eval_examples": [500.0], "lm_eval/gsm8k/acc_stderr": [0.01]}
    )
    assert layout == {RATES: ["pass@16"]}


def test_a_long_student_path_is_shortened_and_a_run_without_config_is_titled_by_its_folder(
    tmp_path: Path,
) -> None:
    label = RunLabel(
        "math", "reverse_kl_topk", "/very/long/path/to/outputs/run/checkpoints/step_000600/model"
    )
    assert label.title().endswith("student .../step_000600/model")
    write_run(tmp_path / "02-25-06", {**SUMMARY}, [0.4, 0.5])
    fig = learning_curve_figure(tmp_path / "02-25-06")
    assert fig is not None and fig.get_suptitle() == "02-25-06"


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
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "run"
    labels: list[RunLabel | None] = []
    drawn = opd_report.plot.plot_learning_curve

    def plot_and_keep_label(run_dir: Path, label: RunLabel | None = None) -> Path | None:
        labels.append(label)
        return drawn(run_dir, label)

    monkeypatch.setattr(opd_report.plot, "plot_learning_curve", plot_and_keep_label)
    pm = make_plugin_manager()
    if not pm.is_registered(opd_report):  # an install older than the report entry point
        pm.register(opd_report, name="report")
    with caplog.at_level(logging.INFO, logger="opd_core.report"):
        run(compose_config(tiny_run_overrides(tiny_models, out, steps=2)), out, pm=pm)
    messages = [r.getMessage() for r in caplog.records if r.name == "opd_core.report"]
    assert messages[0] == f"run folder: {out}"
    assert "after-teacher" in messages[1] and "checkpoint  " in messages[1]
    assert (out / FILENAME).is_file()
    assert labels == [RunLabel("arithmetic", "reverse_kl_topk", str(tiny_models.student))]
