"""Exposure bias tested head on: one wrong step in a solution's prefix, and how each trained
model goes on from it (issue 20).

    python benchmarks/perturbation.py             # ~30 min on 2 cores (3 seeds, 2 runs at a time)
    python benchmarks/perturbation.py --quick     # a few steps per run (checks the script)

OPD's claimed advantage over SFT is that the student trains on its own prefixes, mistakes
included, with the teacher's next-token targets after them. This measures what a trained model
does after a mistake directly. From the demo's SFT-initialised student, the demo's schedule
(600 steps) trains it by OPD (the default objective, top-k reverse KL) and by SFT on the
teacher's samples (``objective=sft``), 3 seeds each (real ``python -m opd_core`` runs, one thread,
``--jobs`` at a time). Then every model (also the initial student and the teacher) continues,
greedily, 1,000 held-out two-operation problems from two prefixes of the reference solution:

- **clean**: the first step as written (``2*3=6 ``);
- **perturbed**: the same step with a wrong result (``2*3=8 ``; off by 1-3, a value the task
  allows, chosen so that carrying it on changes the final answer).

After the perturbed prefix a continuation either **recovers** (the final answer is the correct
one), **carries** the error (the final answer follows from the wrong value: consistent with its
own context, as the teacher almost always is), or falls apart (any other answer). Results:
``docs/results/perturbation.{md,json,png}`` (``--quick``: under ``outputs/perturbation-quick/``).
A finished run folder is reused.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import statistics
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_common.paths import OUTPUTS, ResultFiles
from bench_common.plots import Bars, figure, plot_bars
from bench_common.report import markdown_table, produced_by, write_report
from bench_common.runs import command_line, run_cli, spawn_worker

RESULTS = ResultFiles.of(__file__)
METHODS = {
    "opd": ("OPD (top-k reverse KL)", ()),
    "sft": ("SFT on teacher samples", ("objective=sft",)),
}
FULL = {"seeds": 3, "steps": 600, "problems": 1000}
QUICK = {"seeds": 1, "steps": 4, "problems": 40}
OUTCOMES = ("recovered", "carried", "other")
PERTURB_SEED = 7
EVAL_POOL = 1100
"""Held-out problems drawn from (the generator finds about 1,160 distinct ones in the demo's
space)."""
MAX_NEW_TOKENS = 48
_STEP_RE = re.compile(r"^(\d+)([+\-*])(\d+)=(-?\d+)$")


@dataclass(frozen=True)
class Perturbed:
    """A held-out problem with its clean and perturbed first step."""

    question: str
    answer: str
    clean_prefix: str
    perturbed_prefix: str
    carried_answer: str
    """The final answer that follows from the wrong first result."""


def apply_step(expression: str) -> int:
    """The value of ``a<op>b`` (two integers, one of ``+-*``)."""
    from opd_arith.problems import apply_op

    match = re.fullmatch(r"(\d+)([+\-*])(\d+)", expression)
    if match is None:
        raise ValueError(f"not one operation on two integers: {expression!r}")
    return apply_op(match.group(2), int(match.group(1)), int(match.group(3)))


def perturbed_problems(n: int) -> list[Perturbed]:
    """``n`` held-out problems whose first step can be made wrong so that carrying the wrong
    value on gives another final answer within the task's range (0..99)."""
    from opd_arith.build import DemoSpec

    rng = random.Random(PERTURB_SEED)
    out = []
    for problem in DemoSpec().eval_problems(EVAL_POOL):
        first = problem.solution.split(" ")[0]
        match = _STEP_RE.match(first)
        inner = f"({first.split('=')[0]})"
        if match is None or inner not in problem.question:
            continue
        right = int(match.group(4))
        for wrong in rng.sample([right + d for d in (-3, -2, -1, 1, 2, 3)], 6):
            if not 0 <= wrong <= 99:
                continue
            carried = apply_step(problem.question.replace(inner, str(wrong)))
            if 0 <= carried <= 99 and str(carried) != problem.answer:
                prefix = first.split("=")[0]
                out.append(
                    Perturbed(
                        problem.question, problem.answer, f"{first} ", f"{prefix}={wrong} ",
                        str(carried),
                    )
                )  # fmt: skip
                break
        if len(out) == n:
            return out
    raise SystemExit(
        f"only {len(out)} of the first {EVAL_POOL} held-out problems can be perturbed; ask for "
        f"at most that many (--problems {len(out)})"
    )


