"""Time the embedded demo end to end from an empty cache and record what it reached.

    python benchmarks/demo.py            # ~7 min on 2 quiet CPU cores

Runs ``python -m opd_core`` exactly as a new user would (no arguments), with ``OPD_CORE_CACHE``
pointing at a fresh temporary folder so the tokenizer, teacher and student are built too. The
README's demo numbers come from here: ``docs/results/demo.{md,json}`` and the run's learning
curve as ``docs/results/demo.png``. Time it on a quiet machine (``uptime`` first): a figure
measured under load is not a figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from bench_common.paths import ResultFiles
from bench_common.report import load_text, markdown_table, produced_by, targets_line, write_report
from bench_common.runs import command_line, load_average, run_cli, warn_if_busy

from opd_report.curves import load_curve

RESULTS = ResultFiles.of(__file__)
TARGETS = {
    "minutes": 10.0,
    "points_below_teacher": 5.0,
    "points_gained": 25.0,
}


def build_info(cache: Path) -> dict[str, Any]:
    """The demo build's record (sizes, SFT steps and seconds, the student's validation level)."""
    found = sorted(cache.glob("demo_arithmetic/*/build_info.json"))
    return json.loads(found[0].read_text()) if found else {}


def report(
    out: Path, seconds: float, load: tuple[float, float], info: dict[str, Any], command: str
) -> None:
    """Write the demo's Markdown and JSON, and copy its learning curve."""
    summary = json.loads((out / "summary.json").read_text())
    curve = load_curve(out)
    teacher = summary["teacher"]["accuracy"]
    before, after = summary["student_before"]["accuracy"], summary["student_after"]["accuracy"]
    record = {
        "command": command,
        "wall_s": round(seconds, 1),
        "load_average_before_after": load,
        "threads": os.environ.get("OMP_NUM_THREADS", "all"),
        "teacher": teacher,
        "student_before": before,
        "student_after": after,
        "curve": [{"step": p.step, "accuracy": p.score} for p in curve.points],
        "opd_steps": summary["steps"],
        "opd_wall_s": summary.get("wall_time_s"),
        "build": {name: info.get(name, {}) for name in ("teacher", "student")},
        "targets": TARGETS,
        "met": {
            "minutes": seconds / 60 <= TARGETS["minutes"],
            "points_below_teacher": (teacher - after) * 100 <= TARGETS["points_below_teacher"],
            "points_gained": (after - before) * 100 >= TARGETS["points_gained"],
        },
    }
    student = info.get("student", {})
    lines = [
        "# The demo, end to end from an empty cache",
        "",
        produced_by(
            command,
            "`python -m opd_core` with a fresh `OPD_CORE_CACHE`",
            "2 CPU cores",
            load_text(load),
        )
        + ".",
        "",
        *markdown_table(
            " | value | target",
            [
                f"wall time, build included | {seconds / 60:.1f} min "
                f"| <= {TARGETS['minutes']:.0f} min",
                f"teacher (500 held-out problems, greedy) | {teacher:.1%} | ",
                f"student before OPD | {before:.1%} | ",
                f"student after {summary['steps']} OPD steps | {after:.1%} | >= teacher - "
                f"{TARGETS['points_below_teacher']:.0f} points and >= start + "
                f"{TARGETS['points_gained']:.0f} points",
                "student SFT steps to its start level | "
                f"{student.get('steps', float('nan')):.0f} "
                f"(validation {student.get('validation_accuracy', float('nan')):.1%}) | ",
            ],
        ),
        "",
        "Learning curve (step: held-out accuracy): "
        + ", ".join(f"{p.step}: {p.score:.1%}" for p in curve.points),
        "",
        targets_line(record["met"], "Targets met"),
        "",
        RESULTS.image("learning curve"),
        "",
    ]
    write_report(RESULTS, lines, record)
    if (out / "learning_curve.png").exists():
        shutil.copy(out / "learning_curve.png", RESULTS.png())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("overrides", nargs="*", help="extra config overrides (none: the demo)")
    args = parser.parse_args()
    load_before = warn_if_busy("demo")
    with tempfile.TemporaryDirectory(prefix="opd_demo_") as tmp:
        out, cache = Path(tmp) / "run", Path(tmp) / "cache"
        cache_env = {"OPD_CORE_CACHE": str(cache)}
        _, seconds = run_cli(args.overrides, out, "demo", threads=None, env=cache_env, check=True)
        command = command_line(__file__, *args.overrides)
        report(out, seconds, (load_before, load_average()), build_info(cache), command)


if __name__ == "__main__":
    main()
