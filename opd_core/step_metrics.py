"""What a step and an evaluation report: rollout, advantage and eval metrics, as numbers that say
how the ranks combine them (:mod:`opd_core.reduction`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from opd_core.episodes import BUDGETS, episode_success
from opd_core.reduction import Max, Min, Sum
from opd_core.types import Advantages, EpisodeSummary, EvalResult, RolloutBatch, TeacherScores


def masked_mean(values_BT: torch.Tensor, mask_BT: torch.Tensor) -> float:
    """Mean of ``values_BT`` over positions where ``mask_BT`` is 1."""
    mask = mask_BT.float()
    return float((values_BT * mask).sum() / mask.sum().clamp(min=1))


def rollout_metrics(
    rollouts: RolloutBatch, scores: TeacherScores | None, rewards_B: torch.Tensor | None
) -> dict[str, float]:
    """Sampled-token counts, task reward and (when scored) teacher reverse KL of the rollouts."""
    mask_BT = rollouts.completion_mask_BT.float()
    out = {
        "tokens": Sum(mask_BT.sum()),
        "completion_len": float(mask_BT.sum(1).mean()),
        "sequences": Sum(rollouts.batch_size),
    }
    if scores is not None:
        reverse_kl_BT = rollouts.sampler_logprobs_BT - scores.logprobs_BT
        out["teacher_reverse_kl"] = masked_mean(reverse_kl_BT, mask_BT)
    if rewards_B is not None:
        out["reward"] = float(rewards_B.mean())
    if rollouts.episodes is not None:
        region_BR = rollouts.attention_mask_BT[:, rollouts.prompt_len :].float()
        out["episode/env_tokens"] = float((region_BR.sum(1) - mask_BT.sum(1)).mean())
        out.update(episode_metrics(rollouts.episodes))
    return out


def episode_metrics(episodes: Sequence[EpisodeSummary]) -> dict[str, float]:
    """Per-episode means (``episode/turns``, ``episode/reward``, ``episode/success``, each of
    the environment's counts as ``episode/<name>``) and the budget cuts, counted:
    ``episode/budget_cut`` and ``episode/cut_<budget>`` (``max_turns``, ``max_tokens``,
    ``context``)."""
    n = max(len(episodes), 1)
    out: dict[str, float] = {}
    for key in sorted({k for e in episodes for k in e.counts}):
        out[f"episode/{key}"] = sum(e.counts.get(key, 0.0) for e in episodes) / n
    out["episode/turns"] = sum(e.turns for e in episodes) / n
    out["episode/reward"] = sum(e.reward for e in episodes) / n
    out["episode/success"] = sum(episode_success(episodes)) / n
    out["episode/budget_cut"] = Sum(sum(e.budget_cut for e in episodes))
    for budget in BUDGETS:
        out[f"episode/cut_{budget}"] = Sum(sum(e.end == budget for e in episodes))
    return out


def advantage_metrics(advantages: Advantages) -> dict[str, float]:
    """Mean, std, min and max of the advantages over their mask, plus the function's own."""
    mask = advantages.mask_BT.bool()
    values = advantages.advantages_BT[mask]
    if values.numel() == 0:
        return dict(advantages.metrics)
    return {
        "advantage/mean": float(values.mean()),
        "advantage/std": float(values.std()) if values.numel() > 1 else 0.0,
        "advantage/min": Min(values.min()),
        "advantage/max": Max(values.max()),
        **advantages.metrics,
    }


def merge_eval_results(results: Sequence[EvalResult]) -> dict[str, float]:
    """Merge evaluators' metrics; a name two evaluators share is prefixed by the evaluator."""
    counts: dict[str, int] = {}
    for result in results:
        for key in result.metrics:
            counts[key] = counts.get(key, 0) + 1
    merged: dict[str, float] = {}
    for result in results:
        for key, value in result.metrics.items():
            merged[key if counts[key] == 1 else f"{result.evaluator}/{key}"] = float(value)
    return merged


def step_metrics(
    step: int,
    rollouts: RolloutBatch,
    scores: TeacherScores | None,
    rewards_B: torch.Tensor | None,
    advantages: Advantages | None,
    update: Mapping[str, float],
) -> dict[str, float]:
    """A step's metrics from its stages: the rollouts, the advantages (``None``: no advantage
    function, nothing to log), the teacher's own metrics and the update's (loss, entropy,
    grad_norm, lr, the loss's own)."""
    metrics: dict[str, float] = {"step": step}
    metrics.update(rollout_metrics(rollouts, scores, rewards_B))
    if advantages is not None:
        metrics.update(advantage_metrics(advantages))
    if scores is not None:
        metrics.update(scores.metrics)
    metrics.update(update)
    return metrics
