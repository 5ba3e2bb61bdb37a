"""``evaluator=[episode_success]``: held-out episodes of the run's environment, run turn by turn
at the text level (registered by path: importing it pulls in torch)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from opd_core import EvalResult, GenerationParams, Generator, OPDError, Prompt, hookimpl
from opd_core.api import (
    EVAL_ROLES,
    EnvironmentCalls,
    EpisodeSummary,
    RunContext,
    episode_success,
    parse_eval_roles,
    run_text_episodes,
)

log = logging.getLogger("opd_core")


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
