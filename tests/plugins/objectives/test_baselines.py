"""The RL, mixed and SFT objectives against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from opd_core import Advantages, OPDError, PolicyOutput, RolloutBatch, TeacherScores
from opd_core.objective import completion_advantages
from opd_objectives.grpo import GRPO, group_normalized_rewards, solved_group_fraction
from opd_objectives.mixed import RewardPlusKL
from opd_objectives.supervised import CrossEntropy


def batch(group_ids: list[int], completion_mask: list[list[int]]) -> RolloutBatch:
    mask_BT = torch.tensor(completion_mask)
    return RolloutBatch(
        prompts=(),
        group_ids_B=torch.tensor(group_ids),
        input_ids_BT=torch.zeros(mask_BT.shape, dtype=torch.long),
        attention_mask_BT=torch.ones(mask_BT.shape),
        completion_mask_BT=mask_BT,
        sampler_logprobs_BT=torch.tensor([[0.0, -1.0, -2.0]] * len(group_ids)) * mask_BT,
        completions=("",) * len(group_ids),
        prompt_len=1,
    )


def test_group_normalized_rewards_by_hand() -> None:
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.5])
    groups = torch.tensor([0, 0, 0, 1, 1, 1, 2])
    out = group_normalized_rewards(rewards, groups, eps=0.0)
    # group 0: mean 1/3, sample std sqrt(((2/3)^2 + 2 (1/3)^2) / 2) = sqrt(1/3)
    std = math.sqrt(1 / 3)
    assert out[:3].tolist() == pytest.approx([(2 / 3) / std, (-1 / 3) / std, (-1 / 3) / std])
    # group 1: all equal -> 0; group 2: a single answer -> 0
    assert out[3:].tolist() == [0.0, 0.0, 0.0, 0.0]


def test_without_std_normalisation_only_the_mean_is_removed() -> None:
    out = group_normalized_rewards(
        torch.tensor([1.0, 0.0, 3.0, 1.0]), torch.tensor([0, 0, 1, 1]), False
    )
    assert out.tolist() == [0.5, -0.5, 1.0, -1.0]


def test_grpo_puts_the_sequence_advantage_on_each_completion_token() -> None:
    rollouts = batch([0, 0], [[0, 1, 1], [0, 1, 0]])
    adv = GRPO(eps=0.0).opd_compute_advantages(rollouts, None, torch.tensor([1.0, 0.0]))
    a = 0.5 / math.sqrt(0.5)  # centred reward 0.5 over the sample std of (1, 0)
    assert adv.advantages_BT.flatten().tolist() == pytest.approx([0, a, a, 0, -a, 0])
    assert adv.metrics["solved_groups"] == 1.0


def test_grpo_without_a_grader_says_what_to_change() -> None:
    with pytest.raises(OPDError, match="no grader"):
        GRPO().opd_compute_advantages(batch([0], [[0, 1, 1]]), None, None)


def test_solved_groups_counts_prompts_with_any_rewarded_answer() -> None:
    rewards = torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0, 0.2])
    assert solved_group_fraction(rewards, torch.tensor([0, 0, 1, 1, 2, 2])) == pytest.approx(2 / 3)


def test_mixed_adds_reward_and_per_token_reverse_kl() -> None:
    rollouts = batch([0, 0], [[0, 1, 1], [0, 1, 1]])
    teacher = TeacherScores(logprobs_BT=torch.tensor([[0.0, -0.5, -1.0], [0.0, -2.0, -2.0]]))
    mixed = RewardPlusKL(reward_coef=2.0, kl_coef=0.5, normalize_std=False)
    adv = mixed.opd_compute_advantages(rollouts, teacher, torch.tensor([1.0, 0.0]))
    # reward part: 2 * (+-0.5); kl part: 0.5 * -(sampler - teacher), sampler = (0, -1, -2)
    expected = [
        [0.0, 1.0 + 0.5 * -(-1.0 + 0.5), 1.0 + 0.5 * -(-2.0 + 1.0)],
        [0.0, -1.0 + 0.5 * -(-1.0 + 2.0), -1.0 + 0.5 * -(-2.0 + 2.0)],
    ]
    assert adv.advantages_BT.tolist()[0] == pytest.approx(expected[0])
    assert adv.advantages_BT.tolist()[1] == pytest.approx(expected[1])
    assert mixed.opd_score_request() is not None
    assert RewardPlusKL(kl_coef=0.0).opd_score_request() is None
    with pytest.raises(OPDError, match="needs teacher scores"):
        mixed.opd_compute_advantages(rollouts, None, torch.tensor([1.0, 0.0]))


def test_cross_entropy_without_an_advantage_function_is_the_mean_negative_log_likelihood() -> None:
    rollouts = batch([0, 1], [[0, 1, 1], [0, 1, 0]])
    adv = completion_advantages(rollouts)  # what the loop passes when no advantage is configured
    assert adv.advantages_BT.tolist() == [[0, 1, 1], [0, 1, 0]]
    logprobs = torch.tensor([[-9.0, -1.0, -2.0], [-9.0, -4.0, -9.0]], requires_grad=True)
    policy = PolicyOutput(logprobs_BT=logprobs, entropy_BT=torch.zeros(2, 3))
    out = CrossEntropy().opd_compute_loss(rollouts, policy, adv, num_loss_tokens=3)
    assert float(out.loss.detach()) == pytest.approx((1.0 + 2.0 + 4.0) / 3)
    assert out.metrics["nll"] == pytest.approx(7 / 3)
    out.loss.backward()
    assert logprobs.grad is not None
    assert logprobs.grad.flatten().tolist() == pytest.approx([0, -1 / 3, -1 / 3, 0, -1 / 3, 0])


def test_cross_entropy_weights_tokens_by_their_advantage() -> None:
    rollouts = batch([0], [[0, 1, 1]])
    adv = Advantages(torch.tensor([[0.0, 2.0, -1.0]]), torch.tensor([[0.0, 1.0, 1.0]]))
    policy = PolicyOutput(torch.tensor([[0.0, -1.0, -3.0]]), torch.zeros(1, 3))
    out = CrossEntropy().opd_compute_loss(rollouts, policy, adv, num_loss_tokens=2)
    assert float(out.loss) == pytest.approx(-(2.0 * -1.0 + -1.0 * -3.0) / 2)
