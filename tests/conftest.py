"""Shared fixtures: tiny real models built offline, and configs composed from ``conf/``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from opd_arith.build import Architecture, make_model
from opd_arith.problems import make_problems
from opd_arith.sft import sft
from opd_arith.tokenizer import build_tokenizer
from opd_core import hookimpl
from opd_core.config import CONF_DIR
from opd_core.plugin_manager import make_plugin_manager

ROOT = Path(__file__).resolve().parents[1]

TINY_TEACHER = Architecture(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
)
TINY_STUDENT = Architecture(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=1,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=16,
)


@dataclass(frozen=True)
class TinyModels:
    """Folders holding a briefly trained tiny teacher and a random tiny student (same tokenizer)."""

    teacher: Path
    student: Path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    return build_tiny_models(tmp_path_factory.mktemp("tiny_models"))


def build_tiny_models(
    root: Path,
    teacher_shape: Architecture = TINY_TEACHER,
    student_shape: Architecture = TINY_STUDENT,
) -> TinyModels:
    """Save a briefly trained teacher and a random student of the given shapes under ``root``."""
    torch.manual_seed(0)
    problems = make_problems(400, seed=0)
    tokenizer = build_tokenizer([f"{p.question} {p.solution}" for p in problems])
    teacher = make_model(teacher_shape, tokenizer, seed=0)
    sft(
        teacher,
        tokenizer,
        problems,
        steps=40,
        batch_size=32,
        lr=3e-3,
        seed=0,
        log_every=0,
        progress=False,
    )
    student = make_model(student_shape, tokenizer, seed=1)
    for model, name in ((teacher, "teacher"), (student, "student")):
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    return TinyModels(teacher=root / "teacher", student=root / "student")


def tiny_run_overrides(models: TinyModels, out: Path, steps: int = 3) -> list[str]:
    """Overrides for a seconds-long run on the tiny models, writing into ``out``."""
    return [
        "+task=arithmetic",
        "+teacher=hf",
        f"teacher.model.path={models.teacher}",
        f"student.model.path={models.student}",
        "task.train_size=200",
        "task.eval_size=16",
        f"train.steps={steps}",
        "train.prompts_per_step=8",
        "train.samples_per_prompt=2",
        "train.max_new_tokens=16",
        "eval.max_new_tokens=16",
        "eval.every=0",
        "train.warmup_steps=0",
        "train.lr=1e-3",
        "train.micro_batch_size=8",  # two micro-batches: gradient accumulation is exercised
        "progress=false",
        f"hydra.run.dir={out}",
    ]


def schedule_for_tests(max_new_tokens: int = 12, **train: Any) -> dict[str, Any]:
    """``train`` and ``eval`` of a hand-built ``RunConfig``: the values a schedule has to set
    (they have no default), for a test that samples ``max_new_tokens`` at most."""
    from opd_core.config import EvalConfig, TrainConfig

    required = dict(steps=1, prompts_per_step=1, samples_per_prompt=1, micro_batch_size=1, lr=1e-3)
    return {
        "train": TrainConfig(**{**required, "max_new_tokens": max_new_tokens, **train}),
        "eval": EvalConfig(max_new_tokens=max_new_tokens),
    }


def run_opd_core(overrides: list[str]) -> None:
    """``python -m opd_core`` with ``overrides`` from the repository root, offline; fails with
    the run's stderr."""
    result = subprocess.run(
        [sys.executable, "-m", "opd_core", *overrides],
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]


class StopAtStep:
    """A plugin that interrupts the run when a step ends (as Ctrl-C would); with
    ``train.overlap`` the next step's rollouts are then being sampled in the background."""

    def __init__(self, step: int) -> None:
        self.step = step

    @hookimpl
    def opd_step_end(self, ctx: object, step: int, metrics: object) -> None:
        if step == self.step:
            raise KeyboardInterrupt


def store_plugin_configs() -> None:
    """Every installed plugin's options in Hydra's ConfigStore, as the command line stores them
    before composing (idempotent: a second call stores the same nodes again)."""
    from hydra.core.config_store import ConfigStore

    make_plugin_manager().hook.opd_register_configs.call_historic(
        kwargs={"store": ConfigStore.instance()}
    )


@pytest.fixture
def compose_config() -> Callable[[list[str]], DictConfig]:
    """Compose ``conf/`` with overrides, as the command line would."""

    store_plugin_configs()

    def _compose(overrides: list[str]) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="config", overrides=overrides)

    return _compose
