"""Task reward plus a per-token teacher KL term, as tinker-cookbook and verl offer."""

from __future__ import annotations

import torch

from opd_core import Advantages, RolloutBatch, ScoreRequest, TeacherScores, hookimpl
from opd_objectives.grpo import group_normalized_rewards
from opd_objectives.requirements import require_rewards, require_scores, unit_interval
from opd_objectives.reverse_kl import reverse_kl_advantages


class RewardPlusKL:
    """``A_t = reward_coef * GRPO(r)_i + kl_coef * -(logp_student(x_t) - logp_teacher(x_t))``.

    The sequence's group-normalised task reward (sparse, what RL optimises) plus the per-token
    reverse-KL reward (dense, what distillation optimises). ``kl_coef = 0`` is GRPO;
    ``reward_coef = 0`` is on-policy distillation.
    """

    def __init__(
        self,
        reward_coef: float = 1.0,
        kl_coef: float = 0.1,
        normalize_std: bool = True,
        gamma: float = 0.0,
    ) -> None:
        if reward_coef < 0 or kl_coef < 0 or reward_coef + kl_coef == 0:
            raise ValueError(
                f"reward_coef and kl_coef must be >= 0 and not both 0, got {reward_coef}, {kl_coef}"
            )
        self.reward_coef = reward_coef
        self.kl_coef = kl_coef
        self.normalize_std = normalize_std
        self.gamma = unit_interval("gamma", gamma)

    @hookimpl
    def opd_score_request(self) -> ScoreRequest | None:
        return ScoreRequest() if self.kl_coef > 0 else None

    @hookimpl
    def opd_compute_advantages(
        self, rollouts: RolloutBatch, scores: TeacherScores | None, rewards_B: torch.Tensor | None
    ) -> Advantages:
        mask_BT = rollouts.completion_mask_BT.float()
        rewards_B = require_rewards(rewards_B, "advantage=mixed")
        reward_B = group_normalized_rewards(rewards_B, rollouts.group_ids_B, self.normalize_std)
        reward_part_BT = self.reward_coef * reward_B[:, None] * mask_BT
        kl_part_BT = torch.zeros_like(mask_BT)
        if self.kl_coef > 0:
            scores = require_scores(scores, "advantage=mixed")
            kl_part_BT = reverse_kl_advantages(
                rollouts.sampler_logprobs_BT, scores.logprobs_BT, mask_BT, self.kl_coef, self.gamma
            )
        denominator = mask_BT.sum().clamp(min=1)
        return Advantages(
            advantages_BT=reward_part_BT + kl_part_BT,
            mask_BT=mask_BT,
            metrics={
                "advantage/reward_part": float(reward_part_BT.abs().sum() / denominator),
                "advantage/kl_part": float(kl_part_BT.abs().sum() / denominator),
            },
        )
