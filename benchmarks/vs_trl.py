"""opd-core against TRL's on-policy distillation trainers at equal work, side by side.

    python benchmarks/vs_trl.py            # about 12 min on 2 quiet CPU cores
    python benchmarks/vs_trl.py --quick    # tiny models, a few seconds a side (checks the script)
    python benchmarks/vs_trl.py --profile "40M/150M, 512 tokens"   # where opd-core's step goes

Needs TRL (``pip install trl``); it installs nothing. Each side trains the same random-init Qwen3
student against the same random-init Qwen3 teacher (one tokenizer) on the arithmetic task's
prompts: as many per step, drawn from the same pool, one sample each, the same new tokens (the
tokenizer's EOS is a token the models cannot emit, so every completion runs to the limit),
temperature 1, fp32 (one point bf16), fused AdamW at the same learning rate, gradient clipping
at 1, the same threads, one micro-batch per step:

- ``opd-core``: ``objective=opd`` (advantage=reverse_kl, loss=importance_sampling),
  sampler=hf, teacher=hf;
- ``trl-distillation``: ``trl.DistillationTrainer`` at ``beta=1`` (reverse KL);
- ``trl-gkd``: ``trl.experimental.gkd.GKDTrainer`` at ``lmbda=1`` (always on-policy), ``beta=1``.

Every side runs in its own process (so its peak RSS is its own), warm-up steps are left out, the
sides are interleaved and repeated with their order rotated, and each repeat's step times give
one TRL/opd-core ratio per pair; the summary is the median of those ratios. The same run
measures this machine's fp32 matmul peak, so the FLOPs the ledger counts per step give a floor.
A scaling table adds a larger model pair and longer completions (one repeat, fewer steps; at
512 tokens fewer prompts, so that a pair samples the same tokens per step at both lengths).
Real-length points end at the natural EOS: the demo's trained pair on its arithmetic prompts,
and SmolLM2-135M-Instruct with a copy of itself as the teacher on chat prompts of up to 256
tokens, in fp32 and in bf16 (opd-core ``train.precision=bf16``, TRL ``bf16=True``).
Results: ``docs/results/vs_trl.{md,json}`` and, from ``--profile``, ``vs_trl_profile_<point>.md``
and ``.json`` beside them (``--quick`` writes under ``outputs/vs_trl/`` instead). Time it on a
quiet machine (``uptime`` first): a figure measured under load is not a figure.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import statistics
import time
from pathlib import Path
from typing import Any

from bench_common.models import PAIRS, build_models, demo_models, smollm2_models
from bench_common.paths import OUTPUTS, ResultFiles
from bench_common.prompts import CHAT_PROMPTS
from bench_common.report import load_text, markdown_table, produced_by, targets_line, write_report
from bench_common.runs import (
    command_line,
    load_average,
    package_versions,
    spawn_worker,
    warn_if_busy,
)
from bench_common.timing import (
    LR,
    LR_SCHEDULE,
    Point,
    StepClock,
    fresh_dir,
    opd_overrides,
    pair_ratios,
    repeat_medians,
    rotations,
    run_opd,
    slug,
)

RESULTS = ResultFiles.of(__file__)
SIDES = ("opd-core", "trl-distillation", "trl-gkd")
TRL_SIDES = SIDES[1:]
PROFILE_TOP = 25
"""Operators listed in the profile report."""
TARGETS = {
    "speedup_vs_faster_trl": 1.3,
    "floor_ratio": 1.5,
    "real_length_speedup_vs_faster_trl": 1.3,
    "fixed_length_speedup_vs_faster_trl": 1.0,
    "bf16_speedup": 1.8,
}


def plan(quick: bool) -> tuple[Point, list[Point], list[Point]]:
    """The main comparison, the scaling table's other fixed-length points (2048 sampled tokens
    a step at 10M/50M, 1024 at 40M/150M, whatever the length), and the real-length points
    (completions that end at their natural EOS; fp32 and bf16)."""
    if quick:
        main = Point("tiny, 16 tokens", *PAIRS["tiny"], 4, 16, warmup=1, steps=2, repeats=2)
        smol = Point("SmolLM2-135M chat, fp32", None, None, 2, 16, 1, 1, 1, source="smollm2")
        return (
            main,
            [
                dataclasses.replace(
                    main, name="tiny, 64 tokens", prompts=1, new_tokens=64, repeats=1
                )
            ],
            [
                Point("demo, natural EOS", None, None, 8, 64, 1, 1, 1, source="demo"),
                smol,
                dataclasses.replace(smol, name="SmolLM2-135M chat, bf16", precision="bf16"),
            ],
        )
    main = Point("10M/50M, 64 tokens", *PAIRS["10M/50M"], 32, 64, warmup=1, steps=4, repeats=3)
    scaling = [
        Point("10M/50M, 512 tokens", *PAIRS["10M/50M"], 4, 512, warmup=1, steps=2, repeats=1),
        Point("40M/150M, 64 tokens", *PAIRS["40M/150M"], 16, 64, warmup=1, steps=1, repeats=1),
        Point("40M/150M, 512 tokens", *PAIRS["40M/150M"], 2, 512, warmup=1, steps=1, repeats=1),
        dataclasses.replace(main, name="10M/50M, 64 tokens, bf16", precision="bf16", repeats=1),
    ]
    smol = Point("SmolLM2-135M chat, fp32", None, None, 8, 256, 1, 2, 1, source="smollm2")
    real = [
        Point("demo, natural EOS", None, None, 128, 64, 1, 4, 2, source="demo"),
        smol,
        dataclasses.replace(smol, name="SmolLM2-135M chat, bf16", precision="bf16"),
    ]
    return main, scaling, real


# ------------------------------------------------------------------------ the worker sides


def prompt_rows(point: Point, count: int) -> list[dict[str, str]]:
    """The ``count`` prompts both sides train on, as questions and reference answers: the
    arithmetic task's first training problems, or the chat prompts cycled (opd-core reads the
    same ones from the pair's ``prompts.jsonl``)."""
    if point.source == "smollm2":
        return [
            {"question": CHAT_PROMPTS[i % len(CHAT_PROMPTS)], "answer": "OK."} for i in range(count)
        ]
    from opd_arith.plugin import ArithmeticTask

    prompts = ArithmeticTask(train_size=count, eval_size=1).opd_task_prompts(split="train")
    return [
        {"question": p.messages[0]["content"], "answer": p.metadata.get("solution", "")}
        for p in prompts
    ]


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
    rows = prompt_rows(point, point.prompts * steps)
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
        bf16=point.precision == "bf16",  # autocast, TRL's setting for bf16 on any device
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
    clock.start()
    trainer.train()


