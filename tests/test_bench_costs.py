"""Costs to a target on seed-mean curves and their bootstrap intervals (the helpers the
science benchmarks report ratios with), against hand-computed values."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from bench_common.costs import mean_curve_cost, ratio_to_target

from opd_report.curves import Curve, CurvePoint


def curve(scores: list[float], flops_per_eval: float = 10.0) -> Curve:
    """Evaluations every ``flops_per_eval`` FLOPs (student only), step = index."""
    points = tuple(
        CurvePoint(step=i, score=s, student_flops=i * flops_per_eval, teacher_flops=0.0)
        for i, s in enumerate(scores)
    )
    return Curve("run", points, teacher_score=1.0)


def test_the_mean_curve_is_interpolated_at_its_first_crossing() -> None:
    # mean scores 0.1, 0.3, 0.6, 0.5: 0.45 is crossed between FLOPs 10 and 20, halfway
    curves = [curve([0.0, 0.2, 0.6, 0.5]), curve([0.2, 0.4, 0.6, 0.5])]
    assert mean_curve_cost(curves, 0.45, "flops") == pytest.approx(15.0)
    assert mean_curve_cost(curves, 0.3, "steps") == pytest.approx(1.0)
    assert mean_curve_cost(curves, 0.05, "flops") == 0.0  # already there at the start
    assert mean_curve_cost(curves, 0.7, "flops") is None  # the mean never gets there


def test_a_ratio_of_identical_seeds_has_a_point_interval() -> None:
    slow = [curve([0.0, 0.5, 1.0], flops_per_eval=30.0)] * 3
    fast = [curve([0.0, 0.5, 1.0], flops_per_eval=10.0)] * 3
    r = ratio_to_target(slow, fast, 0.75)
    assert (r.slower_cost, r.faster_cost, r.ratio) == pytest.approx((45.0, 15.0, 3.0))
    assert r.ci95 == pytest.approx((3.0, 3.0)) and r.reached_share == 1.0


def test_the_interval_widens_with_the_seeds_spread_and_goes_when_resamples_miss() -> None:
    fast = [curve([0.0, 1.0]), curve([0.0, 0.6]), curve([0.0, 0.8])]
    slow = [curve([0.0, 0.5, 1.0]), curve([0.0, 0.4, 0.9]), curve([0.0, 0.6, 1.0])]
    r = ratio_to_target(slow, fast, 0.5)
    assert r.ci95 is not None and r.ci95[0] < r.ratio < r.ci95[1]  # type: ignore[operator]
    # the fast side's mean final is 0.8: at 0.75 it reaches, but resamples such as (0.6, 0.6,
    # 0.8) miss (10 of the 27 orderings): a ratio without an interval
    r = ratio_to_target(slow, fast, 0.75)
    assert r.ratio is not None and r.ci95 is None and r.reached_share < 0.95