# ------------------------------------------------------------------------ worker: evaluate


def continue_from(model: Any, tokenizer: Any, questions: Sequence[str], prefixes: Sequence[str]):
    """Greedy continuations of each question's answer after its ``prefix`` (the prefix is part
    of the returned text)."""
    from opd_arith.sft import render_prompt
    from opd_core.api import (
        GenerationParams,
        completion_pad_id,
        eos_ids,
        pad_left,
    )
    from opd_hf.generation import decode_batches

    texts = [render_prompt(tokenizer, q) + p for q, p in zip(questions, prefixes, strict=True)]
    rows = tokenizer(texts, add_special_tokens=False)["input_ids"]
    ids_BP, mask_BP = pad_left(rows, tokenizer.pad_token_id)
    stop = eos_ids(model, tokenizer)
    completion_BC, _ = decode_batches(
        model, ids_BP, mask_BP, GenerationParams(MAX_NEW_TOKENS, 0.0), 100, stop,
        completion_pad_id(tokenizer),
    )  # fmt: skip
    completions = tokenizer.batch_decode(completion_BC.tolist(), skip_special_tokens=True)
    return [p + c for p, c in zip(prefixes, completions, strict=True)]


def evaluate(model_dir: Path, n: int) -> dict[str, Any]:
    """The model's clean-prefix accuracy and what it does after the perturbed prefix."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from opd_arith.problems import extract_answer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    problems = perturbed_problems(n)
    questions = [p.question for p in problems]
    clean = continue_from(model, tokenizer, questions, [p.clean_prefix for p in problems])
    wrong = continue_from(model, tokenizer, questions, [p.perturbed_prefix for p in problems])
    counts = dict.fromkeys(OUTCOMES, 0)
    for problem, text in zip(problems, wrong, strict=True):
        final = extract_answer(text)
        outcome = (
            "recovered"
            if final == problem.answer
            else "carried"
            if final == problem.carried_answer
            else "other"
        )
        counts[outcome] += 1
    clean_right = sum(extract_answer(t) == p.answer for t, p in zip(clean, problems, strict=True))
    return {
        "problems": len(problems),
        "clean_accuracy": clean_right / len(problems),
        **{outcome: counts[outcome] / len(problems) for outcome in OUTCOMES},
        "examples": [
            {"question": p.question, "prefix": p.perturbed_prefix, "continuation": t}
            for p, t in list(zip(problems, wrong, strict=True))[:5]
        ],
    }


# ------------------------------------------------------------------------ the pipeline


def overrides_for(method: str, seed: int, args: argparse.Namespace) -> list[str]:
    """The training run's overrides: the demo's schedule, ``args.steps`` steps."""
    quick = ["train.warmup_steps=1"] if args.quick else []
    return [*METHODS[method][1], f"train.steps={args.steps}", *quick, f"seed={seed}"]


def train(method: str, seed: int, args: argparse.Namespace) -> Path:
    """The trained student of ``method`` and ``seed`` (a finished run is reused)."""
    run = args.out / method / f"seed{seed}"
    if not (run / "summary.json").exists():
        shutil.rmtree(run, ignore_errors=True)
        run_cli(overrides_for(method, seed, args), run, f"{method} seed {seed}", check=True)
    summary = json.loads((run / "summary.json").read_text())
    return Path(summary["checkpoint"]) / "model"


def measured(label: str, model: Path, folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    """``evaluate`` of ``model`` in a worker process (reused when its answer exists)."""
    answer = folder / "perturbation.json"
    if not answer.exists():
        folder.mkdir(parents=True, exist_ok=True)
        flags = ["evaluate", f"--model={model}", f"--problems={args.problems}"]
        spawn_worker(__file__, flags, 1, label, folder / "perturbation.log")
    return dict(json.loads(answer.read_text()))


def reference_models() -> dict[str, Path]:
    """The demo's teacher and initial student (built on first use)."""
    from opd_arith.build import DemoSpec, build_demo_models
    from opd_arith.plugin import cache_dir

    paths = build_demo_models(DemoSpec(), cache_dir())
    return {"teacher": paths.teacher_dir, "initial student": paths.student_dir}


# ------------------------------------------------------------------------ the report


def cell(values: Sequence[float]) -> str:
    mean = 100 * statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.1f}"
    return f"{mean:.1f} ({100 * min(values):.1f}-{100 * max(values):.1f})"