def worker(side: str, point: Point, models: Path, out: Path, threads: int) -> dict[str, Any]:
    """Run one side in this process; its step times, stages and peak RSS."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    clock = StepClock()
    if side == "opd-core":
        run_opd(opd_overrides(point, models), out, clock)
    else:
        run_trl(side, point, models, out, clock)
    return clock.summary(slice(point.warmup, None))


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


def point_models(point: Point, work: Path) -> tuple[Path, dict[str, Any]]:
    """The folder of ``point``'s student and teacher (built or copied on first use), and their
    sizes."""
    models = work / "models" / slug(point.name.split(",")[0])
    models.mkdir(parents=True, exist_ok=True)
    if point.source == "demo":
        return models, demo_models(models)
    if point.source == "smollm2":
        rows = point.prompts * (point.warmup + point.steps)
        return models, smollm2_models(models, CHAT_PROMPTS, rows)
    assert point.student is not None and point.teacher is not None
    return models, build_models(models, point.student, point.teacher)


def profile_worker(point: Point, models: Path, out: Path, threads: int) -> dict[str, Any]:
    """opd-core's side of ``point`` under ``torch.profiler`` (CPU ops), the warm-up steps left
    out; the operators by self CPU time and the step's stage seconds."""
    import torch
    from torch.profiler import ProfilerActivity, profile, schedule

    from opd_core import hookimpl

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    clock = StepClock()
    plan_ = schedule(wait=point.warmup, warmup=0, active=point.steps, repeat=1)
    with profile(activities=[ProfilerActivity.CPU], schedule=plan_) as profiler:

        class Step:
            @hookimpl
            def opd_step_end(self, ctx: object, step: int, metrics: dict[str, float]) -> None:
                profiler.step()

        run_opd(opd_overrides(point, models), out, clock, extra_plugins=[Step()])
    events = profiler.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:PROFILE_TOP]
    return {
        **clock.summary(slice(point.warmup, None)),
        "profiled_self_cpu_s": total,
        "operators": [
            {"name": e.key, "self_cpu_s": e.self_cpu_time_total / 1e6, "calls": e.count}
            for e in top
        ],
    }


