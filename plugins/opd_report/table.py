"""The end-of-run table: every eval metric before and after training and for the teacher."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ROLES = (("student_before", "before"), ("student_after", "after"), ("teacher", "teacher"))


def summary_table(summary: Mapping[str, Any]) -> str:
    """``summary.json`` as aligned text: one row per eval metric, then time, FLOPs, checkpoint,
    and the best checkpoint and an early stop where the run had them."""
    scores = {key: dict(summary.get(key) or {}) for key, _ in ROLES}
    metrics = sorted({m for values in scores.values() for m in values})
    header = ["metric", *(label for _, label in ROLES), "after-before", "after-teacher"]
    rows = [header]
    for metric in metrics:
        before, after, teacher = (scores[key].get(metric) for key, _ in ROLES)
        rows.append(
            [
                metric,
                _number(before),
                _number(after),
                _number(teacher),
                _delta(after, before),
                _delta(after, teacher),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.rjust(w) if i else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
    if len(rows) == 1:
        lines = ["(no evaluation: the run had no evaluator)"]
    flops = summary.get("flops") or {}
    lines += [
        f"steps       {summary.get('steps', '?')}",
        f"wall time   {_seconds(summary.get('wall_time_s'))}",
        f"FLOPs       student {_flops(flops.get('flops/student'))}, "
        f"teacher {_flops(flops.get('flops/teacher'))}",
        f"checkpoint  {summary.get('checkpoint', '(none)')}",
    ]
    best = summary.get("best_checkpoint")
    if best:
        lines.append(
            f"best        {best['checkpoint']} ({best['metric']} {_number(best['value'])} at "
            f"step {best['step']})"
        )
    stopped = summary.get("stopped_early")
    if stopped:
        lines.append(f"stopped     early after step {stopped['step']}: {stopped['reason']}")
    return "\n".join(lines)


def _number(value: Any) -> str:
    return "-" if value is None else f"{float(value):.4g}"


def _delta(a: Any, b: Any) -> str:
    return "-" if a is None or b is None else f"{float(a) - float(b):+.4g}"


def _seconds(value: Any) -> str:
    if value is None:
        return "?"
    minutes, seconds = divmod(float(value), 60)
    return f"{int(minutes)} min {seconds:.0f} s" if minutes else f"{seconds:.1f} s"


def _flops(value: Any) -> str:
    return "?" if value is None else f"{float(value):.3g}"