def verdict(rows: dict[str, list[dict[str, Any]]]) -> list[str]:
    """What the table says about the exposure-bias prediction, computed from it."""
    mean = {
        label: {k: 100 * statistics.fmean(r[k] for r in runs) for k in ("carried", "other")}
        for label, runs in rows.items()
    }
    opd, sft = mean[METHODS["opd"][0]], mean[METHODS["sft"][0]]
    teacher = mean["teacher"]
    return [
        f"The teacher carries the wrong value on in {teacher['carried']:.1f}% of the problems: "
        "after a mistake it goes on consistently with what is written, as a model that reads "
        "its context does. Exposure bias predicts that a student trained only on prefixes the "
        "teacher wrote (SFT) falls apart after a mistake (*other*) more often than one trained "
        "on its own prefixes with the teacher's targets after them (OPD). Measured: OPD's "
        f"students go on consistently in {opd['carried']:.1f}% of the problems and fall apart "
        f"in {opd['other']:.1f}%; SFT's {sft['carried']:.1f}% and {sft['other']:.1f}% (means "
        "over seeds; the spread is in the table)."
    ]


def report(rows: dict[str, list[dict[str, Any]]], args: argparse.Namespace, command: str) -> None:
    files = RESULTS.under(args.out) if args.quick else RESULTS
    keys = ("clean_accuracy", *OUTCOMES)
    table = [
        f"{label} | {len(runs)} | " + " | ".join(cell([r[k] for r in runs]) for k in keys)
        for label, runs in rows.items()
    ]
    first = next(iter(rows.values()))[0]
    commands = [r["command"] for runs in rows.values() for r in runs if r.get("command")]
    example = first["examples"][0]
    lines = [
        "# A wrong step in the prefix: recovered or carried on",
        "",
        produced_by(
            command,
            f"{first['problems']} held-out two-operation problems, greedy, at most "
            f"{MAX_NEW_TOKENS} new tokens",
            f"training: the demo's schedule for {args.steps} steps from the demo's SFT-"
            "initialised student, one thread per run",
        )
        + ".",
        "",
        "Percent of problems, mean over seeds (min-max). *clean*: the final answer is right "
        "after the first step as written; after the first step with a wrong result, "
        "*recovered*: the final answer is still the right one; *carried*: it is the one the wrong "
        f"value leads to. Example: `{example['question']}` continued from `{example['prefix']}`.",
        "",
        *markdown_table(
            "model | seeds | clean (%) | recovered (%) | carried (%) | other (%)",
            table,
        ),
        "",
        *verdict(rows),
        "",
        "Commands: " + "; ".join(f"`{c}`" for c in commands),
        "",
        files.image("outcomes after a wrong step"),
        "",
    ]
    record = {"command": command, "problems": first["problems"], "models": rows}
    write_report(files, lines, record)
    with figure(files.png(), size=(8, 4.5)) as (ax,):
        plot_bars(
            ax,
            list(rows),
            [
                Bars(k, [100 * statistics.fmean(r[k] for r in runs) for runs in rows.values()])
                for k in keys
            ],
            ylabel="% of problems (mean over seeds)",
            title="After a wrong first step",
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few steps per run")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--problems", type=int, default=None)
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (one thread each)")
    parser.add_argument("--out", type=Path, default=None, help="run folders (default outputs/)")
    parser.add_argument("--worker", choices=["evaluate"], help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--answer", type=Path, help=argparse.SUPPRESS)
    given = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(given)
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.worker:
        args.answer.write_text(json.dumps(evaluate(args.model, args.problems)))
        return
    args.out = args.out or OUTPUTS / ("perturbation-quick" if args.quick else "perturbation")
    command = command_line(__file__, *given)
    rows: dict[str, list[dict[str, Any]]] = {}
    for label, model in reference_models().items():
        rows[label] = [measured(label, model, args.out / label.replace(" ", "_"), args)]
    work = [(m, s) for s in range(args.seeds) for m in METHODS]
    results: dict[tuple[str, int], dict[str, Any]] = {}

    def one(item: tuple[str, int]) -> None:
        method, seed = item
        model = train(method, seed, args)
        record = measured(f"{method} seed {seed}", model, args.out / method / f"seed{seed}", args)
        command = "python -m opd_core " + " ".join(overrides_for(method, seed, args))
        results[item] = {**record, "command": command}

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(one, work))
    for method, (label, _) in METHODS.items():
        rows[label] = [results[(method, s)] for s in range(args.seeds)]
    report(rows, args, command)


if __name__ == "__main__":
    main()
