"""Does on-policy distillation gain on SFT as the horizon grows? The demo task with more
solution steps per problem, OPD against SFT on teacher samples at each length.

    python benchmarks/horizon.py                      # 2 and 4 operations per problem
    python benchmarks/horizon.py --ops 2 3 4 --seeds 2

The seed argues that an SFT student drifts into states the teacher never visits and compounds
its errors, which on-policy training avoids; the effect should grow with the number of steps a
solution takes. For each number of operations the script builds a teacher and an SFT-initialised
student for that task (as the demo builds its own, cached), continues the student with OPD (exact
reverse KL over the teacher's top-20 + tail) and with SFT on teacher samples under one schedule,
and reports the FLOPs each needs to reach 90% of the teacher's accuracy and their ratio. Results
go to ``docs/results/horizon.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import statistics
from pathlib import Path
from typing import Any

from bench_common.costs import cost_to
from bench_common.paths import OUTPUTS, ResultFiles
from bench_common.plots import Series, figure, plot_curves
from bench_common.report import cost_text, markdown_table, produced_by, write_report
from bench_common.runs import command_line, run_cli

from opd_core.api import cache_root
from opd_report.curves import Curve, load_curve

RESULTS = ResultFiles.of(__file__)
METHODS = {
    "opd_reverse_kl_topk": ("objective=reverse_kl_topk",),
    "sft_teacher_samples": ("objective=sft",),
}
SHARED = (  # the schedule its report was measured with (the demo's before the lr sweep)
    "train.lr=5e-4",
    "train.prompts_per_step=64",
    "train.samples_per_prompt=2",
    "++train.lr_schedule=cosine",
    "eval.every=25",
    "train.max_new_tokens=64",
    "eval.max_new_tokens=64",
)
Results = dict[int, dict[str, list[Curve]]]
"""Per number of operations, per method: the curve of every seed."""


def build(num_ops: int) -> Path:
    """Build (or reuse) the teacher and student for ``num_ops`` operations; their folder."""
    from opd_arith.build import DemoSpec, TaskSpec, build_demo_models

    spec = dataclasses.replace(DemoSpec(), task=TaskSpec(num_ops=num_ops))
    paths = build_demo_models(spec, cache_root() / "demo_arithmetic")
    return paths.teacher_dir.parent


def run(num_ops: int, key: str, seed: int, steps: int, models: Path, out: Path) -> None:
    if (out / "summary.json").exists():
        return
    if out.exists():
        shutil.rmtree(out)
    overrides = [
        *METHODS[key], *SHARED,
        "+task=arithmetic", f"++task.num_ops={num_ops}", "task.eval_size=500",
        "+teacher=hf", f"teacher.model.path={models / 'teacher'}",
        f"student.model.path={models / 'student'}", f"train.steps={steps}", f"seed={seed}",
    ]  # fmt: skip
    run_cli(overrides, out, f"horizon {num_ops} {key} seed {seed}", check=True)


def horizon_row(opd: list[Curve], sft: list[Curve]) -> dict[str, Any]:
    """One number of operations: both methods' finals and FLOPs to the target, 90% of the
    teacher or, when that is lower, the best accuracy every run of both reached."""
    teacher = statistics.mean(c.teacher_score or 0.0 for c in opd)
    target = min(0.9 * teacher, *(c.best_score for c in [*opd, *sft]))
    a, b = cost_to(opd, target, "flops"), cost_to(sft, target, "flops")
    return {
        "teacher": teacher,
        "start": opd[0].points[0].score,
        "seeds": len(opd),
        "opd_final_mean": statistics.mean(c.final.score for c in opd),
        "sft_final_mean": statistics.mean(c.final.score for c in sft),
        "target": target,
        "target_is_90": target >= 0.9 * teacher,
        "opd_flops_to_target": a,
        "sft_flops_to_target": b,
        "sft_over_opd_flops": (b / a) if a and b else None,
        "steps_run": opd[0].final.step,
    }


def table_row(ops: str, r: dict[str, Any]) -> str:
    """One number of operations' line of the report's table."""
    target = f"{r['target']:.1%}" + ("" if r["target_is_90"] else " (best both reached)")
    ratio = f"{r['sft_over_opd_flops']:.2f}x" if r["sft_over_opd_flops"] else "-"
    return (
        f"{ops} | {r['teacher']:.1%} | {r['start']:.1%} | {r['opd_final_mean']:.1%} "
        f"| {r['sft_final_mean']:.1%} | {target} "
        f"| {cost_text(r['opd_flops_to_target'], 'flops')} "
        f"| {cost_text(r['sft_flops_to_target'], 'flops')} | {ratio}"
    )


def report(results: Results, command: str) -> None:
    """Write the horizon's Markdown, JSON and figure."""
    rows = {
        str(ops): horizon_row(m["opd_reverse_kl_topk"], m["sft_teacher_samples"])
        for ops, m in sorted(results.items())
    }
    table = markdown_table(
        "operations | teacher | student start | OPD final | SFT final | target | "
        "OPD FLOPs to target | SFT FLOPs to target | SFT / OPD",
        [table_row(ops, row) for ops, row in rows.items()],
    )
    lines = [
        "# OPD against SFT as the horizon grows",
        "",
        produced_by(command) + ". For each number of operations per problem, a teacher and an "
        "SFT-initialised student built for that task (the demo's recipe), then 128 sequences "
        "per step, lr 5e-4 with warm-up and cosine decay, greedy accuracy on 500 held-out "
        "problems every 25 steps. Target: 90% of the teacher, or, where either method stays "
        "below it, the best accuracy every run of both reached; FLOPs to it: median over seeds.",
        "",
        *table,
        "",
        RESULTS.image("accuracy against FLOPs per horizon"),
        "",
    ]
    curves = {
        ops: {k: [[dataclasses.asdict(p) for p in c.points] for c in v] for k, v in m.items()}
        for ops, m in results.items()
    }
    write_report(RESULTS, lines, {"command": command, "horizons": rows, "curves": curves})
    plot(results)


