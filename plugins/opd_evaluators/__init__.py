"""Evaluators: task accuracy on the task's held-out prompts (greedy, or AIME-style mean@k), and
the success of held-out episodes of the run's environment (``episode_success``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from opd_core import EvalResult, GenerationParams, Generator, OPDError, Prompt, hookimpl
from opd_core.api import (
    EVAL_ROLES,
    EnvironmentCalls,
    EpisodeSummary,
    Registry,
    RunContext,
    episode_success,
    parse_eval_roles,
    run_text_episodes,
    store_config_dir,
)

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


class EpisodeSuccess:
    """Runs the environment's episodes on the task's ``eval`` prompts with the model's eval
    generator, turn by turn at the text level (the messages so far -> ``Generator.generate`` ->
    ``opd_step_episode``), greedy by default, and reports ``success`` (the fraction of episodes
    that succeeded: the environment's ``success`` count when it reports one, else a positive
    reward), ``reward``, ``turns`` (means per episode), ``budget_cut`` (the fraction cut by
    ``max_turns``), each of the environment's counts as a mean per episode (``tool_calls``, ...)
    and ``episodes`` (how many ran)."""

    def __init__(
        self,
        max_examples: int | None = None,
        temperature: float = 0.0,
        max_new_tokens: int | None = None,
        max_turns: int | None = None,
        roles: Sequence[str] = EVAL_ROLES,
    ) -> None:
        """``max_new_tokens`` per turn and ``max_turns`` per episode: null uses
        ``eval.max_new_tokens`` and ``episode.max_turns``."""
        if max_examples is not None and max_examples <= 0:
            raise ValueError(f"max_examples must be positive or null, got {max_examples}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0: greedy), got {temperature}")
        if max_new_tokens is not None and max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens must be positive or null, got {max_new_tokens}")
        if max_turns is not None and max_turns <= 0:
            raise ValueError(f"max_turns must be positive or null, got {max_turns}")
        self.max_examples = max_examples
        self.temperature = temperature
        self.max_new_tokens = max_new_tokens
        self.max_turns = max_turns
        self.roles = parse_eval_roles(roles)

    def setup(self, ctx: RunContext) -> None:
        env = EnvironmentCalls.for_run(ctx)
        if env is None:
            raise OPDError(
                "evaluator episode_success runs the environment's episodes, but the run has no "
                "environment; set +environment=<name> or leave episode_success out of "
                "evaluator=[...]."
            )
        self.env = env
        prompts = list(ctx.hook.opd_task_prompts(split="eval") or [])
        self.prompts: list[Prompt] = prompts[: self.max_examples]
        if not self.prompts:
            log.info(
                "evaluator episode_success: task '%s' has no eval prompts; skipping it",
                ctx.config.task.get("name", "?"),
            )
        self.params = GenerationParams(
            max_new_tokens=self.max_new_tokens or ctx.config.eval.max_new_tokens,
            temperature=self.temperature,
        )
        self.turns = self.max_turns or ctx.config.episode.max_turns

    @hookimpl
    def opd_evaluate(self, generator: Generator, role: str, step: int) -> EvalResult | None:
        if role not in self.roles or not self.prompts:
            return None
        episodes = run_text_episodes(self.env, generator, self.prompts, self.params, self.turns)
        return EvalResult(
            evaluator="episode_success",
            target=role,
            metrics=success_metrics([e.summary for e in episodes]),
        )


def success_metrics(summaries: Sequence[EpisodeSummary]) -> dict[str, float]:
    """``success``, ``reward``, ``turns``, ``budget_cut`` and the environment's counts, as means
    over ``summaries``, and ``episodes``."""
    n = len(summaries)
    metrics = {
        key: sum(s.counts.get(key, 0.0) for s in summaries) / n
        for key in sorted({k for s in summaries for k in s.counts})
    }
    metrics.update(
        success=sum(episode_success(summaries)) / n,
        reward=sum(s.reward for s in summaries) / n,
        turns=sum(s.turns for s in summaries) / n,
        budget_cut=sum(s.budget_cut for s in summaries) / n,
        episodes=float(n),
    )
    return metrics


@hookimpl
def opd_register_components(registry: Registry) -> None:
    registry.add("evaluator", "task_accuracy", TaskAccuracy)
    registry.add("evaluator", "episode_success", EpisodeSuccess)


@hookimpl
def opd_register_configs(store: Any) -> None:
    """This plugin's options (``conf/<group>/<option>.yaml``), stored as a third-party
    package's are."""
    store_config_dir(store, "opd_evaluators")