def profile_report(point: Point, answer: dict[str, Any], command: str, threads: int) -> list[str]:
    """The profile's Markdown: the stages, then the operators that took the most time."""
    total = answer["profiled_self_cpu_s"]
    stages = ", ".join(f"{n} {t:.2f}" for n, t in sorted(answer["stages_s"].items()))
    return [
        f"# Where opd-core's step goes at the point '{point.name}'",
        "",
        produced_by(command, f"{threads} threads", "torch.profiler, CPU activities")
        + f". {point.prompts} prompts x {point.new_tokens} tokens, `objective=opd`, the same "
        f"overrides as `benchmarks/vs_trl.py`'s opd-core side; {point.warmup} warm-up step(s) "
        f"left out, {point.steps} profiled (the profiler's own overhead included).",
        "",
        f"Stages (s, median of the profiled steps): {stages}. Self CPU time of all operators: "
        f"{total:.2f} s.",
        "",
        *markdown_table(
            "operator | self CPU s | share | calls",
            [
                f"`{o['name']}` | {o['self_cpu_s']:.3f} | {o['self_cpu_s'] / total:.1%} | "
                f"{o['calls']}"
                for o in answer["operators"]
            ],
        ),
        "",
    ]


def measure(point: Point, work: Path, threads: int) -> dict[str, Any]:
    """Every side of ``point``, interleaved over its repeats (order rotated each repeat)."""
    models, info = point_models(point, work)
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    for repeat, side in rotations(SIDES, point.repeats):
        label = f"{point.name} | {side} | repeat {repeat + 1}/{point.repeats}"
        out = fresh_dir(work / "runs" / f"{slug(point.name)}_{side}_{repeat}")
        spec = json.dumps(dataclasses.asdict(point))
        args = ["--side", side, "--point", spec, "--models", str(models)]
        args += ["--out", str(out / "run"), "--threads", str(threads)]
        runs[side].append(spawn_worker(__file__, args, threads, label, out / "worker.log"))
    per_repeat = {side: repeat_medians(runs[side]) for side in SIDES}
    sides = {
        side: {
            "s_per_step": statistics.median(per_repeat[side]),
            "s_per_step_per_repeat": per_repeat[side],
            "stages_s": runs[side][-1]["stages_s"],
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs[side]),
            "completion_tokens": statistics.fmean(r["completion_tokens"] for r in runs[side]),
        }
        for side in SIDES
    }
    ratios = {side: pair_ratios(per_repeat[side], per_repeat["opd-core"]) for side in TRL_SIDES}
    per_token = {s: sides[s]["s_per_step"] / sides[s]["completion_tokens"] for s in SIDES}
    return {
        "point": dataclasses.asdict(point),
        "models": info,
        "sides": sides,
        "ratios_per_pair": ratios,
        "speedup": {side: statistics.median(ratios[side]) for side in TRL_SIDES},
        "speedup_vs_trl_distillation": statistics.median(ratios["trl-distillation"]),
        "speedup_vs_trl_gkd": statistics.median(ratios["trl-gkd"]),
        "speedup_per_completion_token": {
            side: per_token[side] / per_token["opd-core"] for side in TRL_SIDES
        },
        "flops_per_step": runs["opd-core"][-1]["flops_per_step"],
    }


