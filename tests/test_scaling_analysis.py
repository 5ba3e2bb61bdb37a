"""The analysis of benchmarks/scaling.py on hand-made runs: the log-linear fit, the cheapest
fixed SFT set to a target (with and without the teacher's generation), and the ratio to OPD."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import scaling
from bench_common.report import sft_over_opd_cell

from opd_report.curves import Curve, CurvePoint


def sft_run(heldout: list[float], flops_per_check: float) -> dict[str, object]:
    """A continued-SFT answer: checks every ``flops_per_check`` FLOPs, validation = held-out."""
    checks = [
        {"step": 10 * i, "validation": h, "heldout": h, "flops": i * flops_per_check}
        for i, h in enumerate(heldout)
    ]
    return {"checks": checks}


def opd_curve(scores: list[float], flops_per_eval: float) -> Curve:
    points = tuple(
        CurvePoint(step=i, score=s, student_flops=i * flops_per_eval, teacher_flops=0.0)
        for i, s in enumerate(scores)
    )
    return Curve("opd", points, None)


def test_the_fit_recovers_a_log_linear_curve() -> None:
    a, b = scaling.log_fit([(1000, 0.50), (10_000, 0.56), (100_000, 0.62)])
    assert (a, b) == pytest.approx((0.32, 0.06))


def test_the_best_held_out_is_at_the_last_best_validation_check() -> None:
    run = {"checks": [{"step": 0, "validation": 0.5, "heldout": 0.4},
                      {"step": 10, "validation": 0.6, "heldout": 0.55},
                      {"step": 20, "validation": 0.6, "heldout": 0.57},
                      {"step": 30, "validation": 0.55, "heldout": 0.7}]}  # fmt: skip
    assert scaling.best_heldout(run) == 0.57  # the weights saved last at the best validation


def test_sft_takes_the_cheapest_set_that_gets_there_generation_included_or_not() -> None:
    # set 8k: reaches 0.6 after 20 FLOPs of training; set 16k: after 10 (but it cost more
    # teacher generation: 100 against 10 for the 8k set's extra examples)
    continued = {8000: [sft_run([0.5, 0.55, 0.6], 10.0)], 16000: [sft_run([0.5, 0.6], 10.0)]}
    extra = {8000: 10.0, 16000: 100.0}
    assert scaling.sft_cost(continued, 0.6, extra, with_generation=False) == 10.0
    assert scaling.sft_cost(continued, 0.6, extra, with_generation=True) == 30.0
    assert scaling.sft_cost(continued, 0.7, extra, with_generation=True) is None


def test_the_ratio_to_opd_and_its_interval() -> None:
    continued = {8000: [sft_run([0.5, 0.55, 0.6], 10.0)] * 3}
    opd = [opd_curve([0.5, 0.6], 5.0)] * 3  # 0.6 at 5 FLOPs
    r = scaling.ratio_with_ci(opd, continued, 0.6, {8000: 10.0}, with_generation=True, draws=50)
    assert (r["opd_flops"], r["sft_flops"], r["sft_over_opd"]) == pytest.approx((5.0, 30.0, 6.0))
    assert r["ci95"] == pytest.approx((6.0, 6.0))
    assert sft_over_opd_cell(r) == "6.00x (6.00-6.00)"
    at_start = scaling.ratio_with_ci(opd, continued, 0.5, {8000: 10.0}, True, draws=10)
    assert sft_over_opd_cell(at_start) == "the start is already there"
