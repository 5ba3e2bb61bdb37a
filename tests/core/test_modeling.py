"""Per-token log-probabilities, entropies and top-k against direct computation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from opd_core.modeling import (
    entropy,
    gather_logprobs,
    next_token_logits,
    pad_left,
    topk_logprobs,
)


def test_gather_logprobs_is_log_softmax_at_the_next_token() -> None:
    logits_BSV = torch.tensor([[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]])
    ids_BT = torch.tensor([[2, 1, 0]])
    out = gather_logprobs(logits_BSV, ids_BT)
    z = torch.log(torch.exp(torch.tensor([1.0, 2.0, 3.0])).sum())
    assert out[0].tolist() == pytest.approx(
        [0.0, 2.0 - z.item(), -torch.log(torch.tensor(3.0)).item()]
    )
    hot = gather_logprobs(logits_BSV, ids_BT, temperature=2.0)
    z2 = torch.logsumexp(torch.tensor([0.5, 1.0, 1.5]), 0)
    assert hot[0, 1].item() == pytest.approx(1.0 - z2.item())


def test_entropy_and_topk() -> None:
    logits_BSV = torch.log(torch.tensor([[[0.5, 0.25, 0.25]]]))
    assert entropy(logits_BSV)[0].tolist() == pytest.approx([0.0, 1.0397208], abs=1e-6)
    ids, lps = topk_logprobs(logits_BSV, 2)
    assert ids.shape == (1, 2, 2)
    assert ids[0, 1, 0].item() == 0
    assert lps[0, 1].exp().tolist() == pytest.approx([0.5, 0.25])


def test_left_padding_does_not_change_logprobs(tiny_models) -> None:  # type: ignore[no-untyped-def]
    model = AutoModelForCausalLM.from_pretrained(Path(tiny_models.teacher))
    short, long = [5, 6, 7], [8, 9, 10, 11, 12]
    ids, mask = pad_left([short, long], pad_id=0)
    batched = gather_logprobs(next_token_logits(model, ids, mask), ids)
    alone_ids = torch.tensor([short])
    alone = gather_logprobs(
        next_token_logits(model, alone_ids, torch.ones_like(alone_ids)), alone_ids
    )
    # the first real token has no prefix when alone; every later one must agree
    assert torch.allclose(batched[0, -2:], alone[0, 1:], atol=1e-5)