def judge(record: dict[str, Any]) -> None:
    """Add the headline numbers to ``record``: speedups, the FLOPs floor, the targets met."""
    main = record["main"]
    opd = main["sides"]["opd-core"]
    floor = main["flops_per_step"] / record["matmul_peak_flops"]
    faster_trl = min(main["sides"][s]["s_per_step"] for s in TRL_SIDES)
    smol = {p["point"]["precision"]: p for p in record["real"] if p["point"]["source"] == "smollm2"}
    record["bf16_speedup"] = (
        smol["fp32"]["sides"]["opd-core"]["s_per_step"]
        / smol["bf16"]["sides"]["opd-core"]["s_per_step"]
        if {"fp32", "bf16"} <= set(smol)
        else None
    )
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
                "fixed_length_speedup_vs_faster_trl": all(
                    faster_trl_speedup(p) >= TARGETS["fixed_length_speedup_vs_faster_trl"]
                    for p in [main, *record["scaling"]]
                ),
                "real_length_speedup_vs_faster_trl": all(
                    faster_trl_speedup(p) >= TARGETS["real_length_speedup_vs_faster_trl"]
                    for p in record["real"]
                ),
                "real_length_speedup_per_token_vs_faster_trl": all(
                    min(p["speedup_per_completion_token"].values())
                    >= TARGETS["real_length_speedup_vs_faster_trl"]
                    for p in record["real"]
                ),
                "bf16_speedup": record["bf16_speedup"] is not None
                and record["bf16_speedup"] >= TARGETS["bf16_speedup"],
                "peak_rss_not_above_trl_anywhere": all(
                    p["sides"]["opd-core"]["peak_rss_mb"]
                    <= min(p["sides"][s]["peak_rss_mb"] for s in TRL_SIDES)
                    for p in [main, *record["scaling"], *record["real"]]
                ),
            },
            "targets": TARGETS,
        }
    )


def faster_trl_speedup(point: dict[str, Any]) -> float:
    """opd-core's speedup over the faster TRL trainer at ``point`` (median of pair ratios)."""
    return float(min(point["speedup"].values()))


def real_row(point: dict[str, Any]) -> str:
    """One real-length point's line: step times, ratios, completion lengths and peak RSS."""
    sides = point["sides"]
    times = " | ".join(f"{sides[s]['s_per_step']:.2f}" for s in SIDES)
    tokens = " / ".join(f"{sides[s]['completion_tokens']:.0f}" for s in SIDES)
    rss = " / ".join(f"{sides[s]['peak_rss_mb']:.0f}" for s in SIDES)
    per_token = point["speedup_per_completion_token"]
    return (
        f"{point['point']['name']} | {point['point']['prompts']} x <= "
        f"{point['point']['new_tokens']} | {times} | "
        f"{point['speedup']['trl-distillation']:.2f} | {point['speedup']['trl-gkd']:.2f} | "
        f"{tokens} | {per_token['trl-distillation']:.2f} | {per_token['trl-gkd']:.2f} | {rss}"
    )


def side_row(side: str, main: dict[str, Any], floor: float) -> str:
    """One side's line of the main table."""
    s = main["sides"][side]
    ratio = f"{main['speedup'][side]:.2f}" if side in TRL_SIDES else "1"
    return (
        f"{side} | {s['s_per_step']:.2f} | {ratio} | {s['s_per_step'] / floor:.2f} | "
        f"{s['peak_rss_mb']:.0f} MB | {s['completion_tokens']:.1f}"
    )


