"""opd-core against TRL's on-policy distillation trainers at equal work, side by side.

    python benchmarks/vs_trl.py            # about 12 min on 2 quiet CPU cores
    python benchmarks/vs_trl.py --quick    # tiny models, a few seconds a side (checks the script)

Needs TRL (``pip install trl``); it installs nothing. Each side trains the same random-init Qwen3
student against the same random-init Qwen3 teacher (one tokenizer) on the arithmetic task's
prompts: as many per step, drawn from the same pool, one sample each, the same new tokens (the
tokenizer's EOS is a token the models cannot emit, so every completion runs to the limit),
temperature 1, fp32, fused AdamW at the same learning rate, gradient clipping at 1, the same
threads, one micro-batch per step:

- ``opd-core``: ``+experiment=opd`` (advantage=reverse_kl, loss=importance_sampling),
  sampler=hf, teacher=hf;
- ``trl-distillation``: ``trl.DistillationTrainer`` at ``beta=1`` (reverse KL);
- ``trl-gkd``: ``trl.experimental.gkd.GKDTrainer`` at ``lmbda=1`` (always on-policy), ``beta=1``.

Every side runs in its own process (so its peak RSS is its own), warm-up steps are left out, the
sides are interleaved and repeated with their order rotated, and each repeat's step times give
one TRL/opd-core ratio per pair; the summary is the median of those ratios. The same run
measures this machine's fp32 matmul peak, so the FLOPs the ledger counts per step give a floor.
A scaling table adds a larger model pair and longer completions (one repeat, fewer steps; at
512 tokens fewer prompts, so that a pair samples the same tokens per step at both lengths).
Results: ``docs/results/performance.{md,json}`` (``--quick`` writes under ``outputs/vs_trl/``
instead). Time it on a quiet machine (``uptime`` first): a
figure measured under load is not a figure.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
SIDES = ("opd-core", "trl-distillation", "trl-gkd")
TRL_SIDES = SIDES[1:]
UNREACHABLE_EOS = "<|unreachable_eos|>"
"""Appended to the tokenizer after the models are built, so no model can sample it."""
TARGETS = {"speedup_vs_faster_trl": 1.3, "floor_ratio": 1.5}
LR = 1e-5
LR_SCHEDULE = "constant"


@dataclass(frozen=True)
class Shape:
    """A random-init Qwen3's size (see ``opd_arith.build.Architecture``)."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int = 64


@dataclass(frozen=True)
class Point:
    """One measured setting: a student/teacher pair, batch, completion length and step counts."""

    name: str
    student: Shape
    teacher: Shape
    prompts: int
    new_tokens: int
    warmup: int
    steps: int
    repeats: int

    @staticmethod
    def from_json(text: str) -> Point:
        """The point ``json.dumps(dataclasses.asdict(point))`` wrote."""
        fields = json.loads(text)
        return Point(
            **{
                **fields,
                "student": Shape(**fields["student"]),
                "teacher": Shape(**fields["teacher"]),
            }
        )


PAIRS = {
    "10M/50M": (Shape(384, 1152, 6, 6, 3), Shape(640, 2048, 10, 10, 5)),
    "40M/150M": (Shape(640, 2048, 8, 10, 5), Shape(1024, 3072, 12, 16, 8)),
    "tiny": (Shape(32, 64, 1, 2, 1, 16), Shape(64, 128, 2, 4, 2, 16)),
}


def plan(quick: bool) -> tuple[Point, list[Point]]:
    """The main comparison and the scaling table's other points (2048 sampled tokens a step at
    10M/50M, 1024 at 40M/150M, whatever the length)."""
    if quick:
        main = Point("tiny, 16 tokens", *PAIRS["tiny"], 4, 16, warmup=1, steps=2, repeats=2)
        return main, [
            dataclasses.replace(main, name="tiny, 64 tokens", prompts=1, new_tokens=64, repeats=1)
        ]
    main = Point("10M/50M, 64 tokens", *PAIRS["10M/50M"], 32, 64, warmup=1, steps=4, repeats=3)
    scaling = [
        Point("10M/50M, 512 tokens", *PAIRS["10M/50M"], 4, 512, warmup=1, steps=2, repeats=1),
        Point("40M/150M, 64 tokens", *PAIRS["40M/150M"], 16, 64, warmup=1, steps=1, repeats=1),
        Point("40M/150M, 512 tokens", *PAIRS["40M/150M"], 2, 512, warmup=1, steps=1, repeats=1),
    ]
    return main, scaling


