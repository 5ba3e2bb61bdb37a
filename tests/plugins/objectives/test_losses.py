"""Advantages and losses against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from opd_objectives.importance_sampling import importance_sampling_loss
from opd_objectives.mixed import RewardPlusKL
from opd_objectives.returns import discounted_future_sum
from opd_objectives.reverse_kl import ReverseKL, reverse_kl_advantages


def test_reverse_kl_advantage_is_negative_log_ratio_on_completion_tokens() -> None:
    sampler = torch.tensor([[0.0, -1.0, -2.0, -0.5]])
    teacher = torch.tensor([[0.0, -1.5, -1.0, -0.5]])
    mask = torch.tensor([[0, 1, 1, 0]])  # position 0 is prompt, position 3 padding
    adv = reverse_kl_advantages(sampler, teacher, mask, coef=2.0)
    # token 1: -(-1.0 - -1.5) = -0.5; token 2: -(-2.0 - -1.0) = 1.0; times coef 2
    assert adv.tolist() == [[0.0, -1.0, 2.0, 0.0]]


def test_reverse_kl_with_discount_adds_future_tokens() -> None:
    sampler = torch.tensor([[-1.0, -1.0, -1.0]])
    teacher = torch.tensor([[-2.0, -1.0, -3.0]])
    mask = torch.ones(1, 3)
    adv = reverse_kl_advantages(sampler, teacher, mask, gamma=0.5)
    rewards = [-1.0, 0.0, -2.0]
    expected = [
        rewards[0] + 0.5 * rewards[1] + 0.25 * rewards[2],
        rewards[1] + 0.5 * rewards[2],
        rewards[2],
    ]
    assert adv[0].tolist() == pytest.approx(expected)


@pytest.mark.parametrize("gamma", [0.0, 0.3, 0.9, 1.0])
@pytest.mark.parametrize("length", [1, 2, 7, 33])
def test_discounted_future_sum_matches_the_recurrence(gamma: float, length: int) -> None:
    rewards = torch.randn(3, length, generator=torch.Generator().manual_seed(length))
    expected = torch.zeros_like(rewards)
    running = torch.zeros(3)
    for t in reversed(range(length)):  # reference implementation, test only
        running = rewards[:, t] + gamma * running
        expected[:, t] = running
    assert torch.allclose(discounted_future_sum(rewards, gamma), expected, atol=1e-5)


@pytest.mark.parametrize("advantage", [ReverseKL, RewardPlusKL])
def test_discount_outside_unit_interval_is_rejected(advantage: type) -> None:
    with pytest.raises(ValueError, match=r"^gamma must be in \[0, 1\], got 1.5$"):
        advantage(gamma=1.5)  # the one check, in the constructor, before any discounting


def test_importance_sampling_loss_hand_computed() -> None:
    logprobs = torch.tensor([[0.0, math.log(0.5), math.log(0.2)]])
    sampler = torch.tensor([[0.0, math.log(0.25), math.log(0.2)]])
    adv = torch.tensor([[0.0, 1.0, -2.0]])
    mask = torch.tensor([[0.0, 1.0, 1.0]])
    loss, metrics = importance_sampling_loss(logprobs, sampler, adv, mask, num_loss_tokens=4)
    # ratios 2.0 and 1.0: -(2*1 + 1*(-2)) / 4 = 0
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    assert metrics["ratio"] == pytest.approx(1.5)
    loss, _ = importance_sampling_loss(logprobs, sampler, adv.abs(), mask, num_loss_tokens=2)
    assert loss.item() == pytest.approx(-(2.0 * 1.0 + 1.0 * 2.0) / 2)


def test_ppo_clip_bounds_the_ratio_in_the_advantage_direction() -> None:
    logprobs = torch.tensor([[math.log(2.0), math.log(0.5)]])
    sampler = torch.zeros(1, 2)
    adv = torch.tensor([[1.0, -1.0]])
    mask = torch.ones(1, 2)
    loss, metrics = importance_sampling_loss(logprobs, sampler, adv, mask, 2, clip_eps=0.2)
    # ratio 2 with A=+1 clips to 1.2; ratio 0.5 with A=-1 clips to 0.8 (min picks -0.8)
    assert loss.item() == pytest.approx(-(1.2 - 0.8) / 2)
    assert metrics["clipped_frac"] == pytest.approx(1.0)


def test_gradient_is_the_policy_gradient() -> None:
    logprobs = torch.tensor([[0.0, -1.0, -2.0]], requires_grad=True)
    sampler = logprobs.detach().clone()
    adv = torch.tensor([[0.0, 3.0, -1.0]])
    mask = torch.tensor([[0.0, 1.0, 1.0]])
    loss, _ = importance_sampling_loss(logprobs, sampler, adv, mask, num_loss_tokens=2)
    loss.backward()
    # at ratio 1, d loss / d logp_t = -A_t / N on masked tokens
    assert logprobs.grad is not None
    assert logprobs.grad[0].tolist() == pytest.approx([0.0, -1.5, 0.5])


def test_prompt_and_padding_tokens_never_enter_the_loss() -> None:
    logprobs = torch.randn(2, 6, requires_grad=True)
    sampler = torch.randn(2, 6)
    adv = torch.randn(2, 6) * 100  # huge values off the mask must not matter
    mask = torch.tensor([[0, 0, 1, 1, 0, 0], [0, 1, 1, 1, 1, 0]]).float()
    loss, _ = importance_sampling_loss(logprobs, sampler, adv, mask, num_loss_tokens=6)
    loss.backward()
    assert logprobs.grad is not None
    assert torch.all(logprobs.grad[mask == 0] == 0)
    assert torch.all(logprobs.grad[mask == 1] != 0)
