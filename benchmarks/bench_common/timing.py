"""One timed point of opd-core: its size and step counts, the overrides that run it at equal
work with another trainer, a per-step clock, and the order of interleaved repeats."""

from __future__ import annotations

import json
import resource
import shutil
import statistics
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bench_common.inprocess import run_in_process
from bench_common.models import Shape

LR = 1e-5
LR_SCHEDULE = "constant"
T = TypeVar("T")


@dataclass(frozen=True)
class Point:
    """One measured setting: a student/teacher pair, batch, completion length and step counts."""

    name: str
    student: Shape | None
    teacher: Shape | None
    """Random-init sizes (``source="random"``; None for trained models)."""
    prompts: int
    new_tokens: int
    warmup: int
    steps: int
    repeats: int
    source: str = "random"
    """``random``: a random-init pair of the given shapes whose EOS cannot be sampled (every
    completion runs to ``new_tokens``); ``demo``: the demo's trained student and teacher on its
    arithmetic prompts, which end at their natural EOS; ``smollm2``: SmolLM2-135M-Instruct as
    the student and a copy of it as the teacher, on chat prompts (:mod:`bench_common.prompts`)."""
    precision: str = "fp32"
    """``fp32`` or ``bf16`` (opd-core ``train.precision``, TRL ``bf16=True``)."""

    @property
    def fixed_length(self) -> bool:
        return self.source == "random"

    @staticmethod
    def from_json(text: str) -> Point:
        """The point ``json.dumps(dataclasses.asdict(point))`` wrote."""
        fields = json.loads(text)
        shapes = {
            role: None if fields[role] is None else Shape(**fields[role])
            for role in ("student", "teacher")
        }
        return Point(**{**fields, **shapes})


@dataclass
class StepClock:
    """Wall time between consecutive step ends, and what each step reported."""

    ends: list[float] = field(default_factory=lambda: [time.perf_counter()])
    stages: list[dict[str, float]] = field(default_factory=list)
    """Each step's stage seconds (``time/<stage>_s`` without the prefix and suffix)."""
    tokens: list[float] = field(default_factory=list)
    """Mean completion tokens of each step's rollouts."""
    flops: list[float] = field(default_factory=list)
    overlap: list[dict[str, float]] = field(default_factory=list)
    """Each step's ``overlap/*`` metrics (``train.overlap``; empty dicts without)."""

    def start(self) -> None:
        """Time the next step from now."""
        self.ends = [time.perf_counter()]

    def step_times(self) -> list[float]:
        return [b - a for a, b in zip(self.ends, self.ends[1:], strict=False)]

    def summary(self, timed: slice) -> dict[str, Any]:
        """The ``timed`` steps: their times, stage and overlap medians, completion tokens,
        FLOPs per step (None without a ledger) and this process's peak RSS."""
        flops = self.flops[timed]
        return {
            "step_s": self.step_times()[timed],
            "stages_s": medians(self.stages[timed]),
            "overlap": medians(self.overlap[timed]),
            "completion_tokens": statistics.median(self.tokens[timed]),
            "flops_per_step": statistics.median(flops) if flops else None,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }


def medians(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Per name, the median over ``rows`` (0 where a row lacks it)."""
    names = sorted({name for row in rows for name in row})
    return {n: statistics.median(row.get(n, 0.0) for row in rows) for n in names}


def opd_overrides(point: Point, models: Path, steps: int | None = None) -> list[str]:
    """opd-core's side of ``point`` (``objective=opd``, sampler=hf, teacher=hf) for ``steps``
    steps (default ``point.warmup + point.steps``), as command-line overrides."""
    steps = point.warmup + point.steps if steps is None else steps
    if point.source == "smollm2":  # chat prompts (written by bench_common.models), no grader
        task = ["+task=chat", f"task.train.path={models / 'prompts.jsonl'}", "evaluator=[]"]
    else:
        task = ["+task=arithmetic", f"task.train_size={point.prompts * steps}", "task.eval_size=1"]
    return [
        *task,
        "+teacher=hf",
        "objective=opd",
        f"teacher.model.path={models / 'teacher'}",
        f"student.model.path={models / 'student'}",
        f"train.precision={point.precision}",
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
    overrides: Sequence[str], out: Path, clock: StepClock, extra_plugins: Sequence[object] = ()
) -> None:
    """opd-core's trainer on ``overrides`` in this process, every step timed by ``clock``
    (``extra_plugins``: more hook implementations for the run)."""
    from opd_core import hookimpl

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

    clock.start()
    run_in_process(overrides, out, [Clock(), *extra_plugins])


def rotations(sides: Sequence[T], repeats: int) -> Iterator[tuple[int, T]]:
    """``(repeat, side)`` in the order they run: every side once per repeat, the order rotated
    by one each repeat (so no side always runs first or after the same one)."""
    for repeat in range(repeats):
        k = repeat % len(sides)
        for side in [*sides[k:], *sides[:k]]:
            yield repeat, side


def repeat_medians(runs: Sequence[Mapping[str, Any]]) -> list[float]:
    """Each repeat's median step time (the runs of one side, in repeat order)."""
    return [statistics.median(r["step_s"]) for r in runs]


def pair_ratios(slower: Sequence[float], faster: Sequence[float]) -> list[float]:
    """``slower / faster`` of each repeat (>1: ``faster`` is faster)."""
    return [s / f for s, f in zip(slower, faster, strict=True)]


def fresh_dir(path: Path) -> Path:
    """``path`` emptied and created (a run folder with checkpoints is refused)."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def slug(name: str) -> str:
    """``name`` as a folder name."""
    return "".join(c if c.isalnum() else "_" for c in name)
