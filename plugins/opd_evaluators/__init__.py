"""Evaluators: task accuracy on the task's held-out prompts."""

from __future__ import annotations

from opd_core import EvalResult, GenerationParams, Generator, OPDError, hookimpl
from opd_core.context import RunContext
from opd_core.registry import Registry


class TaskAccuracy:
    """Mean grade of completions to the task's ``eval`` prompts (greedy by default)."""

    def __init__(self, max_examples: int | None = None, samples_per_prompt: int = 1) -> None:
        if max_examples is not None and max_examples <= 0:
            raise ValueError(f"max_examples must be positive or null, got {max_examples}")
        if samples_per_prompt <= 0:
            raise ValueError(f"samples_per_prompt must be positive, got {samples_per_prompt}")
        self.max_examples = max_examples
        self.samples_per_prompt = samples_per_prompt

    def setup(self, ctx: RunContext) -> None:
        self.hook = ctx.hook
        prompts = list(ctx.hook.opd_task_prompts(split="eval") or [])
        if not prompts:
            raise OPDError(
                "The task has no eval prompts, so task_accuracy cannot run; remove "
                "it with '~evaluators.task_accuracy' or give the task an eval split."
            )
        self.prompts = prompts[: self.max_examples]
        self.params = GenerationParams(
            max_new_tokens=ctx.config.eval.max_new_tokens,
            temperature=ctx.config.eval.temperature,
        )

    @hookimpl
    def opd_evaluate(self, generator: Generator, role: str, step: int) -> EvalResult:
        prompts = [p for p in self.prompts for _ in range(self.samples_per_prompt)]
        completions = generator.generate(prompts, self.params)
        grades = self.hook.opd_grade_completions(prompts=prompts, completions=completions)
        if grades is None:
            raise OPDError(
                "The task has no grader, so task_accuracy cannot score it; remove "
                "it with '~evaluators.task_accuracy'."
            )
        return EvalResult(
            evaluator="task_accuracy",
            target=role,
            metrics={"accuracy": sum(grades) / len(grades), "eval_examples": float(len(grades))},
        )


@hookimpl
def opd_register_components(registry: Registry) -> None:
    registry.add("evaluator", "task_accuracy", TaskAccuracy)
