"""Issue 14's teachers measured on the demo: a teacher with another tokenizer, and the student's
own initial weights with the solution in context (self-distillation).

    python benchmarks/teachers.py                    # 6 runs, 5-20 min each on a busy CPU
    python benchmarks/teachers.py --seeds 0 1 2      # the spread over seeds
    python benchmarks/teachers.py --report-only      # rewrite the report from the runs

Two comparisons, each at the same steps, schedule, objective and student start:

- **cross tokenizer**: ``+experiment=opd`` (sampled-token reverse KL, the objective a
  cross-tokenizer teacher supports) with the demo teacher against ``teacher=cross_tokenizer``
  with ``demo://arithmetic/teacher_bpe`` (the same teacher recipe over a BPE that merges across
  characters, another vocabulary and EOS), its log-probabilities shared among the student's
  tokens by characters (the default), given whole to the token completing each teacher token
  (``teacher.split=last``), or segment by segment next to the student's own log-probabilities
  (``teacher.split=segment``);
- **self-distillation**: the student ``demo://arithmetic/student_context`` (the demo student
  whose SFT also saw solutions in a system turn) taught by the demo teacher (the default
  objective) against ``+experiment=self_distill``: its own initial weights, shown the solution.

Every run is a real ``python -m opd_core`` process (one thread) evaluated greedily on 500
held-out problems every 100 steps; a run folder holding ``summary.json`` is reused (``--fresh``
reruns). The report goes to ``docs/results/teachers.{md,json,png}``, the command beside every
number.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cli_runs import run_cli

from opd_core.metrics import read_metrics
from opd_report.curves import Curve, load_curve

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
EVAL = (
    "task.eval_size=500",
    "train.prompts_per_step=64",
    "train.samples_per_prompt=2",
    "train.lr=5e-4",
)
"""500 held-out problems, and the demo schedule these runs were measured with (64 prompts x 2
answers per step at lr 5e-4; the demo's default has since become 128 x 1 at 2e-3)."""
CONTEXT_STUDENT = "student.model.path=demo://arithmetic/student_context"


@dataclass(frozen=True)
class Setup:
    """One arm of a comparison."""

    label: str
    comparison: str
    overrides: tuple[str, ...]


SETUPS = {
    "same_tokenizer": Setup(
        "same-tokenizer teacher (demo teacher)",
        "cross_tokenizer",
        ("+experiment=opd", "+task=arithmetic", "+teacher=demo", *EVAL),
    ),
    "cross_tokenizer": Setup(
        "cross-tokenizer teacher (teacher_bpe)",
        "cross_tokenizer",
        (
            "+experiment=opd",
            "+task=arithmetic",
            "+teacher=cross_tokenizer",
            "teacher.model.path=demo://arithmetic/teacher_bpe",
            *EVAL,
        ),
    ),
    "cross_tokenizer_last": Setup(
        "cross-tokenizer teacher, split=last",
        "cross_tokenizer",
        (
            "+experiment=opd",
            "+task=arithmetic",
            "+teacher=cross_tokenizer",
            "teacher.model.path=demo://arithmetic/teacher_bpe",
            "teacher.split=last",
            *EVAL,
        ),
    ),
    "cross_tokenizer_segment": Setup(
        "cross-tokenizer teacher, split=segment",
        "cross_tokenizer",
        (
            "+experiment=opd",
            "+task=arithmetic",
            "+teacher=cross_tokenizer",
            "teacher.model.path=demo://arithmetic/teacher_bpe",
            "teacher.split=segment",
            *EVAL,
        ),
    ),
    "separate_teacher": Setup(
        "separate teacher (demo teacher)",
        "self_distillation",
        ("+task=arithmetic", "+teacher=demo", CONTEXT_STUDENT, *EVAL),
    ),
    "self_distill": Setup(
        "self-distillation (initial student, solution shown)",
        "self_distillation",
        ("+experiment=self_distill", CONTEXT_STUDENT, *EVAL),
    ),
}
DEFAULT_STEPS = {"cross_tokenizer": 600, "self_distillation": 300}
"""OPD steps of each comparison: the demo's schedule, and half of it for self-distillation."""
SIGNALS = {
    "reverse_kl": "teacher_reverse_kl",
    "entropy": "entropy",
    "answer_tokens": "completion_len",
}
"""Per-step metrics reported as their mean over the first and the last 50 steps."""
COMPARISONS = {
    "cross_tokenizer": "Cross-tokenizer teacher against the same-tokenizer teacher",
    "self_distillation": "Self-distillation against a separate teacher",
}


def overrides_for(key: str, seed: int, steps: dict[str, int]) -> list[str]:
    """The command-line overrides of one run (``steps``: per comparison)."""
    setup = SETUPS[key]
    return [*setup.overrides, f"train.steps={steps[setup.comparison]}", f"seed={seed}"]


def command_for(key: str, seed: int, steps: dict[str, int]) -> str:
    """The run as a user would type it."""
    return " ".join(["python -m opd_core", *overrides_for(key, seed, steps)])


def run_dir(out: Path, key: str, seed: int) -> Path:
    return out / f"{key}_s{seed}"


def run_all(
    keys: Sequence[str], seeds: Sequence[int], steps: dict[str, int], out: Path, fresh: bool
) -> None:
    """Every (seed, setup) run in turn, first seed first; finished ones are reused."""
    for seed in seeds:
        for key in keys:
            folder = run_dir(out, key, seed)
            if (folder / "summary.json").exists() and not fresh:
                print(f"[{key} s{seed}] reusing {folder}", flush=True)
                continue
            run_cli([*overrides_for(key, seed, steps)], folder, f"{key} s{seed}")


def mean_metric(folder: Path, name: str, window: slice = slice(None)) -> float | None:
    """The mean of a per-step metric over a run's steps ``window`` (None if never logged)."""
    records = read_metrics(folder / "metrics.jsonl")[window]
    values = [float(r[name]) for r in records if name in r]
    return statistics.fmean(values) if values else None


def summarize(
    key: str, seeds: Sequence[int], steps: dict[str, int], out: Path
) -> dict[str, Any] | None:
    """The finished seeds of one setup: before, after, teacher, curves, with their commands."""
    runs = []
    for seed in seeds:
        folder = run_dir(out, key, seed)
        if not (folder / "summary.json").exists():
            continue
        curve: Curve = load_curve(folder)
        summary = json.loads((folder / "summary.json").read_text())
        runs.append(
            {
                "seed": seed,
                "command": command_for(key, seed, steps),
                "steps": summary["steps"],
                "teacher": curve.teacher_score,
                "before": curve.points[0].score,
                "after": curve.final.score,
                "best": curve.best_score,
                "token_match": mean_metric(folder, "teacher/token_match"),
                **{
                    f"{name}_{part}": mean_metric(folder, metric, window)
                    for name, metric in SIGNALS.items()
                    for part, window in (("first_50", slice(0, 50)), ("last_50", slice(-50, None)))
                },
                "wall_s_under_load": summary.get("wall_time_s"),
                "curve": [{"step": p.step, "accuracy": p.score} for p in curve.points],
            }
        )
    if not runs:
        return None
    afters = [r["after"] for r in runs]
    return {
        "label": SETUPS[key].label,
        "comparison": SETUPS[key].comparison,
        "runs": runs,
        "after_mean": statistics.fmean(afters),
        "after_min": min(afters),
        "after_max": max(afters),
        "after_std": statistics.stdev(afters) if len(afters) > 1 else None,
    }


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def write_report(
    results: dict[str, dict[str, Any]], steps: dict[str, int], notes: Sequence[str], command: str
) -> None:
    """``docs/results/teachers.{md,json}`` from the summarized setups."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {
        "command": command,
        "steps": steps,
        "eval_problems": 500,
        "setups": results,
        "notes": list(notes),
    }
    (RESULTS / "teachers.json").write_text(json.dumps(record, indent=1) + "\n")
    lines = [
        "# Teachers: another tokenizer, and the student itself with the solution shown",
        "",
        f"Produced by `{command}` (issue 14): real `python -m opd_core` runs "
        "on the demo's arithmetic task, one thread each, greedy accuracy on "
        "500 held-out problems (one problem = 0.2 points). Each row is one run, its command "
        "beside it. Wall times were taken on a shared, loaded 2-core machine: they are not "
        "timings.",
        "",
    ]
    for comparison, title in COMPARISONS.items():
        rows = {k: v for k, v in results.items() if v["comparison"] == comparison}
        if not rows:
            continue
        lines += [
            f"## {title} ({steps[comparison]} steps)",
            "",
            "| setup | seed | teacher | before | after | best | token match | steps 1-50 -> last "
            "50: reverse KL to the teacher; entropy; answer tokens | command |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for result in rows.values():
            for run in result["runs"]:
                match = "" if run["token_match"] is None else f"{run['token_match']:.2f}"
                kl = "; ".join(
                    f"{run[f'{name}_first_50']:.2f} -> {run[f'{name}_last_50']:.2f}"
                    for name in SIGNALS
                )
                lines.append(
                    f"| {result['label']} | {run['seed']} | {pct(run['teacher'])} | "
                    f"{pct(run['before'])} | {pct(run['after'])} | {pct(run['best'])} | "
                    f"{match} | {kl} | `{run['command']}` |"
                )
        lines.append("")
        for result in rows.values():
            n = len(result["runs"])
            spread = (
                f"mean {pct(result['after_mean'])}, min {pct(result['after_min'])}, max "
                f"{pct(result['after_max'])} over {n} seeds"
                if n > 1
                else f"{pct(result['after_mean'])} (one seed: no spread measured)"
            )
            lines.append(f"- {result['label']}: after {steps[comparison]} steps {spread}")
        lines.append("")
    lines += [*notes, "", "![learning curves](teachers.png)", ""]
    (RESULTS / "teachers.md").write_text("\n".join(lines))
    print("\n".join(lines))


def plot(results: dict[str, dict[str, Any]]) -> None:
    """Held-out accuracy against steps, one panel per comparison, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(COMPARISONS), figsize=(11, 4), sharey=True)
    for ax, (comparison, title) in zip(axes, COMPARISONS.items(), strict=True):
        for key, result in results.items():
            if result["comparison"] != comparison:
                continue
            color = None  # every seed of a setup in its first seed's colour
            for i, run in enumerate(result["runs"]):
                steps = [p["step"] for p in run["curve"]]
                scores = [p["accuracy"] for p in run["curve"]]
                label = None if i else key
                line = ax.plot(steps, scores, marker="o", ms=3, label=label, color=color)[0]
                color = line.get_color()
                if run["teacher"] is not None:
                    ax.axhline(run["teacher"], color=line.get_color(), ls=":", lw=1)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("OPD step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    axes[0].set_ylabel("held-out accuracy (dotted: teacher)")
    fig.tight_layout()
    fig.savefig(RESULTS / "teachers.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=None, help="OPD steps of every run")
    parser.add_argument(
        "--steps-for",
        action="append",
        default=[],
        metavar="COMPARISON=N",
        help=f"steps of one comparison ({', '.join(COMPARISONS)})",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--setups", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "teachers")
    parser.add_argument("--fresh", action="store_true", help="rerun finished runs")
    parser.add_argument("--report-only", action="store_true", help="only rewrite the report")
    parser.add_argument("--note", action="append", default=[], help="a line for the report")
    args = parser.parse_args()
    steps = {name: args.steps or default for name, default in DEFAULT_STEPS.items()}
    for item in args.steps_for:
        name, _, value = item.partition("=")
        if name not in COMPARISONS or not value.isdigit():
            parser.error(f"--steps-for takes COMPARISON=N with one of {', '.join(COMPARISONS)}")
        steps[name] = int(value)
    if not args.report_only:
        run_all(args.setups, args.seeds, steps, args.out, args.fresh)
    results = {}
    for key in args.setups:
        summary = summarize(key, args.seeds, steps, args.out)
        if summary is not None:
            results[key] = summary
    seeds = " ".join(str(s) for s in args.seeds)
    write_report(results, steps, args.note, f"python benchmarks/teachers.py --seeds {seeds}")
    plot(results)


if __name__ == "__main__":
    main()
