"""``learning_curve.png``: the run's eval scores against steps, rates on one panel (0-1), other
metrics on panels of their own scale, counts left out (:mod:`opd_report.panels`), the teacher's
score dashed, and a title naming the task, objective and student (:mod:`opd_report.run_label`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from opd_report.curves import Curve, load_curve
from opd_report.panels import RATES, panels
from opd_report.run_label import RunLabel

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

log = logging.getLogger("opd_core.report")

FILENAME = "learning_curve.png"
PANEL_SIZE = (7.0, 4.5)
"""Inches of a one-panel figure; each further panel adds 4.5 inches of width."""


def plot_learning_curve(run_dir: Path, label: RunLabel | None = None) -> Path | None:
    """Draw the run in ``run_dir`` into ``run_dir/learning_curve.png`` (titled with ``label``,
    else what ``.hydra/config.yaml`` says); ``None`` (and one log line) when there is nothing to
    draw or matplotlib is missing."""
    fig = learning_curve_figure(run_dir, label)
    if fig is None:
        return None
    path = run_dir / FILENAME
    fig.savefig(path, dpi=100)
    return path


def learning_curve_figure(run_dir: Path, label: RunLabel | None = None) -> Figure | None:
    """The learning curve of the finished run in ``run_dir`` as a matplotlib figure."""
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    metrics = sorted(summary.get("student_after") or {})
    if not metrics:
        log.info("no learning curve: the run had no evaluator")
        return None
    try:
        from matplotlib.figure import Figure
    except ImportError:
        log.info("no learning curve: matplotlib is not installed (pip install matplotlib)")
        return None
    curves = {metric: load_curve(run_dir, metric) for metric in metrics}
    layout = panels({metric: scores(curve) for metric, curve in curves.items()})
    if not layout:
        log.info("no learning curve: the run's eval metrics are all counts")
        return None
    width, height = PANEL_SIZE
    fig = Figure(figsize=(width + 4.5 * (len(layout) - 1), height), layout="constrained")
    colors = {metric: f"C{index % 10}" for index, metric in enumerate(metrics)}
    axes = fig.subplots(1, len(layout), squeeze=False)[0]
    for ax, (title, names) in zip(axes, layout.items(), strict=True):
        for metric in names:
            draw(ax, curves[metric], metric, colors[metric])
        ax.set_xlabel("step")
        ax.set_ylabel("rate" if title == RATES else title)
        ax.set_title(title, fontsize=9)
        if title == RATES:
            low, high = ax.get_ylim()
            ax.set_ylim(max(low, -0.02), min(high, 1.02))
        ax.legend(fontsize=7)
    label = label or RunLabel.read(run_dir)
    fig.suptitle(label.title() if label else run_dir.name, fontsize=10)
    return fig


def scores(curve: Curve) -> list[float]:
    """Every value a metric took in the run, the teacher's included."""
    values = [p.score for p in curve.points]
    return values if curve.teacher_score is None else [*values, curve.teacher_score]


def draw(ax: Axes, curve: Curve, metric: str, color: str) -> None:
    """The student's ``metric`` against steps, and the teacher's score dashed in its colour."""
    steps = [p.step for p in curve.points]
    ax.plot(steps, [p.score for p in curve.points], marker="o", ms=3, color=color, label=metric)
    if curve.teacher_score is not None:
        ax.axhline(curve.teacher_score, color=color, ls="--", lw=1, label=f"teacher {metric}")
