"""Distribution-matching losses on the teacher's top-k tokens: forward KL and generalized JSD.

The teacher reports its ``K`` most likely tokens at each position. Both distributions are
compared over ``K + 1`` buckets: those ``K`` tokens, and a *tail* bucket holding the rest of the
probability mass (the teacher's tail is ``1 - sum(top-k)``; the student's is its exact mass
outside the teacher's top-k). With ``K`` equal to the vocabulary size the buckets are the full
distributions and the losses are exact.

Everything is computed in fp32 (the teacher's tail in fp64), whatever dtype the models run in.
"""

from __future__ import annotations

import math

import torch

from opd_core import (
    Advantages,
    LossOutput,
    PolicyOutput,
    RolloutBatch,
    ScoreRequest,
    TeacherScores,
    hookimpl,
)
from opd_objectives.requirements import require_scores, unit_interval

MIN_TAIL_LOGPROB = math.log(torch.finfo(torch.float32).tiny)
"""Floor of the teacher's tail log-probability when its top-k hold all its mass in fp32 (keeps
the reverse-KL direction finite; the forward direction ignores an empty teacher bucket)."""


def bucket_logprobs(
    student_logits_BSV: torch.Tensor,
    teacher_topk_ids_BSK: torch.Tensor,
    teacher_topk_logprobs_BSK: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher and student log-probabilities over the teacher's top-k tokens plus a tail bucket.

    Returns ``(teacher_BSb, student_BSb)`` with ``b = K + 1`` buckets (``b = K`` when the top-k
    cover the whole vocabulary).
    """
    student_logprobs_BSV = torch.log_softmax(student_logits_BSV.float(), dim=-1)
    student_top_BSK = student_logprobs_BSV.gather(-1, teacher_topk_ids_BSK)
    teacher_top_BSK = teacher_topk_logprobs_BSK.float()
    if teacher_topk_ids_BSK.shape[-1] >= student_logits_BSV.shape[-1]:
        return teacher_top_BSK, student_top_BSK
    outside_BSV = student_logprobs_BSV.scatter(-1, teacher_topk_ids_BSK, -math.inf)
    student_tail_BS1 = torch.logsumexp(outside_BSV, dim=-1, keepdim=True)
    top_mass_BS1 = torch.logsumexp(teacher_top_BSK.double(), dim=-1, keepdim=True).clamp(max=0)
    teacher_tail_BS1 = torch.log(-torch.expm1(top_mass_BS1)).clamp(min=MIN_TAIL_LOGPROB).float()
    return (
        torch.cat([teacher_top_BSK, teacher_tail_BS1], dim=-1),
        torch.cat([student_top_BSK, student_tail_BS1], dim=-1),
    )


def kl_divergence(p_logprobs: torch.Tensor, q_logprobs: torch.Tensor) -> torch.Tensor:
    """``KL(p || q)`` along the last axis; buckets where ``p`` is 0 contribute 0."""
    p = p_logprobs.exp()
    terms = torch.where(p > 0, p * (p_logprobs - q_logprobs), torch.zeros_like(p))
    return terms.sum(-1)


def generalized_jsd(
    teacher_logprobs: torch.Tensor, student_logprobs: torch.Tensor, beta: float
) -> torch.Tensor:
    """``beta * KL(P || M) + (1 - beta) * KL(Q || M)`` with ``M = beta * P + (1 - beta) * Q``,
    ``P`` the teacher, ``Q`` the student, along the last axis; never negative.

    ``beta = 0`` is exactly the forward KL ``KL(P || Q)`` and ``beta = 1`` the reverse KL
    ``KL(Q || P)`` (the limits of the family divided by its weight; computed directly, so the
    endpoints are not zero). ``beta`` in [0, 1] is :class:`GeneralizedJSD`'s to check.
    """
    if beta == 0.0:
        divergence = kl_divergence(teacher_logprobs, student_logprobs)
    elif beta == 1.0:
        divergence = kl_divergence(student_logprobs, teacher_logprobs)
    else:
        mixture = torch.logsumexp(
            torch.stack(
                [teacher_logprobs + math.log(beta), student_logprobs + math.log(1.0 - beta)]
            ),
            dim=0,
        )
        divergence = beta * kl_divergence(teacher_logprobs, mixture) + (1.0 - beta) * kl_divergence(
            student_logprobs, mixture
        )
    return divergence.clamp(min=0.0)  # rounding can leave -1e-8 where the two agree


class GeneralizedJSD:
    """Generalized Jensen-Shannon divergence between the teacher and the student at every
    completion position, over the teacher's top-k tokens plus a tail bucket.

    ``beta = 0``: forward KL (mass covering); ``beta = 1``: reverse KL (mode seeking). The
    gradient flows through the student's full distribution, not only the sampled token: an
    exact per-position divergence (no sampling noise) on the student's own samples.

    Subclasses change what is compared by overriding :meth:`buckets` (which distributions) or
    :meth:`divergence` (which divergence of them).
    """

    objective = "jsd"
    uses_advantages = False
    """The divergence at each completion position is the whole signal: advantages are not read
    (an advantage function beside it is refused, :mod:`opd_core.objective`)."""
    stale_rollouts = "per_position"
    """With ``train.overlap`` the divergence at each position is still the current weights';
    only which positions are visited comes from the weights of one update earlier."""

    def __init__(self, beta: float = 0.5, top_k: int = 20) -> None:
        if top_k <= 0:
            raise ValueError(f"top_k must be positive, got {top_k}")
        self.beta = unit_interval("beta", beta)
        self.top_k = top_k

    @hookimpl
    def opd_score_request(self) -> ScoreRequest:
        return ScoreRequest(top_k=self.top_k)

    def buckets(
        self, student_logits_BSV: torch.Tensor, topk_ids_BSK: torch.Tensor, topk_BSK: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher and student log-probabilities over the compared outcomes. (B, S, b) each."""
        return bucket_logprobs(student_logits_BSV, topk_ids_BSK, topk_BSK)

    def divergence(
        self, teacher_BSb: torch.Tensor, student_BSb: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The per-position divergence (B, S) and per-position diagnostics to average."""
        return generalized_jsd(teacher_BSb, student_BSb, self.beta), {}

    @hookimpl
    def opd_compute_loss(
        self,
        rollouts: RolloutBatch,
        policy: PolicyOutput,
        advantages: Advantages,
        scores: TeacherScores | None,
        num_loss_tokens: int,
    ) -> LossOutput:
        scores = require_scores(scores, self.objective, self.top_k)
        assert scores.topk_ids_BTK is not None and scores.topk_logprobs_BTK is not None
        if policy.logits_BSV is None:
            raise ValueError(f"{self.objective} needs the policy's logits (logits_BSV)")
        # position s of the logits predicts token s + 1: drop position 0 of the *_BT tensors
        teacher_BSb, student_BSb = self.buckets(
            policy.logits_BSV,
            scores.topk_ids_BTK[:, 1:, : self.top_k],
            scores.topk_logprobs_BTK[:, 1:, : self.top_k],
        )
        divergence_BS, diagnostics = self.divergence(teacher_BSb, student_BSb)
        mask_BS = advantages.mask_BT[:, 1:].float()
        loss = (divergence_BS * mask_BS).sum() / num_loss_tokens
        with torch.no_grad():
            positions = mask_BS.sum().clamp(min=1)
            metrics = {self.objective: float((divergence_BS * mask_BS).sum() / positions)}
            for name, values_BS in diagnostics.items():
                metrics[name] = float((values_BS.float() * mask_BS).sum() / positions)
        return LossOutput(loss=loss, metrics=metrics)


class ForwardKL(GeneralizedJSD):
    """``KL(teacher || student)`` over the teacher's top-k tokens plus a tail bucket: the
    generalized JSD at ``beta = 0``."""

    objective = "forward_kl"

    def __init__(self, top_k: int = 20) -> None:
        super().__init__(beta=0.0, top_k=top_k)


class TopKReverseKL(GeneralizedJSD):
    """The exact per-position reverse KL ``KL(student || teacher)`` over the teacher's top-k
    tokens plus a tail bucket (the generalized JSD at ``beta = 1``).

    The seed's objective without its sampling noise: instead of one sampled token's
    ``log q - log p`` per position, the whole (bucketed) student distribution at that position
    is compared with the teacher's, and the gradient is taken directly. Biased only by the
    bucketing (exact when ``top_k`` covers the vocabulary: the tail lumps the teacher's
    remaining tokens into one outcome, which can only lower the divergence).
    """

    objective = "reverse_kl_topk"

    def __init__(self, top_k: int = 20) -> None:
        super().__init__(beta=1.0, top_k=top_k)


class TruncatedReverseKL(GeneralizedJSD):
    """Reverse KL on the teacher's top-k *local support*: both distributions are renormalised
    over the teacher's ``top_k`` tokens and the rest of the vocabulary is ignored (the truncated
    estimator of "Revisiting On-Policy Distillation", arXiv 2603.25562).

    Lower variance and no tail term; biased where the teacher's top-k hold little of its mass
    or the student puts mass outside them (that mass is neither rewarded nor penalised).
    """

    objective = "reverse_kl_truncated"

    def __init__(self, top_k: int = 20) -> None:
        super().__init__(beta=1.0, top_k=top_k)

    def buckets(
        self, student_logits_BSV: torch.Tensor, topk_ids_BSK: torch.Tensor, topk_BSK: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        student_BSK = torch.log_softmax(student_logits_BSV.float(), dim=-1).gather(-1, topk_ids_BSK)
        teacher_BSK = topk_BSK.float()
        return (
            teacher_BSK - torch.logsumexp(teacher_BSK, dim=-1, keepdim=True),
            student_BSK - torch.logsumexp(student_BSK, dim=-1, keepdim=True),
        )


def bucket_entropy(logprobs_BSb: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of a bucketed distribution along the last axis. (B, S).

    With a tail bucket this is a lower bound on the full distribution's entropy (the tail's
    tokens count as one outcome); exact when the buckets are the whole vocabulary.
    """
    p = logprobs_BSb.exp()
    return -torch.where(p > 0, p * logprobs_BSb, torch.zeros_like(p)).sum(-1)


class EntropyAwareKL(GeneralizedJSD):
    """Reverse KL everywhere, plus the forward KL at positions where the teacher is uncertain
    (its entropy above ``entropy_threshold`` nats), both over the teacher's top-k + tail
    (entropy-aware OPD, arXiv 2603.07079): mode seeking where the teacher is sure, mass
    covering where several continuations are plausible.
    """

    objective = "entropy_aware_kl"

    def __init__(self, top_k: int = 20, entropy_threshold: float = 0.5) -> None:
        if not math.isfinite(entropy_threshold) or entropy_threshold < 0:
            raise ValueError(f"entropy_threshold must be >= 0 nats, got {entropy_threshold}")
        super().__init__(beta=1.0, top_k=top_k)
        self.entropy_threshold = entropy_threshold

    def divergence(
        self, teacher_BSb: torch.Tensor, student_BSb: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        uncertain_BS = (bucket_entropy(teacher_BSb.detach()) > self.entropy_threshold).float()
        reverse_BS = generalized_jsd(teacher_BSb, student_BSb, 1.0)
        forward_BS = generalized_jsd(teacher_BSb, student_BSb, 0.0)
        return reverse_BS + uncertain_BS * forward_BS, {"uncertain_fraction": uncertain_BS}
