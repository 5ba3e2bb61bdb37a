"""New knowledge by SFT erodes an old skill; OPD with the model from before that SFT as its
teacher restores the skill and keeps the knowledge (the seed's second experiment, at the scale of
the demo's models, where seeds are cheap).

    python benchmarks/forgetting.py               # ~25 min on 2 cores (3 seeds, 2 at a time)
    python benchmarks/forgetting.py --quick       # a few steps of each stage (checks the script)

The model is the demo's teacher (0.77M parameters); its **old skill** is the demo's task
(two-operation arithmetic, 500 held-out problems, greedy). The **new knowledge** is an operator
``@`` defined by a fixed random table over the digits (100 facts such as ``3@7`` -> ``3@7=58
#58``): nothing computes it, it can only be memorised. Per seed:

1. SFT (a worker process): the model is fine-tuned on the facts mixed with a fraction of old
   problems (``--old-fraction``) for ``--sft-steps`` steps: the seed's "internal documents" stage.
2. OPD (``python -m opd_core``): the SFT model is the student, the original model
   (``+teacher=demo``) the teacher, on the old task's training prompts only.
3. Each stage's model is measured on both (knowledge: greedy recall of the 100 facts; old skill:
   the 500 held-out problems).

The seed's table (Qwen3-8B, internal documents, IF-eval): knowledge 18 -> 36 -> 41%, instruction
following 85 -> 79 -> 83%. Results: ``docs/results/forgetting.{md,json,png}`` (``--quick``:
under ``outputs/forgetting-quick/``). Runs are resumable: a seed whose stage finished is reused.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench_common.paths import OUTPUTS, ResultFiles
from bench_common.plots import Bars, figure, plot_bars
from bench_common.report import markdown_table, produced_by, write_report
from bench_common.runs import command_line, run_cli, spawn_worker

RESULTS = ResultFiles.of(__file__)
FACT_TABLE_SEED = 1234
"""Seeds the ``@`` table (fixed: every run learns the same facts)."""
EVAL_PROBLEMS = 500
MAX_NEW_TOKENS = 48
"""The demo's evaluation length, for both measures."""
SEED_TABLE = {"knowledge": (18.0, 36.0, 41.0), "old skill": (85.0, 79.0, 83.0)}
"""The seed's numbers (percent): before SFT, after SFT, after OPD."""
STAGES = ("original", "sft", "opd")
FULL = {"seeds": 3, "sft_steps": 300, "opd_steps": 200, "eval_every": 50}
QUICK = {"seeds": 1, "sft_steps": 20, "opd_steps": 4, "eval_every": 2}


def fact_problems() -> list[Any]:
    """The 100 facts of the ``@`` table as problems: ``a@b`` with its value in 0..99."""
    from opd_arith.problems import ANSWER_MARKER, ArithmeticProblem

    rng = random.Random(FACT_TABLE_SEED)
    facts = []
    for a in range(10):
        for b in range(10):
            value = rng.randrange(100)
            question = f"{a}@{b}"
            solution = f"{question}={value} {ANSWER_MARKER}{value}"
            facts.append(ArithmeticProblem(question, str(value), solution))
    return facts


def sft_data(old_fraction: float, seed: int) -> list[Any]:
    """The SFT stage's examples: every fact as often as needed for the facts to make up
    ``1 - old_fraction`` of the data, the rest old training problems (a seeded sample)."""
    from opd_arith.build import DemoSpec

    facts = fact_problems()
    old_pool = DemoSpec().train_problems()
    repeats = 40
    old_count = round(len(facts) * repeats * old_fraction / (1 - old_fraction))
    old = random.Random(seed).sample(old_pool, min(old_count, len(old_pool)))
    return facts * repeats + old


# ------------------------------------------------------------------------ worker processes


