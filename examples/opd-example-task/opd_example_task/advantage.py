"""An advantage function: the reverse-KL advantage of on-policy distillation, clipped."""

from __future__ import annotations

import torch

from opd_core import Advantages, OPDError, RolloutBatch, ScoreRequest, TeacherScores, hookimpl


class ClippedReverseKL:
    """``A_t = clamp(-(logp_student(x_t) - logp_teacher(x_t)), -clip, clip)``.

    It asks for the teacher's log-probability of each sampled token (``opd_score_request``
    with ``top_k=0``); without the request the loop would not call the teacher.
    """

    def __init__(self, clip: float = 5.0) -> None:
        if clip <= 0:
            raise ValueError(f"clip must be positive, got {clip}")
        self.clip = clip

    @hookimpl
    def opd_score_request(self) -> ScoreRequest:
        return ScoreRequest(top_k=0)

    @hookimpl
    def opd_compute_advantages(
        self, rollouts: RolloutBatch, scores: TeacherScores | None, rewards_B: torch.Tensor | None
    ) -> Advantages:
        if scores is None:
            raise OPDError("advantage 'clipped_reverse_kl' needs a teacher; add +teacher=<name>.")
        mask_BT = rollouts.completion_mask_BT.float()
        reverse_kl_BT = rollouts.sampler_logprobs_BT - scores.logprobs_BT
        advantages_BT = (-reverse_kl_BT).clamp(-self.clip, self.clip) * mask_BT
        clipped = ((reverse_kl_BT.abs() > self.clip).float() * mask_BT).sum()
        return Advantages(
            advantages_BT=advantages_BT,
            mask_BT=mask_BT,
            metrics={"clipped_fraction": float(clipped / mask_BT.sum().clamp(min=1))},
        )
