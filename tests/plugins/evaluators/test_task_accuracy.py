"""task_accuracy: greedy accuracy, or AIME-style mean@k and pass@k over k sampled answers."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import TinyModels
from opd_arith.plugin import ArithmeticTask
from opd_core import GenerationParams, OPDError, Prompt, hookimpl
from opd_core.plugin_manager import make_plugin_manager
from opd_evaluators import TaskAccuracy, accuracy_metrics
from opd_hf.generation import HFGenerator


def test_mean_and_pass_at_k_by_hand() -> None:
    grades = [1.0, 0.0, 0.0, 0.0] + [1.0, 1.0, 1.0, 1.0] + [0.0, 0.0, 0.0, 0.0]
    assert accuracy_metrics(grades, k=4) == {
        "accuracy": pytest.approx(5 / 12),
        "eval_examples": 12.0,
        "mean@4": pytest.approx(5 / 12),
        "pass@4": pytest.approx(2 / 3),
        "eval_problems": 3.0,
    }
    assert accuracy_metrics([1.0, 0.0], k=1) == {"accuracy": 0.5, "eval_examples": 2.0}


class Recorder:
    """Wraps a real generator and keeps what it was asked and answered."""

    def __init__(self, inner: HFGenerator) -> None:
        self.inner, self.name = inner, inner.name
        self.calls: list[tuple[list[str], GenerationParams, list[str]]] = []

    def generate(self, prompts: Sequence[Prompt], params: GenerationParams) -> list[str]:
        out = self.inner.generate(prompts, params)
        self.calls.append(([p.id for p in prompts], params, out))
        return out


def evaluator_ctx(eval_temperature: float) -> SimpleNamespace:
    task = ArithmeticTask(train_size=8, eval_size=3, seed=0)
    config = SimpleNamespace(eval=SimpleNamespace(temperature=eval_temperature, max_new_tokens=12))
    return SimpleNamespace(hook=make_plugin_manager([task]).hook, config=config)


def test_k_samples_per_problem_at_the_evaluator_temperature(tiny_models: TinyModels) -> None:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_models.student, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(tiny_models.student)
    generator = Recorder(HFGenerator("student", model, tokenizer, batch_size=16))
    evaluator = TaskAccuracy(samples_per_prompt=4, temperature=1.0, top_p=0.9)
    evaluator.setup(evaluator_ctx(eval_temperature=0.0))  # type: ignore[arg-type]
    result = evaluator.opd_evaluate(generator=generator, role="student", step=0)
    ((ids, params, completions),) = generator.calls
    assert ids == [f"arithmetic-eval-{i}" for i in range(3) for _ in range(4)]
    assert params == GenerationParams(max_new_tokens=12, temperature=1.0, top_p=0.9)
    assert len(set(completions[:4])) > 1  # sampled, not four copies of one greedy answer
    assert set(result.metrics) == {"accuracy", "eval_examples", "mean@4", "pass@4", "eval_problems"}
    assert result.metrics["pass@4"] >= result.metrics["mean@4"] == result.metrics["accuracy"]


def test_temperature_defaults_to_eval_temperature_and_refuses_k_greedy_copies() -> None:
    evaluator = TaskAccuracy()
    evaluator.setup(evaluator_ctx(eval_temperature=0.3))  # type: ignore[arg-type]
    assert evaluator.params.temperature == 0.3
    with pytest.raises(OPDError, match=r"samples_per_prompt=8 at temperature 0 gives identical"):
        TaskAccuracy(samples_per_prompt=8).setup(evaluator_ctx(0.0))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]"):
        TaskAccuracy(top_p=0.0)


class NoEvalSplit:
    """A task like ``chat``: training prompts only, no grader."""

    @hookimpl
    def opd_task_prompts(self, split: str) -> Sequence[Prompt]:
        return [] if split == "eval" else [Prompt(id="p", messages=())]


def test_a_task_without_eval_prompts_makes_it_step_aside_with_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = SimpleNamespace(
        task={"name": "chat"}, eval=SimpleNamespace(temperature=0.0, max_new_tokens=12)
    )
    ctx = SimpleNamespace(hook=make_plugin_manager([NoEvalSplit()]).hook, config=config)
    evaluator = TaskAccuracy()
    with caplog.at_level("INFO", logger="opd_core"):
        evaluator.setup(ctx)  # type: ignore[arg-type]
        for step in (0, 5):
            generator = SimpleNamespace(generate=lambda prompts, params: pytest.fail("generated"))
            assert evaluator.opd_evaluate(generator=generator, role="student", step=step) is None
    lines = [r.getMessage() for r in caplog.records if "task_accuracy" in r.getMessage()]
    assert lines == [
        "evaluator task_accuracy: task 'chat' has no eval prompts; skipping it "
        "(evaluator=[] turns it off)"
    ]