# ------------------------------------------------------------------------ models and prompts


def build_models(
    folder: Path, student: Shape, teacher: Shape, unreachable_eos: bool = True
) -> dict[str, Any]:
    """Save a random-init student and teacher sharing the arithmetic tokenizer under ``folder``
    (reused when already there); return their sizes. With ``unreachable_eos`` their EOS is a
    token past their vocabulary, so every completion runs to the token limit."""
    info_path = folder / "info.json"
    if info_path.exists():
        return dict(json.loads(info_path.read_text()))
    from opd_arith.build import Architecture, make_model
    from opd_arith.problems import make_problems
    from opd_arith.tokenizer import build_tokenizer

    problems = make_problems(400, seed=0)
    tokenizer = build_tokenizer([f"{p.question} {p.solution}" for p in problems])
    built = {
        role: make_model(
            Architecture(**dataclasses.asdict(shape), max_position_embeddings=1024), tokenizer, seed
        )
        for role, shape, seed in (("student", student, 0), ("teacher", teacher, 1))
    }
    if unreachable_eos:
        tokenizer.add_special_tokens({"eos_token": UNREACHABLE_EOS})  # past the vocabulary
    eos = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
    info: dict[str, Any] = {"vocab": built["student"].config.vocab_size}
    for role, model in built.items():
        info[f"{role}_params"] = sum(p.numel() for p in model.parameters())
        for config in (model.config, model.generation_config):
            config.eos_token_id = eos
        model.save_pretrained(folder / role)
        tokenizer.save_pretrained(folder / role)
    info_path.write_text(json.dumps(info))
    return info


def arithmetic_prompts(count: int) -> list[dict[str, str]]:
    """The arithmetic task's first ``count`` training problems as user messages and answers."""
    from opd_arith.plugin import ArithmeticTask

    prompts = ArithmeticTask(train_size=count, eval_size=1).opd_task_prompts(split="train")
    return [
        {"question": p.messages[0]["content"], "answer": p.metadata.get("solution", "")}
        for p in prompts
    ]


# ------------------------------------------------------------------------ the worker sides


class StepClock:
    """Wall time between consecutive step ends, and each step's stage seconds."""

    def __init__(self) -> None:
        self.ends: list[float] = [time.perf_counter()]
        self.stages: list[dict[str, float]] = []
        self.tokens: list[float] = []
        """Mean completion tokens of each step's rollouts."""
        self.flops: list[float] = []
        self.overlap: list[dict[str, float]] = []
        """Each step's ``overlap/*`` metrics (``train.overlap``; empty dicts without)."""

    def step_times(self, warmup: int) -> list[float]:
        return [b - a for a, b in zip(self.ends, self.ends[1:], strict=False)][warmup:]


def opd_overrides(point: Point, models: Path, steps: int | None = None) -> list[str]:
    """opd-core's side of ``point`` (``+experiment=opd``, sampler=hf, teacher=hf) for ``steps``
    steps (default ``point.warmup + point.steps``), as command-line overrides."""
    steps = point.warmup + point.steps if steps is None else steps
    return [
        "+task=arithmetic",
        "+teacher=hf",
        "+experiment=opd",
        f"teacher.model.path={models / 'teacher'}",
        f"student.model.path={models / 'student'}",
        f"task.train_size={point.prompts * steps}",
        "task.eval_size=1",
        f"train.steps={steps}",
        f"train.prompts_per_step={point.prompts}",
        "train.samples_per_prompt=1",
        f"train.micro_batch_size={point.prompts}",
        f"train.max_new_tokens={point.new_tokens}",
        f"sampler.batch_size={point.prompts}",
        f"teacher.batch_size={point.prompts}",
        f"train.lr={LR}",
        f"train.lr_schedule={LR_SCHEDULE}",
        "train.warmup_steps=0",
        "train.max_grad_norm=1.0",
        "train.temperature=1.0",
        "eval.every=0",
        "eval.at_start=false",
        "eval.teacher=false",
        "eval.max_new_tokens=1",
        "checkpoint.every=0",
        "device=cpu",
        "progress=false",
    ]


