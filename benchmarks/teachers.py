"""Issue 14's teachers measured on the demo: a teacher with another tokenizer, and the student's
own initial weights with the solution in context (self-distillation).

    python benchmarks/teachers.py                    # 6 runs, 5-20 min each on a busy CPU
    python benchmarks/teachers.py --seeds 0 1 2      # the spread over seeds
    python benchmarks/teachers.py --report-only      # rewrite the report from the runs

Two comparisons, each at the same steps, schedule, objective and student start:

- **cross tokenizer**: ``objective=opd`` (sampled-token reverse KL, the objective the
  per-sequence path supports) with the demo teacher against ``teacher=cross_tokenizer
  teacher.target=sequence`` with ``demo://arithmetic/teacher_bpe`` (the same teacher recipe over
  a BPE that merges across characters, another vocabulary and EOS), its log-probabilities shared
  among the student's tokens by characters (``split=chars``), given whole to the token
  completing each teacher token (``teacher.split=last``), or segment by segment next to the
  student's own log-probabilities (``teacher.split=segment``); the byte-prefix targets that
  replaced it as the default are measured by ``benchmarks/cross_tokenizer.py``;
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

from bench_common.paths import OUTPUTS, ResultFiles
from bench_common.plots import Series, figure, plot_curves
from bench_common.report import markdown_table, percent, produced_by, write_report
from bench_common.runs import command_line, run_cli

from opd_core.api import read_metrics
from opd_report.curves import Curve, load_curve

RESULTS = ResultFiles.of(__file__)
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
        ("objective=opd", "+task=arithmetic", "+teacher=demo", *EVAL),
    ),
    "cross_tokenizer": Setup(
        "cross-tokenizer teacher (teacher_bpe)",
        "cross_tokenizer",
        (
            "objective=opd",
            "+task=arithmetic",
            "+teacher=cross_tokenizer",
            "teacher.model.path=demo://arithmetic/teacher_bpe",
            "teacher.target=sequence",
            *EVAL,
        ),
    ),
    "cross_tokenizer_last": Setup(
        "cross-tokenizer teacher, split=last",
        "cross_tokenizer",
        (
            "objective=opd",
            "+task=arithmetic",
            "+teacher=cross_tokenizer",
            "teacher.model.path=demo://arithmetic/teacher_bpe",
            "teacher.target=sequence",
            "teacher.split=last",
            *EVAL,
        ),
    ),
    "cross_tokenizer_segment": Setup(
        "cross-tokenizer teacher, split=segment",
        "cross_tokenizer",
        (
            "objective=opd",
            "+task=arithmetic",
            "+teacher=cross_tokenizer",
            "teacher.model.path=demo://arithmetic/teacher_bpe",
            "teacher.target=sequence",
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


def report(
    results: dict[str, dict[str, Any]], steps: dict[str, int], notes: Sequence[str], command: str
) -> None:
    """``docs/results/teachers.{md,json,png}`` from the summarized setups."""
    record = {
        "command": command,
        "steps": steps,
        "eval_problems": 500,
        "setups": results,
        "notes": list(notes),
    }
    lines = [
        "# Teachers: another tokenizer, and the student itself with the solution shown",
        "",
        produced_by(command, "issue 14") + ": real `python -m opd_core` runs "
        "on the demo's arithmetic task, one thread each, greedy accuracy on "
        "500 held-out problems (one problem = 0.2 points). Each row is one run, its command "
        "beside it. Wall times were taken on a shared, loaded 2-core machine: they are not "
        "timings.",
        "",
    ]
    for comparison, title in COMPARISONS.items():
        rows = {k: v for k, v in results.items() if v["comparison"] == comparison}
        if rows:
            lines += comparison_section(rows, title, steps[comparison])
    lines += [*notes, "", RESULTS.image("learning curves"), ""]
    write_report(RESULTS, lines, record)
    plot(results)


def run_row(label: str, run: dict[str, Any]) -> str:
    """One run's line: its scores, the signals' first and last 50 steps, its command."""
    match = "" if run["token_match"] is None else f"{run['token_match']:.2f}"
    signals = "; ".join(
        f"{run[f'{name}_first_50']:.2f} -> {run[f'{name}_last_50']:.2f}" for name in SIGNALS
    )
    return (
        f"{label} | {run['seed']} | {percent(run['teacher'])} | {percent(run['before'])} | "
        f"{percent(run['after'])} | {percent(run['best'])} | {match} | {signals} | "
        f"`{run['command']}`"
    )


def comparison_section(rows: dict[str, dict[str, Any]], title: str, steps: int) -> list[str]:
    """One comparison: a line per run with its command, then each setup's spread over seeds."""
    table = markdown_table(
        "setup | seed | teacher | before | after | best | token match | "
        "steps 1-50 -> last 50: reverse KL to the teacher; entropy; answer tokens | command",
        [run_row(result["label"], run) for result in rows.values() for run in result["runs"]],
    )
    spreads = []
    for result in rows.values():
        n = len(result["runs"])
        spread = (
            f"mean {percent(result['after_mean'])}, min {percent(result['after_min'])}, max "
            f"{percent(result['after_max'])} over {n} seeds"
            if n > 1
            else f"{percent(result['after_mean'])} (one seed: no spread measured)"
        )
        spreads.append(f"- {result['label']}: after {steps} steps {spread}")
    return [f"## {title} ({steps} steps)", "", *table, "", *spreads, ""]


def plot(results: dict[str, dict[str, Any]]) -> None:
    """Held-out accuracy against steps, one panel per comparison, one line per run (every seed
    of a setup in one colour, its teacher dotted)."""
    with figure(RESULTS.png(), len(COMPARISONS), size=(11, 4), sharey=True) as axes:
        for ax, (comparison, title) in zip(axes, COMPARISONS.items(), strict=True):
            setups = [(k, r) for k, r in results.items() if r["comparison"] == comparison]
            series = [
                Series(
                    None if i else key,
                    [p["step"] for p in run["curve"]],
                    [p["accuracy"] for p in run["curve"]],
                    color=f"C{index}",
                    teacher=run["teacher"],
                )
                for index, (key, result) in enumerate(setups)
                for i, run in enumerate(result["runs"])
            ]
            plot_curves(
                ax, series, title=title, xlabel="OPD step", ylabel="", legend={"fontsize": 8}
            )
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("held-out accuracy (dotted: teacher)")


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
    parser.add_argument("--out", type=Path, default=OUTPUTS / "teachers")
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
    command = command_line(__file__, "--seeds", *map(str, args.seeds))
    report(results, steps, args.note, command)


if __name__ == "__main__":
    main()
