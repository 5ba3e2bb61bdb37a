"""Forward KL and generalized JSD on the teacher's top-k tokens, against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from opd_core import Advantages, OPDError, PolicyOutput, RolloutBatch, TeacherScores
from opd_objectives.distribution import (
    ForwardKL,
    GeneralizedJSD,
    bucket_logprobs,
    generalized_jsd,
    kl_divergence,
)


def logs(*probs: float) -> torch.Tensor:
    return torch.tensor([math.log(p) for p in probs])


def test_kl_divergence_matches_the_definition() -> None:
    p, q = [0.5, 0.3, 0.2], [0.2, 0.5, 0.3]
    expected = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    assert float(kl_divergence(logs(*p), logs(*q))) == pytest.approx(expected, rel=1e-6)


def test_kl_divergence_ignores_buckets_where_p_is_zero() -> None:
    p = torch.tensor([0.0, -math.inf])  # p = (1, 0)
    q = logs(0.5, 0.5)
    assert float(kl_divergence(p, q)) == pytest.approx(math.log(2.0))


def test_buckets_hold_teacher_top_k_and_the_exact_tail_mass() -> None:
    # vocabulary of 4; the teacher's top-2 are tokens 2 (p=0.5) and 0 (p=0.3), tail 0.2
    student_probs = torch.tensor([0.1, 0.2, 0.3, 0.4])
    logits_BSV = student_probs.log().view(1, 1, 4) + 7.0  # a shift must not matter
    ids_BSK = torch.tensor([[[2, 0]]])
    teacher_BSK = logs(0.5, 0.3).view(1, 1, 2)
    teacher, student = bucket_logprobs(logits_BSV, ids_BSK, teacher_BSK)
    assert teacher.exp().flatten().tolist() == pytest.approx([0.5, 0.3, 0.2], rel=1e-5)
    # student: token 2 -> 0.3, token 0 -> 0.1, the rest (tokens 1 and 3) -> 0.6
    assert student.exp().flatten().tolist() == pytest.approx([0.3, 0.1, 0.6], rel=1e-5)


def test_with_the_whole_vocabulary_as_top_k_the_buckets_are_the_distributions() -> None:
    torch.manual_seed(0)
    logits_BSV = torch.randn(2, 3, 5)
    teacher_logits_BSV = torch.randn(2, 3, 5)
    teacher_logprobs_BSV = torch.log_softmax(teacher_logits_BSV, -1)
    values, ids = teacher_logprobs_BSV.topk(5, dim=-1)
    teacher, student = bucket_logprobs(logits_BSV, ids, values)
    assert teacher.shape == (2, 3, 5)  # no tail bucket
    full_forward = kl_divergence(teacher_logprobs_BSV, torch.log_softmax(logits_BSV, -1))
    assert torch.allclose(kl_divergence(teacher, student), full_forward, atol=1e-6)


def test_jsd_endpoints_are_exactly_forward_and_reverse_kl() -> None:
    teacher, student = logs(0.7, 0.2, 0.1), logs(0.3, 0.3, 0.4)
    forward = kl_divergence(teacher, student)
    reverse = kl_divergence(student, teacher)
    assert float(forward) > 0.1 and float(reverse) > 0.1
    assert torch.equal(generalized_jsd(teacher, student, beta=0.0), forward)
    assert torch.equal(generalized_jsd(teacher, student, beta=1.0), reverse)


def test_jsd_midpoint_matches_a_hand_computation() -> None:
    p, q, beta = [0.8, 0.2], [0.4, 0.6], 0.25
    m = [beta * a + (1 - beta) * b for a, b in zip(p, q, strict=True)]
    kl = lambda x, y: sum(a * math.log(a / b) for a, b in zip(x, y, strict=True))  # noqa: E731
    expected = beta * kl(p, m) + (1 - beta) * kl(q, m)
    assert float(generalized_jsd(logs(*p), logs(*q), beta)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_jsd_is_never_negative_and_zero_when_distributions_agree(beta: float) -> None:
    torch.manual_seed(1)
    a = torch.log_softmax(torch.randn(64, 11), -1)
    b = torch.log_softmax(torch.randn(64, 11), -1)
    assert (generalized_jsd(a, b, beta) >= 0).all()
    assert generalized_jsd(a, a, beta).abs().max() < 1e-6


@pytest.mark.parametrize("beta", [-0.1, 1.5])
def test_jsd_rejects_beta_outside_zero_one(beta: float) -> None:
    with pytest.raises(ValueError, match=rf"^beta must be in \[0, 1\], got {beta}$"):
        GeneralizedJSD(beta=beta)  # the one check: the math trusts its caller


def test_bf16_logits_are_compared_in_fp32() -> None:
    torch.manual_seed(2)
    logits_BSV = torch.randn(1, 4, 9).to(torch.bfloat16)
    values, ids = torch.log_softmax(torch.randn(1, 4, 9), -1).topk(3, dim=-1)
    teacher, student = bucket_logprobs(logits_BSV, ids, values)
    assert student.dtype == teacher.dtype == torch.float32
    reference_teacher, reference_student = bucket_logprobs(logits_BSV.float(), ids, values)
    assert torch.equal(student, reference_student) and torch.equal(teacher, reference_teacher)


def test_teacher_top_k_holding_all_mass_keeps_both_directions_finite() -> None:
    logits_BSV = torch.tensor([[[2.0, 1.0, 0.0]]])
    ids_BSK = torch.tensor([[[0, 1]]])
    teacher_BSK = torch.tensor([[[0.0, -200.0]]])  # top-1 has probability 1 in fp32
    teacher, student = bucket_logprobs(logits_BSV, ids_BSK, teacher_BSK)
    for beta in (0.0, 0.5, 1.0):
        assert torch.isfinite(generalized_jsd(teacher, student, beta)).all()


def rollouts_and_scores(vocab: int, top_k: int) -> tuple[RolloutBatch, TeacherScores]:
    """Two sequences of 4 positions: position 0 prompt, 1-2 completion, row 1's 3 padding."""
    torch.manual_seed(3)
    completion_mask_BT = torch.tensor([[0, 1, 1, 1], [0, 1, 1, 0]])
    teacher_logprobs_BSV = torch.log_softmax(torch.randn(2, 3, vocab), -1)
    values_BSK, ids_BSK = teacher_logprobs_BSV.topk(top_k, dim=-1)
    pad = torch.zeros(2, 1, top_k)
    scores = TeacherScores(
        logprobs_BT=torch.zeros(2, 4),
        topk_ids_BTK=torch.cat([pad.long(), ids_BSK], dim=1),
        topk_logprobs_BTK=torch.cat([pad, values_BSK], dim=1) * completion_mask_BT[..., None],
    )
    rollouts = RolloutBatch(
        prompts=(),
        group_ids_B=torch.tensor([0, 1]),
        input_ids_BT=torch.zeros(2, 4, dtype=torch.long),
        attention_mask_BT=torch.ones(2, 4),
        completion_mask_BT=completion_mask_BT,
        sampler_logprobs_BT=torch.zeros(2, 4),
        completions=("", ""),
        prompt_len=1,
    )
    return rollouts, scores


