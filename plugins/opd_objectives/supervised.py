"""Supervised fine-tuning as a loss: the SFT (off-policy distillation) baseline."""

from __future__ import annotations

import torch

from opd_core import Advantages, LossOutput, PolicyOutput, RolloutBatch, TeacherScores, hookimpl


class Uniform:
    """Advantage 1 on every completion token: with ``loss=cross_entropy``, plain SFT on the
    rollouts (the teacher's answers when ``sampler=teacher_samples``). Needs no teacher scores."""

    @hookimpl
    def opd_compute_advantages(
        self, rollouts: RolloutBatch, scores: TeacherScores | None, rewards_B: torch.Tensor | None
    ) -> Advantages:
        mask_BT = rollouts.completion_mask_BT.float()
        return Advantages(advantages_BT=mask_BT.clone(), mask_BT=mask_BT)


class CrossEntropy:
    """``-sum_t A_t * logp_theta(x_t) / num_loss_tokens``: advantage-weighted log-likelihood.

    With advantage 1 (``advantage=uniform``) it is the cross-entropy of SFT; with other
    advantages it is REINFORCE without importance weights. The sampler's log-probabilities are
    not used, so the rollouts may come from any model.
    """

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
