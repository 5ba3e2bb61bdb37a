"""Each method of the comparison at several learning rates, one seed each: which learning rate
every method gets in ``compare_objectives.py --tuned``.

    python benchmarks/lr_sweep.py                       # the default grid, ~2 h of CPU
    python benchmarks/lr_sweep.py --lrs 1e-3 2e-3 --methods sft_references
    python benchmarks/lr_sweep.py --report-only         # rewrite the report from the runs

Runs are real ``python -m opd_core`` processes in the comparison's own run folders
(``outputs/compare_objectives/<method>@lr<lr>/seed0``; the default learning rate's runs are the
comparison's first seed), so a tuned comparison reuses the sweep's runs as its first seed.

A method's best learning rate is the one that reaches 90% of the teacher in the fewest steps;
where none does, the one with the highest final accuracy (one seed: 500 problems carry about
+-1.8 points of noise, so close calls are noise). Writes ``docs/results/lr_sweep.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from compare_objectives import DEFAULT_STEPS, METHODS, RESULTS, ROOT, SWEEP_JSON, run_dir, run_one

from opd_report.curves import Curve, first_reaching, load_curve

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


def write_report(results: dict[str, dict[float, dict[str, Any]]], teacher: float, command: str):
    best = {key: pick_best(by_lr) for key, by_lr in results.items() if by_lr}
    lrs = sorted({lr for by_lr in results.values() for lr in by_lr})
    lines = [
        "# Learning-rate sweep of the comparison's methods",
        "",
        f"Produced by `{command}`: every method from the demo's SFT-initialised student, "
        f"{DEFAULT_STEPS} steps of 128 sequences, 50 warm-up steps then cosine decay, seed 0, "
        "greedy accuracy on 500 held-out problems (about +-1.8 points of noise per number). "
        f"Teacher {teacher:.1%}; 90% of it {0.9 * teacher:.1%}. Each cell: final accuracy "
        "(steps to 90% of the teacher, where reached). **Bold**: the learning rate "
        "`compare_objectives.py --tuned` uses (fewest steps to 90%, else best final accuracy); "
        "`-`: not run.",
        "",
        "| method | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " |",
        "|---|" + "---|" * len(lrs),
    ]
    for key, by_lr in results.items():
        cells = []
        for lr in lrs:
            if lr not in by_lr:
                cells.append("-")
                continue
            run = by_lr[lr]
            text = f"{run['final']:.1%}" + (
                f" ({run['steps_to_90']})" if run["steps_to_90"] is not None else ""
            )
            cells.append(f"**{text}**" if lr == best[key] else text)
        lines.append(f"| `{key}` | " + " | ".join(cells) + " |")
    lines += ["", "![final accuracy against learning rate](lr_sweep.png)", ""]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "lr_sweep.md").write_text("\n".join(lines))
    payload = {
        "command": command,
        "teacher": teacher,
        "steps": DEFAULT_STEPS,
        "best_lr": best,
        "runs": {
            key: {f"{lr:g}": run for lr, run in by_lr.items()} for key, by_lr in results.items()
        },
    }
    SWEEP_JSON.write_text(json.dumps(payload, indent=1) + "\n")
    plot(results, teacher)
    print("\n".join(lines))


def plot(results: dict[str, dict[float, dict[str, Any]]], teacher: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, by_lr in results.items():
        lrs = sorted(by_lr)
        ax.plot(lrs, [by_lr[lr]["final"] for lr in lrs], marker="o", label=key)
    ax.axhline(teacher, color="black", ls="--", lw=1, label="teacher")
    ax.axhline(0.9 * teacher, color="gray", ls=":", lw=1, label="90% of the teacher")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (peak, cosine decay)")
    ax.set_ylabel(f"final accuracy after {DEFAULT_STEPS} steps (seed 0)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(RESULTS / "lr_sweep.png", dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lrs", type=float, nargs="+", default=list(DEFAULT_LRS))
    parser.add_argument("--methods", nargs="+", default=list(SWEPT), choices=list(METHODS))
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (one thread each)")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "compare_objectives")
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
    results: dict[str, dict[float, dict[str, Any]]] = {key: {} for key in args.methods}
    for (key, lr), curve in curves.items():
        results[key][lr] = score_run(curve, teacher)
    flags = (
        [] if sorted(args.lrs) == sorted(DEFAULT_LRS) else ["--lrs", *map("{:g}".format, args.lrs)]
    )
    flags += [] if args.methods == list(SWEPT) else ["--methods", *args.methods]
    write_report(results, teacher, " ".join(["python benchmarks/lr_sweep.py", *flags]))


if __name__ == "__main__":
    main()
