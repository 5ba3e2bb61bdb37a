"""What runs spent to reach a score, over seeds: the median over those that got there."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from opd_report.curves import Curve, CurvePoint, first_reaching

MEASURES = ("steps", "flops", "seconds")


def median_or_none(values: Sequence[float | None], runs: int) -> float | None:
    """The median over the runs that reached the target, None unless a majority did."""
    reached = [v for v in values if v is not None]
    return statistics.median(reached) if len(reached) * 2 > runs else None


def cost_to(curves: Sequence[Curve], target: float, measure: str) -> float | None:
    """Median steps, FLOPs or training seconds (``measure``, one of :data:`MEASURES`) to
    ``target`` over the seeds that reached it (None unless most did)."""
    points = [first_reaching(c, target) for c in curves]
    return median_or_none([None if p is None else cost(p, measure) for p in points], len(curves))


def cost(point: CurvePoint, measure: str) -> float:
    """What the run had spent at ``point``: its ``steps``, ``flops`` (teacher + student) or
    training ``seconds``."""
    if measure == "steps":
        return point.step
    if measure == "flops":
        return point.total_flops
    if measure == "seconds":
        return point.train_seconds
    raise ValueError(f"unknown measure {measure!r}; use one of {', '.join(MEASURES)}")
