"""Multi-turn OPD on the calculator task with the cached demo models, as a user runs it: the
student's turns move toward the teacher's, and prefix replay changes what is sampled."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from conftest import run_opd_core
from opd_core.api import read_metrics

BASE = [
    "+task=calculator",
    "+teacher=demo_agent",
    "student=demo_agent",
    "+environment=calculator",
    "schedule=agent",
    "evaluator=[episode_success]",
    "train.prompts_per_step=32",
    "train.micro_batch_size=32",
    "train.warmup_steps=0",
    "progress=false",
]


@pytest.mark.slow
def test_multi_turn_opd_moves_the_student_toward_the_teacher(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_opd_core(
        [*BASE, "train.steps=48", "train.lr=1e-3", "task.eval_size=200", "eval.every=0",
         "eval.teacher=false", f"hydra.run.dir={out}"]
    )  # fmt: skip
    metrics = read_metrics(out / "metrics.jsonl")
    kl = [m["teacher_reverse_kl"] for m in metrics]
    assert all("episode/tool_calls" in m and "episode/invalid_calls" in m for m in metrics)
    assert statistics.mean(m["episode/turns"] for m in metrics) > 2  # calls, then the answer
    summary = json.loads((out / "summary.json").read_text())
    before = summary["student_before"]["success"]
    after = summary["student_after"]["success"]
    # 16 steps at the schedule's lr 2e-3 without warm-up lowered success (36.5% -> 26.5%) while
    # the KL fell; at lr 1e-3, 48 steps, seeds 0-3 gained 8-14.5 points with the KL at 0.5-0.66x.
    assert after >= before + 0.04, (before, after, kl)
    assert statistics.mean(kl[-4:]) < 0.8 * statistics.mean(kl[:4]), kl


@pytest.mark.slow
def test_prefix_replay_opens_training_episodes_after_teacher_turns(tmp_path: Path) -> None:
    turns = {}
    for replay in (0.0, 1.0):
        out = tmp_path / f"replay{replay}"
        run_opd_core(
            [*BASE, "train.steps=2", "task.eval_size=20", "eval.at_start=false",
             "eval.teacher=false", f"environment.prefix_replay={replay}", f"hydra.run.dir={out}"]
        )  # fmt: skip
        metrics = read_metrics(out / "metrics.jsonl")
        replayed = statistics.mean(m["episode/replayed_turns"] for m in metrics)
        turns[replay] = statistics.mean(m["episode/turns"] for m in metrics)
        if replay == 0.0:
            assert replayed == 0.0
        else:  # k uniform in 1..3 calls of the teacher's (those it solved: nearly all)
            assert 1.5 < replayed <= 3.0
    assert turns[1.0] < turns[0.0] - 1  # the student writes only the turns after the prefix