def plot(results: Results) -> None:
    """Accuracy against FLOPs, one panel per number of operations, one line per run."""
    with figure(RESULTS.png(), len(results), size=(5 * len(results), 4)) as axes:
        for ax, (ops, by_method) in zip(axes, sorted(results.items()), strict=True):
            series = [
                Series(
                    key if i == 0 else None,
                    [p.total_flops for p in curve.points],
                    [p.score for p in curve.points],
                    color="C0" if key.startswith("opd") else "C1",
                    alpha=0.8,
                    marker_size=2,
                )
                for key, curves in by_method.items()
                for i, curve in enumerate(curves)
            ]
            plot_curves(
                ax,
                series,
                teacher=by_method["opd_reverse_kl_topk"][0].teacher_score or 0.0,
                fractions=(0.9,),
                title=f"{ops} operations per problem",
                xlabel="FLOPs (teacher + student)",
                ylabel="held-out accuracy",
            )
            ax.set_xlim(left=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ops", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--out", type=Path, default=OUTPUTS / "horizon")
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument(
        "--reuse-comparison",
        type=Path,
        default=None,
        help="a compare_objectives.py output folder whose seed runs stand in for the 2-operation "
        "runs (same models, schedule and steps; only max_new_tokens differs, 48 vs 64)",
    )
    args = parser.parse_args()
    results: Results = {}
    for ops in args.ops:
        models = build(ops)
        if args.build_only:
            print(f"[horizon {ops}] models in {models}")
            continue
        for key in METHODS:
            for seed in range(args.seeds):
                out = args.out / f"ops{ops}" / key / f"seed{seed}"
                reused = (args.reuse_comparison or Path("/nonexistent")) / key / f"seed{seed}"
                if ops == 2 and not out.exists() and (reused / "summary.json").exists():
                    shutil.copytree(reused, out)
                run(ops, key, seed, args.steps, models, out)
                results.setdefault(ops, {}).setdefault(key, []).append(load_curve(out, name=key))
    if results:
        flags = [] if args.ops == [2, 4] else ["--ops", *map(str, args.ops)]
        flags += [] if args.seeds == 1 else ["--seeds", str(args.seeds)]
        flags += [] if args.steps == 200 else ["--steps", str(args.steps)]
        if args.reuse_comparison is not None:
            flags += ["--reuse-comparison", str(args.reuse_comparison)]
        report(results, command_line(__file__, *flags))


if __name__ == "__main__":
    main()
