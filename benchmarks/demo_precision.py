"""The demo in fp32 and in bf16, several seeds each: accuracy and training time side by side.

    python benchmarks/demo_precision.py            # ~30 min on 2 quiet CPU cores
    python benchmarks/demo_precision.py --quick    # 20 steps, 1 seed (checks the script)

Runs ``python -m opd_core seed=<s> train.precision=<p>`` (the demo, cached models) for each
seed in both precisions, one run at a time with every thread, the order of the two precisions
alternating from seed to seed so that a drift in the machine's speed falls on both. Each pair of
runs with one seed gives one fp32/bf16 ratio of training seconds (the steps' own time,
evaluations excluded). Issue 23's targets: the demo's training under 3 minutes, and bf16's
accuracy held (its mean not below fp32's lowest seed). Results:
``docs/results/demo_precision.{md,json,png}`` (``--quick`` writes under ``outputs/`` instead).
Time it on a quiet machine (``uptime`` first): a figure measured under load is not a figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench_common.paths import OUTPUTS, ResultFiles
from bench_common.plots import Series, figure, plot_curves
from bench_common.report import load_text, markdown_table, produced_by, targets_line, write_report
from bench_common.runs import command_line, load_average, run_cli, warn_if_busy
from bench_common.timing import fresh_dir

from opd_core.api import read_metrics
from opd_report.curves import load_curve

RESULTS = ResultFiles.of(__file__)
PRECISIONS = ("fp32", "bf16")
STAGES = ("sample", "grade", "score", "update")
TARGETS = {"training_minutes": 3.0}
QUICK_OVERRIDES = ("train.steps=20", "eval.every=10", "train.warmup_steps=2")


def run_record(run: Path, wall_s: float) -> dict[str, Any]:
    """One finished run: its accuracies, curve, training seconds and their split by stage."""
    summary = json.loads((run / "summary.json").read_text())
    curve = load_curve(run)
    records = read_metrics(run / "metrics.jsonl")
    stages = {
        stage: round(sum(float(r.get(f"time/{stage}_s", 0.0)) for r in records), 1)
        for stage in STAGES
    }
    return {
        "wall_s": round(wall_s, 1),
        "train_s": round(curve.final.train_seconds, 1),
        "stage_s": stages,
        "teacher": summary["teacher"]["accuracy"],
        "student_before": summary["student_before"]["accuracy"],
        "student_after": summary["student_after"]["accuracy"],
        "curve": [{"step": p.step, "accuracy": p.score} for p in curve.points],
    }


def spread(values: Sequence[float], fmt: str) -> str:
    """``mean (min-max)`` of ``values`` in ``fmt``; one value alone."""
    if len(values) == 1:
        return format(values[0], fmt)
    mean = statistics.fmean(values)
    return f"{mean:{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def summarise(runs: dict[str, dict[int, dict[str, Any]]]) -> dict[str, Any]:
    """Per precision: seeds, final accuracy and training seconds (mean and range), stage means;
    the per-seed fp32/bf16 time ratios and the accuracy difference."""
    out: dict[str, Any] = {}
    for precision, by_seed in runs.items():
        finals = [r["student_after"] for r in by_seed.values()]
        train = [r["train_s"] for r in by_seed.values()]
        out[precision] = {
            "seeds": sorted(by_seed),
            "final_accuracy": statistics.fmean(finals),
            "final_accuracy_range": [min(finals), max(finals)],
            "train_s": statistics.fmean(train),
            "train_s_range": [min(train), max(train)],
            "wall_s": statistics.fmean(r["wall_s"] for r in by_seed.values()),
            "stage_s": {
                stage: statistics.fmean(r["stage_s"][stage] for r in by_seed.values())
                for stage in STAGES
            },
        }
    seeds = sorted(set(runs["fp32"]) & set(runs["bf16"]))
    ratios = [runs["fp32"][s]["train_s"] / runs["bf16"][s]["train_s"] for s in seeds]
    out["bf16_speedup"] = {
        "median": statistics.median(ratios),
        "per_seed": dict(zip(seeds, ratios, strict=True)),
        "range": [min(ratios), max(ratios)],
        "measure": "fp32 training seconds / bf16 training seconds, same seed, runs adjacent",
    }
    out["accuracy_difference_points"] = 100 * (
        out["bf16"]["final_accuracy"] - out["fp32"]["final_accuracy"]
    )
    return out


def plot(runs: dict[str, dict[int, dict[str, Any]]], path: Path) -> None:
    """Held-out accuracy against steps, one line per run, a colour per precision."""
    colors = {"fp32": "tab:blue", "bf16": "tab:orange"}
    series = []
    for precision, by_seed in runs.items():
        for seed, record in sorted(by_seed.items()):
            steps = [p["step"] for p in record["curve"]]
            accuracy = [p["accuracy"] for p in record["curve"]]
            label = precision if seed == min(by_seed) else None
            series.append(Series(label, steps, accuracy, color=colors[precision], alpha=0.8))
    teacher = next(iter(next(iter(runs.values())).values()))["teacher"]
    with figure(path) as (ax,):
        plot_curves(
            ax,
            series,
            xlabel="OPD step",
            ylabel="held-out accuracy (greedy)",
            teacher=teacher,
            title="The demo in fp32 and bf16 (one line per seed)",
        )


def report(
    runs: dict[str, dict[int, dict[str, Any]]],
    command: str,
    load: tuple[float, float],
    threads: int,
    files: ResultFiles,
) -> None:
    """Write the Markdown, the JSON and the figure."""
    summary = summarise(runs)
    fastest = min(summary[p]["train_s"] for p in PRECISIONS)
    lowest_fp32 = summary["fp32"]["final_accuracy_range"][0]
    met = {
        "demo training under 3 min": fastest / 60 <= TARGETS["training_minutes"],
        "bf16 accuracy held (mean >= fp32's lowest seed)": summary["bf16"]["final_accuracy"]
        >= lowest_fp32,
    }
    speedup = summary["bf16_speedup"]
    rows = []
    for precision in PRECISIONS:
        by_seed = runs[precision]
        s = summary[precision]
        rows.append(
            f"{precision} | {len(by_seed)} | "
            + spread([r["student_after"] for r in by_seed.values()], ".1%")
            + " | "
            + spread([r["train_s"] for r in by_seed.values()], ".0f")
            + " | "
            + " / ".join(f"{s['stage_s'][stage]:.0f}" for stage in STAGES)
            + f" | {s['wall_s']:.0f}"
        )
    first = next(iter(runs["fp32"].values()))
    lines = [
        "# The demo in fp32 and in bf16",
        "",
        produced_by(
            command,
            f"`python -m opd_core seed=<s> train.precision=<p>`, cached models, {threads} "
            "threads, one run at a time, the precisions' order alternating by seed",
            load_text(load),
        )
        + ".",
        "",
        f"Teacher {first['teacher']:.1%}; student before OPD {first['student_before']:.1%} "
        "(500 held-out problems, greedy).",
        "",
        *markdown_table(
            "precision | seeds | final accuracy, mean (min-max) | training s, mean (min-max) "
            "| sample / grade / score / update s | run wall s",
            rows,
        ),
        "",
        f"bf16 speed-up of the training steps (fp32 seconds / bf16 seconds, per seed, adjacent "
        f"runs): median {speedup['median']:.2f}x, range {speedup['range'][0]:.2f}-"
        f"{speedup['range'][1]:.2f}x over {len(speedup['per_seed'])} seed(s) (a measured ratio, "
        "not a bound). Accuracy, bf16 minus fp32: "
        f"{summary['accuracy_difference_points']:+.1f} points on the seeds' means.",
        "",
        targets_line(met),
        "",
        files.image("accuracy curves"),
        "",
    ]
    record = {
        "command": command,
        "threads": threads,
        "load_average_before_after": load,
        "targets": TARGETS,
        "met": met,
        "summary": summary,
        "runs": {p: {str(s): r for s, r in by_seed.items()} for p, by_seed in runs.items()},
    }
    write_report(files, lines, record)
    plot(runs, files.png())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=2, help="torch threads per run")
    parser.add_argument("--quick", action="store_true", help="20 steps, first seed only")
    parser.add_argument("--work", type=Path, default=OUTPUTS / "demo_precision")
    parser.add_argument("--report-only", action="store_true", help="only rewrite the report")
    args = parser.parse_args()
    seeds = args.seeds[:1] if args.quick else args.seeds
    extra = list(QUICK_OVERRIDES) if args.quick else []
    files = RESULTS.under(args.work) if args.quick else RESULTS
    load_before = warn_if_busy("demo_precision")
    runs: dict[str, dict[int, dict[str, Any]]] = {p: {} for p in PRECISIONS}
    for index, seed in enumerate(seeds):
        order = PRECISIONS if index % 2 == 0 else PRECISIONS[::-1]
        for precision in order:
            out = args.work / f"{precision}_seed{seed}"
            if args.report_only:
                wall = json.loads((out / "wall_s.json").read_text())
            else:
                overrides = [f"seed={seed}", f"train.precision={precision}", *extra]
                _, wall = run_cli(
                    overrides, fresh_dir(out), f"{precision} seed {seed}",
                    threads=args.threads, check=True,
                )  # fmt: skip
                (out / "wall_s.json").write_text(json.dumps(wall))
            runs[precision][seed] = run_record(out, wall)
    flags = [f"--threads={args.threads}", "--seeds", *map(str, args.seeds)]
    if args.quick:
        flags.append("--quick")
    if args.work != OUTPUTS / "demo_precision":
        flags.append(f"--work={args.work}")
    command = command_line(__file__, *flags)
    report(runs, command, (load_before, load_average()), args.threads, files)


if __name__ == "__main__":
    main()