def scaling_row(point: dict[str, Any]) -> str:
    """One point's line of the scaling table."""
    times = " | ".join(f"{point['sides'][s]['s_per_step']:.2f}" for s in SIDES)
    return (
        f"{point['point']['name']} | {point['point']['prompts']} x "
        f"{point['point']['new_tokens']} | {times} | "
        f"{point['speedup']['trl-distillation']:.2f} | {point['speedup']['trl-gkd']:.2f}"
    )


def markdown(record: dict[str, Any]) -> list[str]:
    """The report: the main comparison, its stages and floor, the scaling table, targets."""
    main = record["main"]
    peak, floor = record["matmul_peak_flops"], record["floor_s"]
    opd = main["sides"]["opd-core"]
    point, info, v = main["point"], main["models"], record["versions"]
    stages = "; ".join(
        f"{side}: "
        + ", ".join(f"{n} {t:.2f}" for n, t in sorted(main["sides"][side]["stages_s"].items()))
        for side in SIDES
    )
    return [
        "# opd-core against TRL at equal work",
        "",
        produced_by(
            record["command"],
            f"{record['threads']} threads, torch {v['torch']}, transformers "
            f"{v['transformers']}, trl {v['trl']}",
            load_text(record["load_average_before_after"]),
            f"{record['wall_s'] / 60:.1f} min",
        )
        + f". Random-init Qwen3 student {info['student_params'] / 1e6:.1f}M and teacher "
        f"{info['teacher_params'] / 1e6:.1f}M parameters (vocabulary {info['vocab']}), "
        f"{point['prompts']} prompts x 1 sample x {point['new_tokens']} new tokens per step, "
        f"fp32, fused AdamW; {point['repeats']} repeats with the order of the sides rotated, "
        f"{point['steps']} timed steps each after {point['warmup']} warm-up steps.",
        "",
        *markdown_table(
            "side | s/step (median of repeats) | TRL / opd-core, median of pairs | x floor | "
            "peak RSS | completion tokens (mean)",
            [side_row(side, main, floor) for side in SIDES],
        ),
        "",
        "Stages (s, median over the last repeat's timed steps; TRL scores with the teacher "
        f"inside its update): {stages}",
        "",
        f"FLOPs per step (opd-core's ledger): {main['flops_per_step'] / 1e9:.3g} GFLOP; fp32 "
        f"matmul peak measured in this run: {peak / 1e9:.0f} GFLOP/s; floor {floor:.2f} s; "
        f"opd-core at {opd['s_per_step'] / floor:.2f}x the floor. The floor bounds every side: "
        "TRL samples, scores and trains the same tokens (GKD also applies both LM heads at "
        "prompt positions), so no side can be faster than a TRL side by more than that side's "
        "'x floor'.",
        "",
        "Scaling (one repeat unless stated; same sampled tokens per step at each length):",
        "",
        *markdown_table(
            "point | prompts x tokens | "
            + " | ".join(f"{s} s/step" for s in SIDES)
            + " | TRL distillation / opd-core | TRL GKD / opd-core",
            [scaling_row(p) for p in [main, *record["scaling"]]],
        ),
        "",
        "Real lengths: completions end at their natural EOS (at most the tokens shown); each "
        "side samples its own, so the mean completion tokens per step (opd-core / TRL "
        "distillation / TRL GKD) are beside the times, and the ratios are given per step and "
        "per completion token (seconds per step over mean completion tokens: where the sides' "
        "lengths differ, neither is equal work; the per-token ratio is the closer). The demo's "
        "trained student and teacher on its arithmetic prompts; SmolLM2-135M-Instruct with a "
        "copy of itself as the teacher "
        f"on {len(CHAT_PROMPTS)} chat prompts (`benchmarks/bench_common/prompts.py`), fp32 and "
        "bf16 (opd-core `train.precision=bf16`, TRL `bf16=True`).",
        "",
        *markdown_table(
            "point | prompts x tokens | "
            + " | ".join(f"{s} s/step" for s in SIDES)
            + " | TRL distillation / opd-core | TRL GKD / opd-core | completion tokens "
            "| per completion token: TRL distillation / opd-core | per completion token: TRL "
            "GKD / opd-core | peak RSS MB",
            [real_row(p) for p in record["real"]],
        ),
        "",
        "opd-core at the SmolLM2 point, "
        + (
            f"fp32 s/step over bf16 s/step {record['bf16_speedup']:.2f} (>1: bf16 is faster)"
            if record["bf16_speedup"] is not None
            else "not measured"
        )
        + ".",
        "",
        targets_line(record["met"]),
        "",
    ]


