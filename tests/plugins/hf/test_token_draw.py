"""The decode loop's token draw: one uniform number per row inverted through the row's
cumulative distribution, checked against the distribution it must sample from."""

from __future__ import annotations

import pytest
import torch

from opd_core import GenerationParams
from opd_hf.generation import pick_tokens

LOGITS_V = torch.tensor([2.0, 0.5, -1.0, 1.5, -30.0, 0.0])
ROWS = 40_000


def frequencies(params: GenerationParams, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Token frequencies over ``ROWS`` draws from ``LOGITS_V``, and the log-probabilities."""
    logits_RV = LOGITS_V.expand(ROWS, -1).clone()
    uniform_R = torch.rand(ROWS, generator=torch.Generator().manual_seed(seed))
    token_R, logprob_R = pick_tokens(logits_RV, params, uniform_R)
    return torch.bincount(token_R, minlength=len(LOGITS_V)) / ROWS, logprob_R[None]


@pytest.mark.parametrize("temperature", [1.0, 0.6, 1.7])
def test_draws_follow_the_tempered_softmax(temperature: float) -> None:
    freq_V, _ = frequencies(GenerationParams(4, temperature=temperature))
    expected_V = torch.softmax(LOGITS_V / temperature, -1)
    # 4 standard errors of a frequency at 40k draws is at most 0.01
    assert torch.allclose(freq_V, expected_V, atol=0.01), (freq_V, expected_V)
    assert freq_V[4] == 0  # e^-30 is never drawn


def test_top_p_draws_from_the_renormalised_nucleus() -> None:
    # probabilities at T=1: 0.46, 0.10, 0.02, 0.28, 0.00, 0.06 (to 2 places); the smallest set
    # reaching 0.8: tokens 0, 3 and 1 (0.46 + 0.28 = 0.74 < 0.8, + 0.10 = 0.84)
    freq_V, _ = frequencies(GenerationParams(4, temperature=1.0, top_p=0.8))
    probs_V = torch.softmax(LOGITS_V, -1)
    nucleus = torch.zeros_like(probs_V)
    nucleus[[0, 3, 1]] = probs_V[[0, 3, 1]]
    assert torch.allclose(freq_V, nucleus / nucleus.sum(), atol=0.01), freq_V
    assert freq_V[[2, 4, 5]].sum() == 0


def test_log_probabilities_are_the_tempered_log_softmax_before_top_p() -> None:
    logits_RV = torch.randn(64, 1000, generator=torch.Generator().manual_seed(1)) * 4
    uniform_R = torch.rand(64, generator=torch.Generator().manual_seed(2))
    for params in (GenerationParams(4, 0.7), GenerationParams(4, 1.0, top_p=0.5)):
        token_R, logprob_R = pick_tokens(logits_RV, params, uniform_R)
        expected_R = torch.log_softmax(logits_RV / params.temperature, -1).gather(
            -1, token_R[:, None]
        )[:, 0]
        assert torch.allclose(logprob_R, expected_R, atol=1e-5)


def test_greedy_takes_the_argmax_and_needs_no_random_numbers() -> None:
    logits_RV = torch.randn(8, 50, generator=torch.Generator().manual_seed(3))
    token_R, logprob_R = pick_tokens(logits_RV, GenerationParams(4, temperature=0.0))
    assert torch.equal(token_R, logits_RV.argmax(-1))
    assert torch.allclose(logprob_R, torch.log_softmax(logits_RV, -1).amax(-1), atol=1e-6)


def test_sampling_without_random_numbers_is_refused() -> None:
    with pytest.raises(ValueError, match="uniform number per row"):
        pick_tokens(torch.zeros(2, 5), GenerationParams(4, temperature=1.0))


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_non_finite_logits_are_refused_not_drawn_from(temperature: float) -> None:
    logits_RV = torch.zeros(3, 5)
    logits_RV[1, 2] = float("nan")
    with pytest.raises(RuntimeError, match=r"probability tensor contains.*1 of 3 rows"):
        pick_tokens(logits_RV, GenerationParams(4, temperature), torch.rand(3))
