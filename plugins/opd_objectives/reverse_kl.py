"""The on-policy distillation advantage: the negative reverse KL of each sampled token."""

from __future__ import annotations

import torch

from opd_core import Advantages, RolloutBatch, ScoreRequest, TeacherScores, hookimpl
from opd_objectives.requirements import require_scores, unit_interval
from opd_objectives.returns import discounted_future_sum


def reverse_kl_advantages(
    sampler_logprobs_BT: torch.Tensor,
    teacher_logprobs_BT: torch.Tensor,
    mask_BT: torch.Tensor,
    coef: float = 1.0,
    gamma: float = 0.0,
) -> torch.Tensor:
    """``A_t = coef * sum_{k>=t} gamma^(k-t) * -(logp_student(x_k) - logp_teacher(x_k))``.

    With ``gamma = 0`` (the default) each token's advantage is its own negative reverse KL
    estimate. Zero off ``mask_BT``. (B, T) float32.
    """
    mask = mask_BT.float()
    reward_BT = -(sampler_logprobs_BT.float() - teacher_logprobs_BT.float()) * mask
    return coef * discounted_future_sum(reward_BT, gamma) * mask


class ReverseKL:
    """Per-token reward ``-(logp_student - logp_teacher)``: dense, on-policy, mode seeking."""

    def __init__(self, coef: float = 1.0, gamma: float = 0.0) -> None:
        if coef <= 0:
            raise ValueError(f"coef must be positive, got {coef}")
        self.coef = coef
        self.gamma = unit_interval("gamma", gamma)

    @hookimpl
    def opd_score_request(self) -> ScoreRequest:
        return ScoreRequest()

    @hookimpl
    def opd_compute_advantages(
        self, rollouts: RolloutBatch, scores: TeacherScores | None, rewards_B: torch.Tensor | None
    ) -> Advantages:
        scores = require_scores(scores, "reverse_kl")
        mask_BT = rollouts.completion_mask_BT.float()
        advantages_BT = reverse_kl_advantages(
            rollouts.sampler_logprobs_BT, scores.logprobs_BT, mask_BT, self.coef, self.gamma
        )
        return Advantages(advantages_BT=advantages_BT, mask_BT=mask_BT)
