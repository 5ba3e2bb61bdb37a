"""The named OPD estimators (top-k reverse KL, truncated reverse KL, entropy-aware KL) against
hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from test_distribution import logs, rollouts_and_scores

from opd_core import Advantages, PolicyOutput
from opd_objectives.distribution import (
    EntropyAwareKL,
    TopKReverseKL,
    TruncatedReverseKL,
    bucket_entropy,
)


def loss_of(objective: object, vocab: int, top_k: int) -> tuple[float, torch.Tensor, dict]:
    """The objective's loss (over 10 loss tokens) on the shared two-row fixture, its logits
    and the metrics."""
    rollouts, scores = rollouts_and_scores(vocab, top_k)
    torch.manual_seed(5)
    logits_BSV = torch.randn(2, 3, vocab, requires_grad=True)
    policy = PolicyOutput(torch.zeros(2, 4), torch.zeros(2, 4), logits_BSV)
    advantages = Advantages(torch.zeros(2, 4), rollouts.completion_mask_BT.float())
    out = objective.opd_compute_loss(rollouts, policy, advantages, scores, 10)  # type: ignore[attr-defined]
    return float(out.loss.detach()), logits_BSV, {"scores": scores, **out.metrics}


def test_top_k_reverse_kl_over_the_whole_vocabulary_is_the_exact_reverse_kl() -> None:
    vocab = 6
    loss, logits_BSV, extra = loss_of(TopKReverseKL(top_k=vocab), vocab, vocab)
    scores = extra["scores"]
    teacher_BSV = torch.zeros(2, 3, vocab).scatter(
        -1, scores.topk_ids_BTK[:, 1:], scores.topk_logprobs_BTK[:, 1:]
    )
    student_BSV = torch.log_softmax(logits_BSV.detach(), -1)
    per_position = (student_BSV.exp() * (student_BSV - teacher_BSV)).sum(-1)
    mask_BS = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    assert loss == pytest.approx(float((per_position * mask_BS).sum() / 10), rel=1e-5)


def test_truncated_reverse_kl_renormalises_both_over_the_teacher_support() -> None:
    # vocabulary of 4; the teacher's top-2 are tokens 2 (p=0.5) and 0 (p=0.3)
    student_probs = [0.1, 0.2, 0.3, 0.4]
    logits_BSV = torch.tensor(student_probs).log().view(1, 1, 4)
    teacher, student = TruncatedReverseKL(top_k=2).buckets(
        logits_BSV, torch.tensor([[[2, 0]]]), logs(0.5, 0.3).view(1, 1, 2)
    )
    # by hand: teacher (0.5, 0.3) / 0.8, student (0.3, 0.1) / 0.4
    assert teacher.exp().flatten().tolist() == pytest.approx([0.625, 0.375], rel=1e-5)
    assert student.exp().flatten().tolist() == pytest.approx([0.75, 0.25], rel=1e-5)
    expected = 0.75 * math.log(0.75 / 0.625) + 0.25 * math.log(0.25 / 0.375)
    divergence, _ = TruncatedReverseKL(top_k=2).divergence(teacher, student)
    assert float(divergence) == pytest.approx(expected, rel=1e-5)


def test_truncated_reverse_kl_gives_no_gradient_outside_the_teacher_support() -> None:
    loss, logits_BSV, _ = loss_of(TruncatedReverseKL(top_k=2), vocab=6, top_k=2)
    assert loss > 0
    rollouts, scores = rollouts_and_scores(6, 2)
    logits = logits_BSV.detach().clone().requires_grad_(True)
    policy = PolicyOutput(torch.zeros(2, 4), torch.zeros(2, 4), logits)
    advantages = Advantages(torch.zeros(2, 4), rollouts.completion_mask_BT.float())
    out = TruncatedReverseKL(top_k=2).opd_compute_loss(rollouts, policy, advantages, scores, 10)
    out.loss.backward()
    assert logits.grad is not None
    support = torch.zeros(2, 3, 6, dtype=torch.bool).scatter(-1, scores.topk_ids_BTK[:, 1:], True)
    assert logits.grad[~support].abs().max() < 1e-7
    assert logits.grad[0, 0][support[0, 0]].abs().sum() > 0


def test_bucket_entropy_matches_the_definition() -> None:
    p = [0.5, 0.25, 0.25]
    expected = -sum(x * math.log(x) for x in p)
    assert float(bucket_entropy(logs(*p))) == pytest.approx(expected, rel=1e-6)


def test_entropy_aware_adds_forward_kl_only_where_the_teacher_is_uncertain() -> None:
    # position 0: a confident teacher (entropy 0.17 nats); position 1: an uncertain one (1.04)
    teacher = torch.stack([logs(0.97, 0.02, 0.01), logs(0.4, 0.35, 0.25)]).view(1, 2, 3)
    student = torch.stack([logs(0.6, 0.3, 0.1), logs(0.8, 0.1, 0.1)]).view(1, 2, 3)

    def kl(p: list[float], q: list[float]) -> float:
        return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))

    divergence, diagnostics = EntropyAwareKL(entropy_threshold=0.5).divergence(teacher, student)
    confident = kl([0.6, 0.3, 0.1], [0.97, 0.02, 0.01])  # reverse only
    uncertain = kl([0.8, 0.1, 0.1], [0.4, 0.35, 0.25]) + kl([0.4, 0.35, 0.25], [0.8, 0.1, 0.1])
    assert divergence.flatten().tolist() == pytest.approx([confident, uncertain], rel=1e-5)
    assert diagnostics["uncertain_fraction"].flatten().tolist() == [0.0, 1.0]


def test_entropy_aware_reports_the_uncertain_fraction_and_rejects_a_bad_threshold() -> None:
    _, _, metrics = loss_of(EntropyAwareKL(top_k=6, entropy_threshold=0.0), vocab=6, top_k=6)
    assert metrics["uncertain_fraction"] == pytest.approx(1.0)
    _, _, metrics = loss_of(EntropyAwareKL(top_k=6, entropy_threshold=100.0), vocab=6, top_k=6)
    assert metrics["uncertain_fraction"] == 0.0
    with pytest.raises(ValueError, match="entropy_threshold"):
        EntropyAwareKL(entropy_threshold=float("nan"))
