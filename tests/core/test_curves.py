"""Learning curves read back from run folders: scores at eval steps with the FLOPs spent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from opd_core import OPDError
from opd_report.curves import first_reaching, load_curve


def write_run(run_dir: Path, summary: dict[str, object], records: list[dict[str, float]]) -> None:
    run_dir.mkdir()
    (run_dir / "summary.json").write_text(json.dumps(summary))
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_curve_joins_start_evals_and_final_score_with_cumulative_flops(tmp_path: Path) -> None:
    records = [
        {"step": s, "flops/student": 10.0 * s, "flops/teacher": 1.0 * s} for s in range(1, 5)
    ]
    records[1]["eval/accuracy"] = 0.4  # step 2
    write_run(
        tmp_path / "run",
        {
            "student_before": {"accuracy": 0.1},
            "student_after": {"accuracy": 0.7},
            "teacher": {"accuracy": 0.9},
        },
        records,
    )
    curve = load_curve(tmp_path / "run")
    assert [(p.step, p.score, p.total_flops) for p in curve.points] == [
        (0, 0.1, 0.0),
        (2, 0.4, 22.0),
        (4, 0.7, 44.0),
    ]
    assert curve.teacher_score == 0.9 and curve.best_score == 0.7
    reached = first_reaching(curve, 0.35)
    assert reached is not None and reached.step == 2
    assert first_reaching(curve, 0.8) is None


def test_unfinished_run_or_unknown_metric_is_named(tmp_path: Path) -> None:
    (tmp_path / "half").mkdir()
    with pytest.raises(OPDError, match=r"no summary\.json"):
        load_curve(tmp_path / "half")
    write_run(tmp_path / "run", {"student_after": {"accuracy": 0.5}}, [{"step": 1}])
    with pytest.raises(OPDError, match=r"no student_after\.reward; choose one of accuracy"):
        load_curve(tmp_path / "run", metric="reward")


def test_curve_points_carry_the_training_seconds_so_far(tmp_path: Path) -> None:
    records = [
        {"step": s, "time/sample_s": 1.0, "time/update_s": 0.5, "time/eval_note": 9.0}
        for s in range(1, 4)
    ]
    records[0]["eval/accuracy"] = 0.3
    write_run(
        tmp_path / "run",
        {"student_before": {"accuracy": 0.1}, "student_after": {"accuracy": 0.5}},
        records,
    )
    curve = load_curve(tmp_path / "run")
    assert [p.train_seconds for p in curve.points] == [0.0, 1.5, 4.5]


def test_a_step_that_logs_its_whole_time_is_not_counted_twice(tmp_path: Path) -> None:
    records = [
        {"step": s, "time/sample_s": 1.0, "time/update_s": 0.5, "time/step_s": 1.75}
        for s in range(1, 3)
    ]
    write_run(
        tmp_path / "run",
        {"student_before": {"accuracy": 0.1}, "student_after": {"accuracy": 0.5}},
        records,
    )
    assert [p.train_seconds for p in load_curve(tmp_path / "run").points] == [0.0, 3.5]