def test_forward_kl_loss_averages_over_loss_tokens_and_reaches_every_logit() -> None:
    vocab = 6
    rollouts, scores = rollouts_and_scores(vocab, top_k=vocab)
    logits_BSV = torch.randn(2, 3, vocab, requires_grad=True)
    policy = PolicyOutput(torch.zeros(2, 4), torch.zeros(2, 4), logits_BSV)
    mask_BT = rollouts.completion_mask_BT.float()
    advantages = Advantages(torch.zeros(2, 4), mask_BT)
    out = ForwardKL(top_k=vocab).opd_compute_loss(rollouts, policy, advantages, scores, 10)
    # by hand: full-vocabulary KL(teacher || student) at the 5 completion positions, over 10
    teacher_BSV = torch.zeros(2, 3, vocab).scatter(
        -1, scores.topk_ids_BTK[:, 1:], scores.topk_logprobs_BTK[:, 1:]
    )
    student_BSV = torch.log_softmax(logits_BSV.detach(), -1)
    per_position = (teacher_BSV.exp() * (teacher_BSV - student_BSV)).sum(-1)
    expected = float((per_position * mask_BT[:, 1:]).sum() / 10)
    assert float(out.loss.detach()) == pytest.approx(expected, rel=1e-5)
    out.loss.backward()
    assert logits_BSV.grad is not None
    assert logits_BSV.grad[0, 1].abs().sum() > 0  # a completion position gets gradient
    assert logits_BSV.grad[1, 2].abs().sum() == 0  # the padding position does not


def test_distribution_losses_ask_for_top_k_and_refuse_scores_without_it() -> None:
    assert ForwardKL(top_k=7).opd_score_request().top_k == 7
    rollouts, scores = rollouts_and_scores(vocab=6, top_k=3)
    policy = PolicyOutput(torch.zeros(2, 4), torch.zeros(2, 4), torch.zeros(2, 3, 6))
    advantages = Advantages(torch.zeros(2, 4), rollouts.completion_mask_BT.float())
    with pytest.raises(OPDError, match="top-5"):
        ForwardKL(top_k=5).opd_compute_loss(rollouts, policy, advantages, scores, 5)
    with pytest.raises(OPDError, match="needs teacher scores"):
        GeneralizedJSD().opd_compute_loss(rollouts, policy, advantages, None, 5)