def measure(model_dir: Path) -> dict[str, float]:
    """The model's knowledge (fact recall) and old skill (held-out accuracy), greedy."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from opd_arith.build import DemoSpec, evaluate_accuracy

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    problems = DemoSpec().eval_problems(EVAL_PROBLEMS)
    return {
        "knowledge": evaluate_accuracy(model, tokenizer, fact_problems(), MAX_NEW_TOKENS),
        "old_skill": evaluate_accuracy(model, tokenizer, problems, MAX_NEW_TOKENS),
    }


def sft_worker(args: argparse.Namespace) -> dict[str, Any]:
    """Stage 1: the demo teacher fine-tuned on the facts and old problems, saved to
    ``args.out/model``; its measures before and after."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from opd_arith.build import DemoSpec, build_demo_models, save_model
    from opd_arith.plugin import cache_dir
    from opd_arith.sft import sft

    torch.manual_seed(args.seed)
    original = build_demo_models(DemoSpec(), cache_dir(), progress=False).teacher_dir
    model = AutoModelForCausalLM.from_pretrained(original, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(original)
    data = sft_data(args.old_fraction, args.seed)
    started = time.perf_counter()
    losses = sft(model, tokenizer, data, steps=args.sft_steps, lr=args.sft_lr, seed=args.seed,
                 batch_size=64, progress=False, name="sft_facts")  # fmt: skip
    seconds = time.perf_counter() - started
    tmp = args.out / "model.tmp"
    save_model(model, tokenizer, tmp)
    tmp.rename(args.out / "model")
    return {
        "original": measure(original),
        "sft": measure(args.out / "model"),
        "sft_seconds": round(seconds, 1),
        "sft_examples": len(data),
        "sft_final_loss": losses[-1] if losses else None,
    }


# ------------------------------------------------------------------------ the pipeline


def opd_overrides(model: Path, seed: int, args: argparse.Namespace) -> list[str]:
    """Stage 2's ``python -m opd_core`` overrides: the SFT model learns the old task from the
    original model."""
    return [
        f"student.model.path={model}",
        "+teacher=demo",
        "+task=arithmetic",
        f"task.eval_size={EVAL_PROBLEMS}",
        f"train.steps={args.opd_steps}",
        f"train.lr={args.opd_lr}",
        f"train.warmup_steps={max(1, args.opd_steps // 10)}",
        f"eval.every={args.eval_every}",
        f"checkpoint.every={args.opd_steps}",
        f"seed={seed}",
    ]


def run_seed(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """All three stages of one seed (each reused when its output exists)."""
    folder = args.out / f"seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    sft_answer = folder / "sft.json"
    if not sft_answer.exists():
        shutil.rmtree(folder / "model", ignore_errors=True)
        shutil.rmtree(folder / "model.tmp", ignore_errors=True)
        flags = ["sft", f"--seed={seed}", f"--out={folder}", *stage_flags(args)]
        spawn_worker(__file__, flags, 1, f"SFT seed {seed}", folder / "sft.log")
    record = json.loads(sft_answer.read_text())
    run = folder / "opd"
    if not (run / "summary.json").exists():
        shutil.rmtree(run, ignore_errors=True)
        run_cli(opd_overrides(folder / "model", seed, args), run, f"OPD seed {seed}", check=True)
    measured = folder / "opd_measure.json"
    if not measured.exists():
        summary = json.loads((run / "summary.json").read_text())
        model = Path(summary["checkpoint"]) / "model"
        spawn_worker(__file__, ["measure", f"--model={model}"], 1, f"measure seed {seed}",
                     folder / "opd_measure.log")  # fmt: skip
    record["opd"] = json.loads(measured.read_text())
    record["opd_command"] = "python -m opd_core " + " ".join(
        opd_overrides(folder / "model", seed, args)
    )
    record["opd_curve"] = opd_curve(run)
    return record


def opd_curve(run: Path) -> list[dict[str, float]]:
    """Old-skill accuracy during OPD (step 0: the SFT model)."""
    from opd_report.curves import load_curve

    return [{"step": p.step, "old_skill": p.score} for p in load_curve(run).points]


def stage_flags(args: argparse.Namespace) -> list[str]:
    """The SFT stage's settings as flags (also what the report records)."""
    return [
        f"--sft-steps={args.sft_steps}",
        f"--sft-lr={args.sft_lr}",
        f"--old-fraction={args.old_fraction}",
    ]


# ------------------------------------------------------------------------ the report


def cell(values: Sequence[float]) -> str:
    """``mean (min-max)`` in percent."""
    mean = 100 * statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.1f}"
    return f"{mean:.1f} ({100 * min(values):.1f}-{100 * max(values):.1f})"


def summarize(records: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Per stage and measure: the seeds' values and their mean."""
    out: dict[str, Any] = {}
    for stage in STAGES:
        out[stage] = {}
        for measure_name in ("knowledge", "old_skill"):
            values = [r[stage][measure_name] for r in records.values()]
            out[stage][measure_name] = {"mean": statistics.fmean(values), "seeds": values}
    return out


def report(
    records: dict[int, dict[str, Any]], args: argparse.Namespace, command: str, files: ResultFiles
) -> None:
    summary = summarize(records)
    rows = []
    for measure_name, seed_key in (("knowledge", "knowledge"), ("old_skill", "old skill")):
        cells = [cell(summary[stage][measure_name]["seeds"]) for stage in STAGES]
        seed_row = " -> ".join(f"{v:.0f}" for v in SEED_TABLE[seed_key])
        rows.append(f"{seed_key} | " + " | ".join(cells) + f" | {seed_row}")
    s = summary
    drop = 100 * (s["sft"]["old_skill"]["mean"] - s["original"]["old_skill"]["mean"])
    restored = 100 * (s["opd"]["old_skill"]["mean"] - s["sft"]["old_skill"]["mean"])
    kept = 100 * (s["opd"]["knowledge"]["mean"] - s["sft"]["knowledge"]["mean"])
    first = next(iter(records.values()))
    lines = [
        "# Forgetting: new knowledge by SFT, the old skill restored by OPD",
        "",
        produced_by(
            command,
            f"{len(records)} seed(s), one thread per process, {args.jobs} at a time",
            "the demo's teacher as the model; knowledge: greedy recall of the 100 facts of a "
            "random operator table; old skill: 500 held-out arithmetic problems, greedy",
        )
        + ".",
        "",
        f"SFT: {args.sft_steps} steps at lr {args.sft_lr:g}, batch 64, on "
        f"{first['sft_examples']} examples ({1 - args.old_fraction:.0%} facts, "
        f"{args.old_fraction:.0%} old problems). OPD: {args.opd_steps} steps at lr "
        f"{args.opd_lr:g}, the demo's batch (128 prompts x 1 answer), top-k reverse KL, the "
        "original model as teacher, old-task prompts only.",
        "",
        *markdown_table(
            "measure (%) | original | after SFT | after OPD | the seed (original -> SFT -> OPD)",
            rows,
        ),
        "",
        "Means over seeds, (min-max) across them. Old skill after SFT "
        f"{drop:+.1f} points; OPD then {restored:+.1f} points of old skill and "
        f"{kept:+.1f} points of knowledge.",
        "",
        "Per seed (the OPD command names the run):",
        "",
        *markdown_table(
            "seed | knowledge (orig / SFT / OPD) | old skill (orig / SFT / OPD) | OPD command",
            [
                f"{seed} | "
                + " / ".join(f"{100 * r[st]['knowledge']:.1f}" for st in STAGES)
                + " | "
                + " / ".join(f"{100 * r[st]['old_skill']:.1f}" for st in STAGES)
                + f" | `{r['opd_command']}`"
                for seed, r in sorted(records.items())
            ],
        ),
        "",
        files.image("knowledge and old skill per stage"),
        "",
    ]
    write_report(files, lines, {"command": command, "summary": summary, "runs": records})
    with figure(files.png(), size=(7, 4.5)) as (ax,):
        measures = (("knowledge", "knowledge (fact recall)"), ("old_skill", "old skill"))
        plot_bars(
            ax,
            ["original", "after SFT", "after OPD"],
            [Bars(label, [100 * s[st][key]["mean"] for st in STAGES]) for key, label in measures],
            ylabel="% (greedy); dots: seeds",
            title="Forgetting and recovery",
        )
        for index, (key, _) in enumerate(measures):
            offset = (index - 0.5) * 0.4
            for position, stage in enumerate(STAGES):
                seeds = [100 * v for v in s[stage][key]["seeds"]]
                ax.plot([position + offset] * len(seeds), seeds, "k.", ms=4)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few steps per stage")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--sft-steps", type=int, default=None)
    parser.add_argument("--sft-lr", type=float, default=1e-3)
    parser.add_argument("--old-fraction", type=float, default=0.1)
    parser.add_argument("--opd-steps", type=int, default=None)
    parser.add_argument("--opd-lr", type=float, default=5e-4)
    parser.add_argument("--eval-every", type=int, default=None)
    parser.add_argument("--jobs", type=int, default=2, help="seeds at once (one thread each)")
    parser.add_argument("--out", type=Path, default=None, help="run folders (default outputs/)")
    parser.add_argument("--worker", choices=["sft", "measure"], help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--answer", type=Path, help=argparse.SUPPRESS)
    given = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(given)
    if args.worker:
        answer = sft_worker(args) if args.worker == "sft" else measure(args.model)
        args.answer.write_text(json.dumps(answer))
        return
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    name = "forgetting-quick" if args.quick else "forgetting"
    args.out = args.out or OUTPUTS / name
    files = RESULTS.under(OUTPUTS / name) if args.quick else RESULTS
    command = command_line(__file__, *given)
    records: dict[int, dict[str, Any]] = {}

    def one(seed: int) -> None:
        records[seed] = run_seed(seed, args)

    one(0)  # builds the demo models once, before seeds share them
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(one, range(1, args.seeds)))
    report(dict(sorted(records.items())), args, command, files)


if __name__ == "__main__":
    main()
