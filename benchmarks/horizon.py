"""Does on-policy distillation gain on SFT as the horizon grows? The arithmetic task with more
solution steps per problem, OPD against SFT on teacher samples at each length, 3 seeds.

    python benchmarks/horizon.py --jobs 2            # 2, 3 and 4 operations, 3 seeds (~80 min)
    python benchmarks/horizon.py --ops 2 --seeds 1 --steps 50 --out outputs/horizon-quick

The seed argues that an SFT student drifts into states the teacher never visits and compounds
its errors, which on-policy training avoids; the effect should grow with the number of steps a
solution takes (about 8 tokens per operation: ~16 solution tokens at 2 operations, ~30 at 4).
The demo's build recipe does not stretch to 6 operations (~44 tokens): its student ends SFT at
0% validation accuracy and its teacher's SFT loss stays at 0.31 (0.06 at 4 operations), so the
default horizons stop at 4.
For each number of operations the script builds a teacher and an SFT-initialised student for
that task (the demo's recipe, cached), then continues the student under the demo's tuned
schedule (``schedule=demo``: 600 steps of 128 prompts, lr 2e-3, warm-up and cosine decay) with
OPD (the default objective: exact reverse KL over the teacher's top-k + tail) and with SFT on
the teacher's samples, each seed a real ``python -m opd_core`` process with one thread,
``--jobs`` at a time, first seed first. Greedy accuracy on 500 held-out problems every
``--eval-every`` steps.

Reported per horizon: finals (mean, min-max over seeds), the OPD - SFT difference of final
accuracy with a bootstrap 95% interval over seeds, and SFT's FLOPs over OPD's to targets at 50%,
75% and 90% of the way from the student's start to the teacher, each interpolated on the
seed-mean curve with a bootstrap 95% interval (FLOPs follow opd_core/flops.py: the teacher's
sampling for SFT and its scoring for OPD included). Results: ``docs/results/horizon.{md,json,png}``
(another ``--out``: under it). Finished runs are reused, interrupted ones resume.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench_common.costs import interval95, ratio_to_target
from bench_common.paths import OUTPUTS, ResultFiles
from bench_common.plots import Series, figure, plot_curves
from bench_common.report import (
    cost_text,
    markdown_table,
    percent,
    produced_by,
    sft_over_opd_cell,
    sft_over_opd_record,
    write_report,
)
from bench_common.runs import command_line, run_cli

from opd_core.api import cache_root
from opd_report.curves import Curve, load_curve

RESULTS = ResultFiles.of(__file__)
METHODS = {
    "opd": ("OPD (top-k reverse KL)", ()),
    "sft_teacher_samples": ("SFT on teacher samples", ("objective=sft",)),
}
GAP_FRACTIONS = (0.5, 0.75, 0.9)
"""Targets: the student's start plus these fractions of its gap to the teacher."""
Results = dict[int, dict[str, list[Curve]]]
"""Per number of operations, per method: the curve of every seed."""


def build(num_ops: int) -> Path:
    """Build (or reuse) the teacher and student for ``num_ops`` operations; their folder."""
    from opd_arith.build import DemoSpec, TaskSpec, build_demo_models

    spec = dataclasses.replace(DemoSpec(), task=TaskSpec(num_ops=num_ops))
    paths = build_demo_models(spec, cache_root() / "demo_arithmetic")
    return paths.teacher_dir.parent


def max_new_tokens(num_ops: int) -> int:
    """Room for a solution of ``num_ops`` steps (at most ~8 tokens each, 50 at 6 operations)
    and its answer; never below the demo's 48."""
    return max(48, 8 * num_ops + 16)


def overrides(
    num_ops: int, key: str, seed: int, args: argparse.Namespace, models: Path
) -> list[str]:
    """The ``python -m opd_core`` overrides of one run."""
    tokens = max_new_tokens(num_ops)
    return [
        "+task=arithmetic", f"++task.num_ops={num_ops}", "task.eval_size=500",
        "+teacher=hf", f"teacher.model.path={models / 'teacher'}",
        f"student.model.path={models / 'student'}", "schedule=demo", *METHODS[key][1],
        f"train.steps={args.steps}", f"eval.every={args.eval_every}",
        f"train.max_new_tokens={tokens}", f"eval.max_new_tokens={tokens}", f"seed={seed}",
    ]  # fmt: skip


