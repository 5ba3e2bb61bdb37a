"""Learning curves read back from run folders: evaluation score against steps and FLOPs.

A run's folder holds everything: ``summary.json`` (the score before and after training, FLOPs
totals) and ``metrics.jsonl`` (``eval/<metric>`` every ``eval.every`` steps, cumulative FLOPs
every step). :func:`load_curve` joins them; :func:`first_reaching` answers "how many steps, how
much compute, until the student reached this score?", the question the seed's comparison asks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opd_core.api import OPDError, read_metrics


@dataclass(frozen=True)
class CurvePoint:
    """The student's score after ``step`` optimizer steps, and the FLOPs spent until then."""

    step: int
    score: float
    student_flops: float
    teacher_flops: float
    train_seconds: float = 0.0
    """Seconds the training steps took until then (the sum of every step's stage times:
    sampling, grading, scoring, update; evaluations excluded)."""

    @property
    def total_flops(self) -> float:
        return self.student_flops + self.teacher_flops


@dataclass(frozen=True)
class Curve:
    """A run's evaluation scores in step order (step 0: before training)."""

    name: str
    points: tuple[CurvePoint, ...]
    teacher_score: float | None
    """The teacher's score on the same evaluation, when the run measured it."""

    @property
    def final(self) -> CurvePoint:
        return self.points[-1]

    @property
    def best_score(self) -> float:
        return max(p.score for p in self.points)


def load_curve(run_dir: Path, metric: str = "accuracy", name: str | None = None) -> Curve:
    """The ``metric`` curve of the finished run in ``run_dir``."""
    summary_path = run_dir / "summary.json"
    if not summary_path.exists():
        raise OPDError(f"{run_dir} has no summary.json: the run did not finish; rerun it.")
    summary = json.loads(summary_path.read_text())
    records = read_metrics(run_dir / "metrics.jsonl")
    points = []
    before = summary.get("student_before", {})
    if metric in before:
        points.append(CurvePoint(0, float(before[metric]), 0.0, 0.0))
    seconds = 0.0
    for record in records:
        seconds += step_seconds(record)
        if f"eval/{metric}" in record:
            points.append(_point(record, float(record[f"eval/{metric}"]), seconds))
    after = summary.get("student_after", {})
    if metric not in after:
        raise OPDError(
            f"{summary_path} has no student_after.{metric}; choose one of "
            f"{', '.join(sorted(after)) or '(none: the run had no evaluator)'}."
        )
    last: dict[str, Any] = records[-1] if records else {"step": 0.0}
    points.append(_point(last, float(after[metric]), seconds))
    teacher = summary.get("teacher", {}).get(metric)
    return Curve(
        name=name or run_dir.name,
        points=tuple(points),
        teacher_score=float(teacher) if teacher is not None else None,
    )


def step_seconds(record: dict[str, Any]) -> float:
    """Seconds a step took: its ``time/step_s`` where the run logged one (the whole step), else
    the sum of its stages' ``time/<stage>_s`` (runs from before ``time/step_s`` existed)."""
    if "time/step_s" in record:
        return float(record["time/step_s"])
    return sum(v for k, v in record.items() if k.startswith("time/") and k.endswith("_s"))


def _point(record: dict[str, Any], score: float, train_seconds: float) -> CurvePoint:
    return CurvePoint(
        step=int(record["step"]),
        score=score,
        student_flops=float(record.get("flops/student", 0.0)),
        teacher_flops=float(record.get("flops/teacher", 0.0)),
        train_seconds=train_seconds,
    )


def first_reaching(curve: Curve, target: float) -> CurvePoint | None:
    """The first evaluation at which the score is at least ``target``; ``None`` if never."""
    return next((p for p in curve.points if p.score >= target), None)