def profile_point(args: argparse.Namespace, points: list[Point]) -> None:
    """``--profile``: one worker process profiles opd-core at the named point."""
    by_name = {p.name: p for p in points}
    if args.profile not in by_name:
        raise SystemExit(f"--profile: no point named {args.profile!r}; one of: {list(by_name)}")
    point = by_name[args.profile]
    models, _ = point_models(point, args.work)
    out = fresh_dir(args.work / "runs" / f"profile_{slug(point.name)}")
    flags = ["--side", "profile", "--point", json.dumps(dataclasses.asdict(point))]
    flags += ["--models", str(models), "--out", str(out / "run"), "--threads", str(args.threads)]
    answer = spawn_worker(__file__, flags, args.threads, "profile", out / "worker.log")
    given = ["--profile", args.profile] + (["--quick"] if args.quick else [])
    command = command_line(__file__, *given)
    files = RESULTS.part(f"profile_{slug(point.name).lower().strip('_')}")
    if args.quick:
        files = files.under(args.work / "results")
    write_report(files, profile_report(point, answer, command, args.threads), answer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny models: check the script")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per side")
    parser.add_argument("--work", type=Path, default=OUTPUTS / "vs_trl")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--side", help=argparse.SUPPRESS)
    parser.add_argument("--point", help=argparse.SUPPRESS)
    parser.add_argument("--models", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--answer", type=Path, help=argparse.SUPPRESS)
    parser.add_argument(
        "--profile",
        metavar="POINT",
        help="instead of the comparison, profile opd-core's side of the point of this name "
        "(e.g. '40M/150M, 512 tokens') into the results folder's vs_trl_profile_<point>.md",
    )
    args = parser.parse_args()
    if importlib.util.find_spec("trl") is None:
        raise SystemExit("benchmarks/vs_trl.py compares against TRL: run `pip install trl` first.")
    if args.worker:
        if args.side == "peak":
            answer: dict[str, Any] = {"flops": matmul_peak(args.threads)}
        elif args.side == "profile":
            point = Point.from_json(args.point)
            answer = profile_worker(point, args.models, args.out, args.threads)
        else:
            point = Point.from_json(args.point)
            answer = worker(args.side, point, args.models, args.out, args.threads)
        args.answer.write_text(json.dumps(answer))
        return
    load_before = warn_if_busy("vs_trl")
    started = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    main_point, scaling, real = plan(args.quick)
    if args.profile:
        profile_point(args, [main_point, *scaling, *real])
        return
    peak_args = ["--side", "peak", "--threads", str(args.threads)]
    peak = spawn_worker(__file__, peak_args, args.threads, "matmul peak", args.work / "peak.log")
    record: dict[str, Any] = {
        "command": command_line(__file__, *(["--quick"] if args.quick else [])),
        "threads": args.threads,
        "versions": package_versions("torch", "transformers", "trl"),
        "matmul_peak_flops": peak["flops"],
        "main": measure(main_point, args.work, args.threads),
        "scaling": [measure(p, args.work, args.threads) for p in scaling],
        "real": [measure(p, args.work, args.threads) for p in real],
    }
    record["wall_s"] = time.perf_counter() - started
    record["load_average_before_after"] = (load_before, load_average())
    judge(record)
    files = RESULTS.under(args.work / "results") if args.quick else RESULTS
    write_report(files, markdown(record), record)


if __name__ == "__main__":
    main()
