"""vLLM's flat log-probabilities (``SamplingParams(flat_logprobs=True)``) as tensors.

With ``flat_logprobs`` every scored position holds ``k + 1`` entries, in this order: the actual
token (its log-probability and rank), then the ``k`` most likely tokens by rank, even when the
actual token is one of them. Reading them as a ``(positions, k + 1)`` grid needs no Python loop
over tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from opd_core.api import OPDError


def flat_grid(flat: Any, positions: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The token ids and log-probabilities of ``positions`` scored positions, ``width`` entries
    each: ``(ids_SW, logprobs_SW)``. ``flat`` is a ``vllm.logprobs.FlatLogprobs``."""
    if flat is None or len(flat.token_ids) != positions * width:
        got = "none" if flat is None else len(flat.token_ids)
        raise OPDError(
            f"vLLM returned {got} log-probabilities where {positions} positions x {width} were "
            "expected; this vLLM version lays out flat_logprobs differently: use vllm>=0.32."
        )
    ids_SW = torch.tensor(flat.token_ids, dtype=torch.long).view(positions, width)
    logprobs_SW = torch.tensor(flat.logprobs, dtype=torch.float32).view(positions, width)
    return ids_SW, logprobs_SW


def sampled_logprobs(flat: Any, token_ids: Sequence[int]) -> torch.Tensor:
    """Log-probability of each sampled token (``logprobs=0``: one entry per position). (C,)."""
    ids_S1, logprobs_S1 = flat_grid(flat, len(token_ids), 1)
    _check_actual(ids_S1[:, 0], token_ids)
    return logprobs_S1[:, 0]


def prompt_logprobs(
    flat: Any, token_ids: Sequence[int], top_k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One sequence's ``prompt_logprobs``: the log-probability of tokens ``1..n-1`` given their
    prefix ``(S,)``, and the ``top_k`` most likely ids and their log-probabilities ``(S, K)``
    (``S = n - 1``; the first token has no prefix and no score)."""
    scored = len(token_ids) - 1
    if flat is None or len(flat.start_indices) != len(token_ids):
        raise OPDError(
            f"vLLM returned prompt log-probabilities for "
            f"{0 if flat is None else len(flat.start_indices)} positions of a "
            f"{len(token_ids)}-token sequence; check the engine's max_model_len."
        )
    ids_SW, logprobs_SW = flat_grid(flat, scored, top_k + 1)  # position 0 holds no entries
    _check_actual(ids_SW[:, 0], token_ids[1:])
    return logprobs_SW[:, 0], ids_SW[:, 1:], logprobs_SW[:, 1:]


def _check_actual(ids_S: torch.Tensor, expected: Sequence[int]) -> None:
    if not torch.equal(ids_S, torch.tensor(list(expected), dtype=torch.long)):
        raise OPDError(
            "vLLM's log-probabilities do not describe the tokens sent; this vLLM version lays "
            "out flat_logprobs differently: use vllm>=0.32."
        )
