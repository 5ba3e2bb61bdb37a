"""What runs spent to reach a score, over seeds: the median over those that got there, or the
seed-mean curve interpolated at the target, with bootstrap intervals for ratios of costs."""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

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


def mean_curve_cost(curves: Sequence[Curve], target: float, measure: str) -> float | None:
    """Steps, FLOPs or seconds to ``target`` on the seed-mean curve (scores and costs averaged
    over ``curves`` at each evaluation), linearly interpolated between the last evaluation below
    the target and the first at or above it; None if the mean curve never gets there."""
    length = min(len(c.points) for c in curves)
    scores = [statistics.fmean(c.points[i].score for c in curves) for i in range(length)]
    costs = [statistics.fmean(cost(c.points[i], measure) for c in curves) for i in range(length)]
    for i, score in enumerate(scores):
        if score >= target:
            if i == 0:
                return costs[0]
            share = (target - scores[i - 1]) / (score - scores[i - 1])
            return costs[i - 1] + share * (costs[i] - costs[i - 1])
    return None


@dataclass(frozen=True)
class RatioEstimate:
    """``slower``'s cost to a target over ``faster``'s, on seed-mean curves, with a bootstrap
    95% interval over seeds (each side's seeds resampled with replacement)."""

    target: float
    slower_cost: float | None
    faster_cost: float | None
    ratio: float | None
    """None when either mean curve misses the target."""
    ci95: tuple[float, float] | None
    """None when fewer than 95% of the resamples reach the target on both sides."""
    reached_share: float
    """The share of resamples in which both sides reached the target."""


def interval95(values: Sequence[float]) -> tuple[float, float]:
    """The 2.5th and 97.5th percentiles of bootstrap ``values`` (nearest rank)."""
    ordered = sorted(values)
    last = len(ordered) - 1
    return ordered[round(0.025 * last)], ordered[round(0.975 * last)]


Side = Callable[[random.Random | None], float | None]
"""One side's cost to a target: on its own seeds (``None``), or on seeds resampled with the
generator given; None where that side does not get there."""


def bootstrap_ratio(
    target: float, slower: Side, faster: Side, draws: int = 2000, seed: int = 0
) -> RatioEstimate:
    """``slower``'s cost over ``faster``'s at ``target``, with a bootstrap 95% interval from
    ``draws`` resamples of both sides (see :class:`RatioEstimate`)."""
    a, b = slower(None), faster(None)
    rng = random.Random(seed)
    ratios = []
    for _ in range(draws):
        ra, rb = slower(rng), faster(rng)
        if ra is not None and rb:
            ratios.append(ra / rb)
    share = len(ratios) / draws
    ci = interval95(ratios) if share >= 0.95 else None
    return RatioEstimate(target, a, b, a / b if a is not None and b else None, ci, share)


def curves_side(curves: Sequence[Curve], target: float, measure: str) -> Side:
    """The :data:`Side` of a method's seed curves: its seed-mean curve's cost to ``target``."""

    def cost_of(rng: random.Random | None) -> float | None:
        chosen = curves if rng is None else rng.choices(curves, k=len(curves))
        return mean_curve_cost(chosen, target, measure)

    return cost_of


def ratio_to_target(
    slower: Sequence[Curve],
    faster: Sequence[Curve],
    target: float,
    measure: str = "flops",
    draws: int = 2000,
    seed: int = 0,
) -> RatioEstimate:
    """How many times ``faster``'s cost ``slower`` needs to reach ``target`` on seed-mean
    curves (see :class:`RatioEstimate`)."""
    return bootstrap_ratio(
        target,
        curves_side(slower, target, measure),
        curves_side(faster, target, measure),
        draws,
        seed,
    )
