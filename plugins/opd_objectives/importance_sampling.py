"""The policy-gradient loss with importance weights, optionally PPO-clipped."""

from __future__ import annotations

import torch

from opd_core import Advantages, LossOutput, PolicyOutput, RolloutBatch, hookimpl


def importance_sampling_loss(
    logprobs_BT: torch.Tensor,
    sampler_logprobs_BT: torch.Tensor,
    advantages_BT: torch.Tensor,
    mask_BT: torch.Tensor,
    num_loss_tokens: int,
    clip_eps: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """``-sum_t ratio_t * A_t / num_loss_tokens`` over masked tokens, ``ratio = exp(logp - logq)``.

    With ``clip_eps`` the PPO surrogate ``-min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A)`` is
    used instead. Returns the loss and the micro-batch's mean ratio and clipped fraction.
    """
    mask = mask_BT.float()
    ratio_BT = torch.exp(logprobs_BT - sampler_logprobs_BT.detach()) * mask
    surrogate_BT = ratio_BT * advantages_BT
    clipped_frac = 0.0
    if clip_eps is not None:
        clipped_ratio_BT = ratio_BT.clamp(1.0 - clip_eps, 1.0 + clip_eps)
        clipped_BT = clipped_ratio_BT * advantages_BT
        surrogate_BT = torch.minimum(surrogate_BT, clipped_BT)
        with torch.no_grad():
            clipped_frac = float(
                ((clipped_BT < ratio_BT * advantages_BT).float() * mask).sum()
                / mask.sum().clamp(min=1)
            )
    loss = -(surrogate_BT * mask).sum() / num_loss_tokens
    with torch.no_grad():
        mean_ratio = float(ratio_BT.sum() / mask.sum().clamp(min=1))
    return loss, {"ratio": mean_ratio, "clipped_frac": clipped_frac}


class ImportanceSampling:
    """Importance-sampled policy gradient (``clip_eps`` set: PPO's clipped surrogate)."""

    uses_advantages = True
    """Every token is weighted by its advantage: an objective names the advantage function
    (``objective=opd``: ``reverse_kl``; ``objective=grpo``; ``objective=mixed``)."""
    stale_rollouts = "corrected"
    """Rollouts sampled one update earlier (``train.overlap``) are reweighted by the ratio."""

    def __init__(self, clip_eps: float | None = None) -> None:
        if clip_eps is not None and not 0 < clip_eps < 1:
            raise ValueError(f"clip_eps must be in (0, 1) or null, got {clip_eps}")
        self.clip_eps = clip_eps

    @hookimpl
    def opd_compute_loss(
        self,
        rollouts: RolloutBatch,
        policy: PolicyOutput,
        advantages: Advantages,
        num_loss_tokens: int,
    ) -> LossOutput:
        loss, metrics = importance_sampling_loss(
            policy.logprobs_BT,
            rollouts.sampler_logprobs_BT,
            advantages.advantages_BT,
            advantages.mask_BT,
            num_loss_tokens,
            self.clip_eps,
        )
        return LossOutput(loss=loss, metrics=metrics)