def run_opd(
    point: Point, models: Path, out: Path, clock: StepClock, overrides: list[str] | None = None
) -> None:
    """opd-core's trainer on ``overrides`` (default: :func:`opd_overrides` of ``point``)."""
    from hydra import compose, initialize_config_dir

    from opd_core import hookimpl
    from opd_core.app import CONF_DIR, run
    from opd_core.plugin_manager import make_plugin_manager

    class Clock:
        @hookimpl
        def opd_step_end(self, ctx: object, step: int, metrics: dict[str, float]) -> None:
            clock.ends.append(time.perf_counter())
            clock.stages.append(
                {k[5:-2]: float(v) for k, v in metrics.items() if k.startswith("time/")}
            )
            clock.tokens.append(metrics["tokens"] / metrics["sequences"])
            clock.flops.append(metrics["flops_step/student"] + metrics["flops_step/teacher"])
            clock.overlap.append(
                {k: float(v) for k, v in metrics.items() if k.startswith("overlap/")}
            )

    if overrides is None:
        overrides = opd_overrides(point, models)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    clock.ends = [time.perf_counter()]
    run(cfg, out, pm=make_plugin_manager([Clock()]))


def run_trl(side: str, point: Point, models: Path, out: Path, clock: StepClock) -> None:
    """TRL's DistillationTrainer or GKDTrainer for ``point.warmup + point.steps`` steps."""
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback

    class Clock(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            clock.ends.append(time.perf_counter())
            clock.stages.append({"sample": sampled.pop() if sampled else 0.0})

    sampled: list[float] = []

    def timed(fn: Any) -> Any:
        """``fn`` timed as the step's sampling stage."""

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            result = fn(*args, **kwargs)
            sampled.append(time.perf_counter() - start)
            return result

        return wrapper

    def counted(fn: Any, completion_mask: Any) -> Any:
        """``fn`` with the mean completion length of its answer recorded."""

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            result = fn(*args, **kwargs)
            clock.tokens.append(float(completion_mask(result).sum(1).float().mean()))
            return result

        return wrapper

    tokenizer = AutoTokenizer.from_pretrained(models / "student")
    steps = point.warmup + point.steps
    rows = arithmetic_prompts(point.prompts * steps)
    common: dict[str, Any] = dict(
        output_dir=str(out),
        per_device_train_batch_size=point.prompts,
        gradient_accumulation_steps=1,
        max_steps=steps,
        learning_rate=LR,
        lr_scheduler_type=LR_SCHEDULE,
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        optim="adamw_torch_fused",
        gradient_checkpointing=False,  # TRL defaults to True; opd-core does not checkpoint
        temperature=1.0,
        beta=1.0,
        use_cpu=True,
        bf16=False,
        report_to="none",
        save_strategy="no",
        logging_steps=10**6,
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
    )
    student, teacher = str(models / "student"), str(models / "teacher")
    if side == "trl-distillation":
        from trl import DistillationConfig, DistillationTrainer

        dataset = Dataset.from_list(
            [{"prompt": [{"role": "user", "content": r["question"]}]} for r in rows]
        )
        trainer: Any = DistillationTrainer(
            model=student,
            teacher_model=teacher,
            args=DistillationConfig(
                **common, max_completion_length=point.new_tokens, top_p=1.0, top_k=0
            ),
            train_dataset=dataset,
            processing_class=tokenizer,
            callbacks=[Clock()],
        )
        trainer._generate = timed(trainer._generate)
        trainer._generate_and_score_completions = counted(
            trainer._generate_and_score_completions, lambda out: out["completion_mask"]
        )
    else:
        from transformers import AutoModelForCausalLM
        from trl.experimental.gkd import GKDConfig, GKDTrainer

        dataset = Dataset.from_list(
            [
                {
                    "messages": [
                        {"role": "user", "content": r["question"]},
                        {"role": "assistant", "content": r["answer"]},
                    ]
                }
                for r in rows
            ]
        )
        trainer = GKDTrainer(
            model=AutoModelForCausalLM.from_pretrained(student, dtype=torch.float32),
            teacher_model=AutoModelForCausalLM.from_pretrained(teacher, dtype=torch.float32),
            args=GKDConfig(**common, lmbda=1.0, max_new_tokens=point.new_tokens, max_length=2048),
            train_dataset=dataset,
            processing_class=tokenizer,
            callbacks=[Clock()],
        )
        trainer.generate_on_policy_outputs = counted(
            timed(trainer.generate_on_policy_outputs), lambda out: out[2] != -100
        )
    clock.ends = [time.perf_counter()]
    trainer.train()


def worker(side: str, point: Point, models: Path, out: Path, threads: int) -> dict[str, Any]:
    """Run one side in this process; its step times, stages and peak RSS."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    clock = StepClock()
    if side == "opd-core":
        run_opd(point, models, out, clock)
    else:
        run_trl(side, point, models, out, clock)
    timed = clock.stages[point.warmup :]
    stage_names = sorted({name for stages in timed for name in stages})
    return {
        "step_s": clock.step_times(point.warmup),
        "stages_s": {n: statistics.median(s.get(n, 0.0) for s in timed) for n in stage_names},
        "completion_tokens": statistics.median(clock.tokens[point.warmup :]),
        "flops_per_step": statistics.median(clock.flops[point.warmup :]) if clock.flops else None,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def matmul_peak(threads: int, seconds: float = 3.0) -> float:
    """Best fp32 matmul rate (FLOP/s) on ``threads`` threads over a few square sizes."""
    import torch

    torch.set_num_threads(threads)
    best = 0.0
    for n in (512, 1024, 2048):
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b  # warm-up
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 3:
            a @ b
            calls += 1
        best = max(best, 2.0 * n**3 * calls / (time.perf_counter() - start))
    return best


# ------------------------------------------------------------------------ orchestration


def spawn(
    args: list[str],
    threads: int,
    label: str,
    log: Path,
    script: str = __file__,
    python: str = sys.executable,
) -> dict[str, Any]:
    """Run ``script --worker ...`` (this file by default) with ``python`` in a fresh process;
    its JSON answer."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_VERBOSITY": "error",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins"), str(ROOT / "benchmarks")]),
    }
    answer = log.with_suffix(".json")
    command = [python, script, "--worker", *args, "--answer", str(answer)]
    tag = Path(script).stem
    started = time.perf_counter()
    with open(log, "w") as handle:
        done = subprocess.run(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SystemExit(f"[{tag}] {label} failed (exit {done.returncode}); see {log}")
    result = dict(json.loads(answer.read_text()))
    steps = ", ".join(f"{s:.2f}" for s in result.get("step_s", []))
    print(
        f"[{tag}] {label}: {time.perf_counter() - started:.0f} s"
        + (f", step times {steps}" if steps else ""),
        flush=True,
    )
    return result


def slug(name: str) -> str:
    """``name`` as a folder name."""
    return "".join(c if c.isalnum() else "_" for c in name)


def measure(point: Point, work: Path, threads: int) -> dict[str, Any]:
    """Every side of ``point``, interleaved over its repeats (order rotated each repeat)."""
    models = work / "models" / slug(point.name.split(",")[0])
    models.mkdir(parents=True, exist_ok=True)
    info = build_models(models, point.student, point.teacher)
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    for repeat in range(point.repeats):
        order = SIDES[repeat % len(SIDES) :] + SIDES[: repeat % len(SIDES)]
        for side in order:
            label = f"{point.name} | {side} | repeat {repeat + 1}/{point.repeats}"
            out = work / "runs" / f"{slug(point.name)}_{side}_{repeat}"
            shutil.rmtree(out, ignore_errors=True)  # a run folder with checkpoints is refused
            out.mkdir(parents=True)
            spec = json.dumps(dataclasses.asdict(point))
            runs[side].append(
                spawn(
                    ["--side", side, "--point", spec, "--models", str(models)]
                    + ["--out", str(out / "run"), "--threads", str(threads)],
                    threads,
                    label,
                    out / "worker.log",
                )
            )
    per_repeat = {side: [statistics.median(r["step_s"]) for r in runs[side]] for side in SIDES}
    sides = {
        side: {
            "s_per_step": statistics.median(per_repeat[side]),
            "s_per_step_per_repeat": per_repeat[side],
            "stages_s": runs[side][-1]["stages_s"],
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs[side]),
            "completion_tokens": runs[side][-1]["completion_tokens"],
        }
        for side in SIDES
    }
    ratios = {
        side: [t / o for t, o in zip(per_repeat[side], per_repeat["opd-core"], strict=True)]
        for side in TRL_SIDES
    }
    return {
        "point": dataclasses.asdict(point),
        "models": info,
        "sides": sides,
        "ratios_per_pair": ratios,
        "speedup": {side: statistics.median(ratios[side]) for side in TRL_SIDES},
        "flops_per_step": runs["opd-core"][-1]["flops_per_step"],
    }


