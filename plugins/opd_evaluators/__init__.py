"""Evaluators: task accuracy on the task's held-out prompts (greedy, or AIME-style mean@k), and
the success of held-out episodes of the run's environment (``episode_success``)."""

from __future__ import annotations

import logging
from typing import Any

from opd_core import EvalResult, GenerationParams, Generator, OPDError, hookimpl
from opd_core.api import Registry, RunContext, store_config_dir

log = logging.getLogger("opd_core")


class TaskAccuracy:
    """Mean grade of completions to the task's ``eval`` prompts, graded by the task.

    One greedy answer per prompt by default. With ``samples_per_prompt=k > 1`` it samples ``k``
    answers per problem at ``temperature`` (AIME-style evaluation) and also reports
    ``mean@k`` (the mean grade, as ``accuracy``) and ``pass@k`` (the share of problems with a
    correct answer among its ``k``).
    """

    def __init__(
        self,
        max_examples: int | None = None,
        samples_per_prompt: int = 1,
        temperature: float | None = None,
        top_p: float = 1.0,
    ) -> None:
        """``temperature`` null uses ``eval.temperature``."""
        if max_examples is not None and max_examples <= 0:
            raise ValueError(f"max_examples must be positive or null, got {max_examples}")
        if samples_per_prompt <= 0:
            raise ValueError(f"samples_per_prompt must be positive, got {samples_per_prompt}")
        if temperature is not None and temperature < 0:
            raise ValueError(f"temperature must be >= 0 or null, got {temperature}")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        self.max_examples = max_examples
        self.samples_per_prompt = samples_per_prompt
        self.temperature = temperature
        self.top_p = top_p

    def setup(self, ctx: RunContext) -> None:
        self.hook = ctx.hook
        self.prompts = list(ctx.hook.opd_task_prompts(split="eval") or [])[: self.max_examples]
        self.graded = True
        if not self.prompts:
            log.info(
                "evaluator task_accuracy: task '%s' has no eval prompts; skipping it "
                "(evaluator=[] turns it off)",
                ctx.config.task.get("name", "?"),
            )
        temperature = ctx.config.eval.temperature if self.temperature is None else self.temperature
        if temperature == 0 and self.samples_per_prompt > 1:
            raise OPDError(
                f"evaluators.task_accuracy.samples_per_prompt={self.samples_per_prompt} at "
                "temperature 0 gives identical greedy answers; set "
                "evaluators.task_accuracy.temperature (e.g. 0.6) to sample them."
            )
        self.params = GenerationParams(
            max_new_tokens=ctx.config.eval.max_new_tokens,
            temperature=temperature,
            top_p=self.top_p,
        )

    @hookimpl
    def opd_evaluate(self, generator: Generator, role: str, step: int) -> EvalResult | None:
        if not self.prompts or not self.graded:
            return None
        k = self.samples_per_prompt
        prompts = [p for p in self.prompts for _ in range(k)]
        completions = generator.generate(prompts, self.params)
        grades = self.hook.opd_grade_completions(prompts=prompts, completions=completions)
        if grades is None:
            log.info("evaluator task_accuracy: the task has no grader; skipping it")
            self.graded = False
            return None
        return EvalResult(
            evaluator="task_accuracy", target=role, metrics=accuracy_metrics(grades, k)
        )


def accuracy_metrics(grades: list[float], k: int) -> dict[str, float]:
    """``accuracy`` (mean grade) and ``eval_examples`` of ``k`` grades per problem, laid out
    problem by problem; with ``k > 1`` also ``mean@k`` and ``pass@k`` (mean best grade)."""
    import torch

    grades_PK = torch.tensor(grades, dtype=torch.float64).view(-1, k)
    metrics = {"accuracy": float(grades_PK.mean()), "eval_examples": float(grades_PK.numel())}
    if k > 1:
        metrics[f"mean@{k}"] = metrics["accuracy"]
        metrics[f"pass@{k}"] = float(grades_PK.max(dim=1).values.mean())
        metrics["eval_problems"] = float(grades_PK.shape[0])
    return metrics


@hookimpl
def opd_register_components(registry: Registry) -> None:
    registry.add("evaluator", "task_accuracy", TaskAccuracy)
    registry.add("evaluator", "episode_success", "opd_evaluators.episodes:EpisodeSuccess")


@hookimpl
def opd_register_configs(store: Any) -> None:
    """This plugin's options (``conf/<group>/<option>.yaml``), stored as a third-party
    package's are."""
    store_config_dir(store, "opd_evaluators")
