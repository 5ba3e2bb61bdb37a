"""``learning_curve.png``: the run's eval metrics against steps, the teacher's as dashed lines."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from opd_report.curves import load_curve

log = logging.getLogger("opd_core.report")

FILENAME = "learning_curve.png"


def plot_learning_curve(run_dir: Path) -> Path | None:
    """Draw every metric of ``summary.json``'s ``student_after`` into ``run_dir``; ``None`` (and
    one log line) when the run evaluated nothing or matplotlib is missing."""
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    metrics = sorted(summary.get("student_after") or {})
    if not metrics:
        log.info("no learning curve: the run had no evaluator")
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.info("no learning curve: matplotlib is not installed (pip install matplotlib)")
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for index, metric in enumerate(metrics):
        curve = load_curve(run_dir, metric)
        color = f"C{index % 10}"
        steps = [p.step for p in curve.points]
        ax.plot(steps, [p.score for p in curve.points], marker="o", ms=3, color=color, label=metric)
        if curve.teacher_score is not None:
            ax.axhline(curve.teacher_score, color=color, ls="--", lw=1, label=f"teacher {metric}")
    ax.set_xlabel("step")
    ax.set_ylabel("eval score")
    ax.set_title(run_dir.name)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = run_dir / FILENAME
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
