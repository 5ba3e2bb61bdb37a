"""Each method of the comparison at several learning rates, one seed each: which learning rate
every method gets in ``compare_objectives.py --tuned``.

    python benchmarks/lr_sweep.py                       # the default grid, ~2 h of CPU
    python benchmarks/lr_sweep.py --lrs 1e-3 2e-3 --methods sft_references
    python benchmarks/lr_sweep.py --report-only         # rewrite the report from the runs

Runs are real ``python -m opd_core`` processes in the comparison's own run folders
(``outputs/compare_objectives/<method>@lr<lr>/seed0``; the default learning rate's runs are the
comparison's first seed), so a tuned comparison reuses the sweep's runs as its first seed; the
methods and folders are ``bench_common.comparison``'s.

A method's best learning rate is the one that reaches 90% of the teacher in the fewest steps;
where none does, the one with the highest final accuracy (one seed: 500 problems carry about
+-1.8 points of noise, so close calls are noise). Writes ``docs/results/lr_sweep.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import statistics
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench_common.comparison import DEFAULT_STEPS, METHODS, RUNS, run_dir, run_one
from bench_common.paths import ResultFiles
from bench_common.plots import Series, figure, plot_curves
from bench_common.report import markdown_table, produced_by, write_report
from bench_common.runs import command_line

from opd_report.curves import Curve, first_reaching, load_curve

RESULTS = ResultFiles.of(__file__)
DEFAULT_LRS = (1e-3, 2e-3)
SWEPT = (
    "opd_reverse_kl_topk",
    "opd_forward_kl_topk",
    "opd_reverse_kl_sampled",
    "sft_teacher_samples",
    "sft_references",
    "rl_grpo",
)
SWEPT_LAST = ("opd_reverse_kl_sampled", "rl_grpo")
"""The slowest runs, and the ones least likely to change the comparison's conclusion."""
Results = dict[str, dict[float, dict[str, Any]]]
"""Per method, per learning rate: the run's line of the sweep (:func:`score_run`)."""


def score_run(curve: Curve, teacher: float) -> dict[str, Any]:
    """One run's line of the sweep: final and best accuracy, steps to 90% of the teacher."""
    reached = first_reaching(curve, 0.9 * teacher)
    return {
        "final": curve.final.score,
        "best": curve.best_score,
        "steps_to_90": reached.step if reached else None,
    }


def pick_best(by_lr: dict[float, dict[str, Any]]) -> float:
    """Fewest steps to 90% of the teacher, else the highest final accuracy; ties go to the
    smaller learning rate."""
    return min(
        by_lr,
        key=lambda lr: (
            by_lr[lr]["steps_to_90"] is None,
            by_lr[lr]["steps_to_90"] or 0,
            -by_lr[lr]["final"],
            lr,
        ),
    )


def cell(run: dict[str, Any] | None, best: bool) -> str:
    """Final accuracy (steps to 90% of the teacher, where reached); bold for the best lr."""
    if run is None:
        return "-"
    steps = run["steps_to_90"]
    text = f"{run['final']:.1%}" + (f" ({steps})" if steps is not None else "")
    return f"**{text}**" if best else text


def report(results: Results, teacher: float, command: str) -> None:
    """Write the sweep's Markdown, JSON (with each method's best lr) and figure."""
    best = {key: pick_best(by_lr) for key, by_lr in results.items() if by_lr}
    lrs = sorted({lr for by_lr in results.values() for lr in by_lr})
    lines = [
        "# Learning-rate sweep of the comparison's methods",
        "",
        produced_by(command) + ": every method from the demo's SFT-initialised student, "
        f"{DEFAULT_STEPS} steps of 128 sequences, 50 warm-up steps then cosine decay, seed 0, "
        "greedy accuracy on 500 held-out problems (about +-1.8 points of noise per number). "
        f"Teacher {teacher:.1%}; 90% of it {0.9 * teacher:.1%}. Each cell: final accuracy "
        "(steps to 90% of the teacher, where reached). **Bold**: the learning rate "
        "`compare_objectives.py --tuned` uses (fewest steps to 90%, else best final accuracy); "
        "`-`: not run.",
        "",
        *markdown_table(
            " | ".join(["method", *(f"lr {lr:g}" for lr in lrs)]),
            [
                " | ".join([f"`{key}`", *(cell(by_lr.get(lr), lr == best.get(key)) for lr in lrs)])
                for key, by_lr in results.items()
            ],
        ),
        "",
        RESULTS.image("final accuracy against learning rate"),
        "",
    ]
    record = {
        "command": command,
        "teacher": teacher,
        "steps": DEFAULT_STEPS,
        "best_lr": best,
        "runs": {
            key: {f"{lr:g}": run for lr, run in by_lr.items()} for key, by_lr in results.items()
        },
    }
    write_report(RESULTS, lines, record)
    with figure(RESULTS.png(), size=(7, 4.5)) as (ax,):
        plot_curves(
            ax,
            [
                Series(
                    key, sorted(by_lr), [by_lr[lr]["final"] for lr in sorted(by_lr)], marker_size=6
                )
                for key, by_lr in results.items()
            ],
            teacher=teacher,
            fractions=(0.9,),
            xlabel="learning rate (peak, cosine decay)",
            ylabel=f"final accuracy after {DEFAULT_STEPS} steps (seed 0)",
            legend={"fontsize": 7, "loc": "lower right"},
        )
        ax.set_xscale("log")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lrs", type=float, nargs="+", default=list(DEFAULT_LRS))
    parser.add_argument("--methods", nargs="+", default=list(SWEPT), choices=list(METHODS))
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (one thread each)")
    parser.add_argument("--out", type=Path, default=RUNS)
    parser.add_argument("--report-only", action="store_true", help="only rewrite the report")
    args = parser.parse_args()
    # the distillation and SFT methods first, the larger learning rates before the smaller
    work = sorted(
        ((key, lr) for lr in args.lrs for key in args.methods),
        key=lambda item: (item[0] in SWEPT_LAST, -item[1], args.methods.index(item[0])),
    )
    if not args.report_only:
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            for future in [
                pool.submit(
                    run_one, key, 0, DEFAULT_STEPS, run_dir(args.out, key, 0, lr), False, lr
                )
                for key, lr in work
            ]:
                future.result()
    curves: dict[tuple[str, float], Curve] = {}
    for key, lr in work:
        folder = run_dir(args.out, key, 0, lr)
        if (folder / "summary.json").exists():
            curves[key, lr] = load_curve(folder, name=key)
        else:
            print(f"[report] {key} lr {lr:g}: no finished run in {folder}; left out")
    if not curves:
        raise SystemExit("lr_sweep: no finished run to report; run the sweep first")
    teacher = statistics.mean(c.teacher_score for c in curves.values() if c.teacher_score)
    results: Results = {key: {} for key in args.methods}
    for (key, lr), curve in curves.items():
        results[key][lr] = score_run(curve, teacher)
    flags = (
        [] if sorted(args.lrs) == sorted(DEFAULT_LRS) else ["--lrs", *map("{:g}".format, args.lrs)]
    )
    flags += [] if args.methods == list(SWEPT) else ["--methods", *args.methods]
    report(results, teacher, command_line(__file__, *flags))


if __name__ == "__main__":
    main()
