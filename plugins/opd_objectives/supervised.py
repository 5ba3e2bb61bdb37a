"""Supervised fine-tuning as a loss: the SFT (off-policy distillation) baseline."""

from __future__ import annotations

import torch

from opd_core import Advantages, LossOutput, PolicyOutput, RolloutBatch, hookimpl


class CrossEntropy:
    """``-sum_t A_t * logp_theta(x_t) / num_loss_tokens``: advantage-weighted log-likelihood.

    Without an advantage function every token's ``A_t`` is 1 and it is the cross-entropy of SFT
    (``objective=sft``); with one it is REINFORCE without importance weights. The sampler's
    log-probabilities are not used, so the rollouts may come from any model.
    """

    uses_advantages = "optional"
    """Weighted by the advantage function's advantages when one is configured, else by 1."""

    stale_rollouts = "uncorrected"
    """Nothing corrects for student rollouts sampled one update earlier (``train.overlap``)."""

    @hookimpl
    def opd_compute_loss(
        self,
        rollouts: RolloutBatch,
        policy: PolicyOutput,
        advantages: Advantages,
        num_loss_tokens: int,
    ) -> LossOutput:
        mask_BT = advantages.mask_BT.float()
        loss = -(advantages.advantages_BT * policy.logprobs_BT * mask_BT).sum() / num_loss_tokens
        with torch.no_grad():
            nll = float(-(policy.logprobs_BT * mask_BT).sum() / mask_BT.sum().clamp(min=1))
        return LossOutput(loss=loss, metrics={"nll": nll})