def report(record: dict[str, Any], folder: Path) -> None:
    """Write ``performance.{json,md}`` into ``folder`` and print the table."""
    main = record["main"]
    peak = record["matmul_peak_flops"]
    opd = main["sides"]["opd-core"]
    flops = main["flops_per_step"]
    floor = flops / peak
    faster_trl = min(main["sides"][s]["s_per_step"] for s in TRL_SIDES)
    record.update(
        {
            "speedup_vs_trl_distillation": main["speedup"]["trl-distillation"],
            "speedup_vs_trl_gkd": main["speedup"]["trl-gkd"],
            "floor_s": floor,
            "opd_core_over_floor": opd["s_per_step"] / floor,
            "over_floor": {side: main["sides"][side]["s_per_step"] / floor for side in SIDES},
            "met": {
                "speedup_vs_faster_trl": faster_trl / opd["s_per_step"]
                >= TARGETS["speedup_vs_faster_trl"],
                "floor_ratio": opd["s_per_step"] / floor <= TARGETS["floor_ratio"],
                "ahead_at_every_scaling_point": all(
                    min(p["speedup"].values()) > 1.0 for p in [main, *record["scaling"]]
                ),
                "peak_rss_not_above_trl": opd["peak_rss_mb"]
                <= min(main["sides"][s]["peak_rss_mb"] for s in TRL_SIDES),
            },
            "targets": TARGETS,
        }
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "performance.json").write_text(json.dumps(record, indent=1) + "\n")
    point = main["point"]
    info = main["models"]
    load = record["load_average_before_after"]
    lines = [
        "# opd-core against TRL at equal work",
        "",
        f"Produced by `{record['command']}` ({record['threads']} threads, torch "
        f"{record['versions']['torch']}, transformers {record['versions']['transformers']}, trl "
        f"{record['versions']['trl']}; load average {load[0]:.1f} before, {load[1]:.1f} after; "
        f"{record['wall_s'] / 60:.1f} min). Random-init Qwen3 student "
        f"{info['student_params'] / 1e6:.1f}M and teacher {info['teacher_params'] / 1e6:.1f}M "
        f"parameters (vocabulary {info['vocab']}), {point['prompts']} prompts x 1 sample x "
        f"{point['new_tokens']} new tokens per step, fp32, fused AdamW; {point['repeats']} "
        f"repeats with the order of the sides rotated, {point['steps']} timed steps each after "
        f"{point['warmup']} warm-up steps.",
        "",
        "| side | s/step (median of repeats) | TRL / opd-core, median of pairs | x floor | "
        "peak RSS | completion tokens (mean) |",
        "|---|---|---|---|---|---|",
    ]
    for side in SIDES:
        s = main["sides"][side]
        ratio = f"{main['speedup'][side]:.2f}" if side in TRL_SIDES else "1"
        lines.append(
            f"| {side} | {s['s_per_step']:.2f} | {ratio} | {s['s_per_step'] / floor:.2f} | "
            f"{s['peak_rss_mb']:.0f} MB | "
            f"{s['completion_tokens']:.1f} |"
        )
    lines += [
        "",
        "Stages (s, median over the last repeat's timed steps; TRL scores with the teacher "
        "inside its update): "
        + "; ".join(
            f"{side}: "
            + ", ".join(f"{n} {t:.2f}" for n, t in sorted(main["sides"][side]["stages_s"].items()))
            for side in SIDES
        ),
        "",
        f"FLOPs per step (opd-core's ledger): {flops / 1e9:.3g} GFLOP; fp32 matmul peak measured "
        f"in this run: {peak / 1e9:.0f} GFLOP/s; floor {floor:.2f} s; opd-core at "
        f"{opd['s_per_step'] / floor:.2f}x the floor. The floor bounds every side: TRL samples, "
        "scores and trains the same tokens (GKD also applies both LM heads at prompt positions), "
        "so no side can be faster than a TRL side by more than that side's 'x floor'.",
        "",
        "Scaling (one repeat unless stated; same sampled tokens per step at each length):",
        "",
        "| point | prompts x tokens | "
        + " | ".join(f"{s} s/step" for s in SIDES)
        + " | TRL distillation / opd-core | TRL GKD / opd-core |",
        "|---|---|" + "---|" * (len(SIDES) + 2),
    ]
    for p in [main, *record["scaling"]]:
        cells = " | ".join(f"{p['sides'][s]['s_per_step']:.2f}" for s in SIDES)
        lines.append(
            f"| {p['point']['name']} | {p['point']['prompts']} x {p['point']['new_tokens']} | "
            f"{cells} | {p['speedup']['trl-distillation']:.2f} | {p['speedup']['trl-gkd']:.2f} |"
        )
    lines += [
        "",
        "Targets: "
        + ", ".join(f"{name} {'yes' if ok else 'NO'}" for name, ok in record["met"].items()),
        "",
    ]
    (folder / "performance.md").write_text("\n".join(lines))
    print("\n".join(lines))


def versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("torch", "transformers", "trl")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny models: check the script")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per side")
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "vs_trl")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--side", help=argparse.SUPPRESS)
    parser.add_argument("--point", help=argparse.SUPPRESS)
    parser.add_argument("--models", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--answer", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if importlib.util.find_spec("trl") is None:
        raise SystemExit("benchmarks/vs_trl.py compares against TRL: run `pip install trl` first.")
    if args.worker:
        if args.side == "peak":
            answer: dict[str, Any] = {"flops": matmul_peak(args.threads)}
        else:
            point = Point.from_json(args.point)
            answer = worker(args.side, point, args.models, args.out, args.threads)
        args.answer.write_text(json.dumps(answer))
        return
    load_before = os.getloadavg()[0]
    if load_before > 1.0:
        print(f"[vs_trl] warning: load average {load_before:.1f}; timings will be inflated")
    started = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    main_point, scaling = plan(args.quick)
    peak = spawn(
        ["--side", "peak", "--threads", str(args.threads)],
        args.threads,
        "matmul peak",
        args.work / "peak.log",
    )["flops"]
    record: dict[str, Any] = {
        "command": "python benchmarks/vs_trl.py" + (" --quick" if args.quick else ""),
        "threads": args.threads,
        "versions": versions(),
        "matmul_peak_flops": peak,
        "main": measure(main_point, args.work, args.threads),
        "scaling": [measure(p, args.work, args.threads) for p in scaling],
    }
    record["wall_s"] = time.perf_counter() - started
    record["load_average_before_after"] = (load_before, os.getloadavg()[0])
    report(record, args.work / "results" if args.quick else RESULTS)


if __name__ == "__main__":
    main()
