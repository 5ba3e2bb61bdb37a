"""The demo as plugins: the arithmetic task component and the demo:// model loader."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import TINY_STUDENT
from opd_arith import build, plugin
from opd_arith.build import DemoSpec, build_demo_models
from opd_core import OPDError
from opd_core.modeling import ModelSpec

TINY_SPEC = DemoSpec(
    num_train=200,
    teacher=TINY_STUDENT,
    student=TINY_STUDENT,
    teacher_steps=3,
    student_steps=2,
    batch_size=8,
)


def test_task_prompts_and_grades() -> None:
    task = plugin.ArithmeticTask(train_size=10, eval_size=4)
    prompts = task.opd_task_prompts(split="train")
    assert len(prompts) == 10 and len(task.opd_task_prompts(split="eval")) == 4
    solutions = [p.metadata["solution"] for p in prompts[:2]]
    assert task.opd_grade_completions(prompts=prompts[:2], completions=solutions) == [1.0, 1.0]


def test_an_offset_takes_the_training_prompts_after_the_first_ones() -> None:
    head = plugin.ArithmeticTask(train_size=30, eval_size=4).opd_task_prompts(split="train")
    tail = plugin.ArithmeticTask(train_size=10, eval_size=4, train_offset=30)
    prompts = tail.opd_task_prompts(split="train")
    whole = plugin.ArithmeticTask(train_size=40, eval_size=4).opd_task_prompts(split="train")
    assert [p.id for p in prompts] == [p.id for p in whole[30:]]
    assert [p.messages for p in prompts] == [p.messages for p in whole[30:]]
    assert not {p.messages[0]["content"] for p in prompts} & {
        p.messages[0]["content"] for p in head
    }
    no_offset = plugin.ArithmeticTask(train_size=10, eval_size=4)
    assert tail.opd_task_prompts(split="eval") == no_offset.opd_task_prompts(split="eval")
    with pytest.raises(ValueError, match="train_offset >= 0"):
        plugin.ArithmeticTask(train_offset=-1)


def test_demo_models_build_once_and_load_through_the_hook(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPD_CORE_CACHE", str(tmp_path))
    monkeypatch.setattr(build, "DemoSpec", lambda: TINY_SPEC)  # the loader imports it lazily
    cpu = torch.device("cpu")
    loaded = plugin.opd_load_model(
        spec=ModelSpec("demo://arithmetic/teacher"), role="teacher", device=cpu
    )
    assert loaded is not None and loaded.tokenizer.chat_template
    entries = list((tmp_path / "demo_arithmetic").iterdir())
    assert len(entries) == 1
    stamp = (entries[0] / "teacher" / "config.json").stat().st_mtime_ns
    again = build_demo_models(TINY_SPEC, tmp_path / "demo_arithmetic", progress=False)
    assert (again.teacher_dir / "config.json").stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert (
        plugin.opd_load_model(spec=ModelSpec("Qwen/Qwen3-8B"), role="student", device=cpu) is None
    )
    with pytest.raises(OPDError, match="Unknown demo model"):
        plugin.opd_load_model(
            spec=ModelSpec("demo://arithmetic/oracle"), role="student", device=cpu
        )