def run_dir(out: Path, num_ops: int, key: str, seed: int) -> Path:
    return out / f"ops{num_ops}" / key / f"seed{seed}"


def run_all(args: argparse.Namespace, models: dict[int, Path]) -> None:
    """Every (seed, operations, method) run, ``--jobs`` at a time, first seed first."""
    todo = [
        (ops, key, seed)
        for seed in range(args.seeds)
        for ops in args.ops
        for key in METHODS
        if not (run_dir(args.out, ops, key, seed) / "summary.json").exists()
    ]

    def one(item: tuple[int, str, int]) -> None:
        ops, key, seed = item
        run_cli(
            [*overrides(ops, key, seed, args, models[ops]), "resume=true"],
            run_dir(args.out, ops, key, seed),
            f"horizon {ops} ops {key} seed {seed}",
            check=True,
        )

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(one, todo))


def final_difference_ci(
    a: list[Curve], b: list[Curve], draws: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """A bootstrap 95% interval (seeds resampled on each side) of mean final ``a`` - ``b``."""
    rng = random.Random(seed)
    fa, fb = [c.final.score for c in a], [c.final.score for c in b]
    return interval95(
        [
            statistics.fmean(rng.choices(fa, k=len(fa)))
            - statistics.fmean(rng.choices(fb, k=len(fb)))
            for _ in range(draws)
        ]
    )


def spread(curves: list[Curve]) -> dict[str, float]:
    finals = [c.final.score for c in curves]
    return {"mean": statistics.fmean(finals), "min": min(finals), "max": max(finals)}


def horizon_row(opd: list[Curve], sft: list[Curve]) -> dict[str, Any]:
    """One number of operations: finals, the final difference and FLOPs ratios to targets."""
    teacher = statistics.fmean(c.teacher_score or 0.0 for c in opd)
    start = statistics.fmean(c.points[0].score for c in opd)
    ratios = [
        ratio_to_target(sft, opd, start + f * (teacher - start), "flops") for f in GAP_FRACTIONS
    ]
    return {
        "teacher": teacher,
        "start": start,
        "seeds": {"opd": len(opd), "sft_teacher_samples": len(sft)},
        "opd_final": spread(opd),
        "sft_final": spread(sft),
        "opd_minus_sft_final": spread(opd)["mean"] - spread(sft)["mean"],
        "opd_minus_sft_final_ci95": final_difference_ci(opd, sft),
        "sft_over_opd_flops": {
            f"{f:g}": sft_over_opd_record(r) for f, r in zip(GAP_FRACTIONS, ratios, strict=True)
        },
        "steps_run": opd[0].final.step,
    }


def table_rows(rows: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    for ops, r in rows.items():
        o, s = r["opd_final"], r["sft_final"]
        low, high = r["opd_minus_sft_final_ci95"]
        ratios = " | ".join(sft_over_opd_cell(x) for x in r["sft_over_opd_flops"].values())
        lines.append(
            f"{ops} | {r['teacher']:.1%} | {r['start']:.1%} "
            f"| {o['mean']:.1%} ({o['min']:.1%}-{o['max']:.1%}) "
            f"| {s['mean']:.1%} ({s['min']:.1%}-{s['max']:.1%}) "
            f"| {100 * r['opd_minus_sft_final']:+.1f} ({100 * low:+.1f} to {100 * high:+.1f}) "
            f"| {ratios}"
        )
    return lines


def target_rows(rows: dict[str, dict[str, Any]]) -> list[str]:
    return [
        f"{ops} | {f} | {percent(x['target'])} | {cost_text(x['opd_flops'], 'flops')} "
        f"| {cost_text(x['sft_flops'], 'flops')}"
        for ops, r in rows.items()
        for f, x in r["sft_over_opd_flops"].items()
    ]


def report(results: Results, args: argparse.Namespace, command: str, files: ResultFiles) -> None:
    """Write the horizon's Markdown, JSON and figure."""
    rows = {str(ops): horizon_row(m["opd"], m["sft_teacher_samples"]) for ops, m in results.items()}
    seeds = sorted({n for r in rows.values() for n in r["seeds"].values()})
    fractions = ", ".join(f"{f:.0%}" for f in GAP_FRACTIONS)
    lines = [
        "# OPD against SFT as the horizon grows",
        "",
        produced_by(command, f"{'/'.join(map(str, seeds))} seeds per method and horizon")
        + ". For each number of operations per problem, a teacher and an SFT-initialised student "
        f"built for that task (the demo's recipe), then {args.steps} steps of the demo's tuned "
        "schedule (`schedule=demo`: 128 prompts per step, lr 2e-3, warm-up and cosine decay), "
        f"greedy accuracy on 500 held-out problems every {args.eval_every} steps; at most "
        + ", ".join(f"{max_new_tokens(o)} new tokens at {o} operations" for o in sorted(results))
        + f". One thread per run, {args.jobs} at a time on 2 cores; the runs of seed 0 (the "
        "other seeds differ in `seed=`; `<models>`: the build's cache folder for that horizon):",
        "",
        *(
            f"- `python -m opd_core {' '.join(overrides(ops, key, 0, args, Path('<models>')))}`"
            for ops in sorted(results)
            for key in METHODS
        ),
        "",
        "OPD - SFT: the difference of mean final accuracy, with a bootstrap 95% interval over "
        f"seeds. SFT / OPD FLOPs: to targets at {fractions} of the way from the student's start "
        "to the teacher, each interpolated on the seed-mean curve (FLOPs teacher + student, "
        "the teacher's sampling for SFT and its scoring for OPD included), with a bootstrap 95% "
        "interval; >1 means OPD needs fewer FLOPs. With this few seeds the intervals are rough.",
        "",
        *markdown_table(
            "operations | teacher | student start | OPD final (min-max) | SFT final (min-max) "
            "| OPD - SFT, points (95% CI) | "
            + " | ".join(f"SFT / OPD FLOPs to {f:.0%} of the gap" for f in GAP_FRACTIONS),
            table_rows(rows),
        ),
        "",
        "Targets and FLOPs to them on the seed-mean curves:",
        "",
        *markdown_table(
            "operations | share of the gap | target | OPD FLOPs | SFT FLOPs", target_rows(rows)
        ),
        "",
        files.image("accuracy against FLOPs per horizon"),
        "",
    ]
    curves = {
        str(ops): {k: [[dataclasses.asdict(p) for p in c.points] for c in v] for k, v in m.items()}
        for ops, m in results.items()
    }
    record = {"command": command, "args": {k: str(v) for k, v in vars(args).items()}}
    write_report(files, lines, {**record, "horizons": rows, "curves": curves})
    plot(results, files)


def plot(results: Results, files: ResultFiles) -> None:
    """Accuracy against FLOPs, one panel per number of operations, one line per run."""
    with figure(files.png(), len(results), size=(5 * len(results), 4)) as axes:
        for ax, (ops, by_method) in zip(axes, sorted(results.items()), strict=True):
            series = [
                Series(
                    METHODS[key][0] if i == 0 else None,
                    [p.total_flops for p in curve.points],
                    [p.score for p in curve.points],
                    color="C0" if key == "opd" else "C1",
                    alpha=0.8,
                    marker_size=2,
                )
                for key, curves in by_method.items()
                for i, curve in enumerate(curves)
            ]
            plot_curves(
                ax,
                series,
                teacher=by_method["opd"][0].teacher_score or 0.0,
                fractions=(0.9,),
                title=f"{ops} operations per problem",
                xlabel="FLOPs (teacher + student)",
                ylabel="held-out accuracy",
            )
            ax.set_xlim(left=0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ops", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=600, help="the demo schedule's 600")
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (one thread each)")
    parser.add_argument("--out", type=Path, default=None, help="run folders (default outputs/)")
    parser.add_argument("--build-only", action="store_true", help="build the models and stop")
    given = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(given)
    default_out = args.out is None
    args.out = args.out or OUTPUTS / "horizon"
    models = {ops: build(ops) for ops in args.ops}
    if args.build_only:
        for ops, folder in models.items():
            print(f"[horizon {ops} ops] models in {folder}")
        return
    run_all(args, models)
    results: Results = {
        ops: {
            key: [load_curve(run_dir(args.out, ops, key, s), name=key) for s in range(args.seeds)]
            for key in METHODS
        }
        for ops in sorted(args.ops)
    }
    files = RESULTS if default_out else RESULTS.under(args.out)
    report(results, args, command_line(__file__, *given), files)


if __name__ == "__main__":
    main()
