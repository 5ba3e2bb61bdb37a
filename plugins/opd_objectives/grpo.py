"""The RL baseline: GRPO's group-normalised task rewards as every token's advantage."""

from __future__ import annotations

import torch

from opd_core import Advantages, RolloutBatch, TeacherScores, hookimpl
from opd_objectives.requirements import require_rewards


def group_normalized_rewards(
    rewards_B: torch.Tensor,
    group_ids_B: torch.Tensor,
    normalize_std: bool = True,
    eps: float = 1e-6,
) -> torch.Tensor:
    """``(r_i - mean_g) / (std_g + eps)`` over the sequences ``g`` of each prompt. (B,).

    ``std`` is the sample standard deviation (``n - 1``); a group with one sequence or equal
    rewards gets advantage 0. ``normalize_std=False`` only subtracts the group mean (Dr. GRPO).
    """
    rewards = rewards_B.float()
    groups = int(group_ids_B.max()) + 1 if group_ids_B.numel() else 0
    counts_G = torch.zeros(groups).index_add_(0, group_ids_B, torch.ones_like(rewards))
    mean_G = torch.zeros(groups).index_add_(0, group_ids_B, rewards) / counts_G.clamp(min=1)
    centered_B = rewards - mean_G[group_ids_B]
    if not normalize_std:
        return centered_B
    squares_G = torch.zeros(groups).index_add_(0, group_ids_B, centered_B**2)
    std_B = (squares_G / (counts_G - 1).clamp(min=1)).sqrt()[group_ids_B]
    return torch.where(std_B > 0, centered_B / (std_B + eps), torch.zeros_like(centered_B))


class GRPO:
    """Group relative policy optimisation's advantage: one scalar per sequence, from the task's
    grader, normalised within the ``samples_per_prompt`` answers to the same prompt. Sparse (one
    reward per answer) and needs no teacher."""

    def __init__(self, normalize_std: bool = True, eps: float = 1e-6) -> None:
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.normalize_std = normalize_std
        self.eps = eps

    @hookimpl
    def opd_compute_advantages(
        self, rollouts: RolloutBatch, scores: TeacherScores | None, rewards_B: torch.Tensor | None
    ) -> Advantages:
        rewards_B = require_rewards(rewards_B, "advantage=grpo")
        mask_BT = rollouts.completion_mask_BT.float()
        advantage_B = group_normalized_rewards(
            rewards_B, rollouts.group_ids_B, self.normalize_std, self.eps
        )
        return Advantages(
            advantages_BT=advantage_B[:, None] * mask_BT,
            mask_BT=mask_BT,
            metrics={"solved_groups": solved_group_fraction(rewards_B, rollouts.group_ids_B)},
        )


def solved_group_fraction(rewards_B: torch.Tensor, group_ids_B: torch.Tensor) -> float:
    """Fraction of prompts with at least one rewarded answer (the others teach GRPO nothing
    when all their answers fail)."""
    groups = int(group_ids_B.max()) + 1 if group_ids_B.numel() else 0
    rewarded_G = torch.zeros(groups).index_add_(0, group_ids_B, (rewards_B > 0).float())
    return float((rewarded_G > 0).float().mean()) if groups else 0.0
