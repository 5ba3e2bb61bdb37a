"""Batched sampling from ``transformers`` models: left-padded prompts and a decode loop over a
preallocated (static) KV cache that keeps each sampled token's log-probability."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch

from opd_core.api import (
    Generated,
    GenerationParams,
    Prompt,
    SampledTurn,
    TurnRequest,
    autocast,
    completion_mask,
    completion_pad_id,
    decode_completions,
    encode_prompts,
    eos_ids,
    forward_accepts,
    pad_left,
    position_ids_from_mask,
)


@torch.no_grad()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    params: GenerationParams,
    batch_size: int,
    generator: torch.Generator | None = None,
) -> Generated:
    """Sample one completion per prompt, ``batch_size`` prompts per decode loop, keeping each
    sampled token's log-probability (drawn from ``generator``, else torch's default one)."""
    stop = eos_ids(model, tokenizer)
    prompt_ids_BP, prompt_mask_BP = encode_prompts(tokenizer, prompts)
    completion_ids_BC, completion_logprobs_BC = decode_batches(
        model,
        prompt_ids_BP,
        prompt_mask_BP,
        params,
        batch_size,
        stop,
        completion_pad_id(tokenizer),
        generator,
    )
    return Generated(
        prompt_ids_BP=prompt_ids_BP,
        prompt_mask_BP=prompt_mask_BP,
        completion_ids_BC=completion_ids_BC,
        completion_mask_BC=completion_mask(completion_ids_BC, stop),
        completion_logprobs_BC=completion_logprobs_BC,
    )


@torch.no_grad()
def generate_turns(
    model: Any,
    requests: Sequence[TurnRequest],
    params: GenerationParams,
    batch_size: int,
    stop_ids: Sequence[int],
    pad_id: int,
    generator: torch.Generator | None = None,
) -> list[SampledTurn]:
    """One assistant turn of each live episode (multi-turn rollouts, :mod:`opd_core.episodes`):
    every episode's whole token history is left padded and prefilled again, then decoded like a
    prompt; each turn stops at a stop token or at its own ``max_new_tokens``."""
    history_ids_BP, history_mask_BP = pad_left([r.token_ids for r in requests], pad_id)
    longest = max(r.max_new_tokens for r in requests)
    ids_BC, logprobs_BC = decode_batches(
        model,
        history_ids_BP,
        history_mask_BP,
        replace(params, max_new_tokens=longest),
        batch_size,
        stop_ids,
        pad_id,
        generator,
    )
    lengths_B = completion_mask(ids_BC, stop_ids).sum(1).tolist()
    return [
        SampledTurn(ids_BC[b, :n].tolist(), logprobs_BC[b, :n].tolist())
        for b, n in enumerate(
            min(n, r.max_new_tokens) for n, r in zip(lengths_B, requests, strict=True)
        )
    ]


@torch.no_grad()
def decode_batches(
    model: Any,
    prompt_ids_BP: torch.Tensor,
    prompt_mask_BP: torch.Tensor,
    params: GenerationParams,
    batch_size: int,
    stop_ids: Sequence[int],
    pad_id: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`decode` over ``batch_size`` left-padded prompts at a time (no tokenizer involved);
    ``(completion_ids_BC, logprobs_BC)`` on the CPU, every chunk padded to the longest."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    id_chunks, lp_chunks = [], []
    for start in range(0, prompt_ids_BP.shape[0], batch_size):
        ids_BC, lps_BC = decode(
            model,
            prompt_ids_BP[start : start + batch_size].to(device),
            prompt_mask_BP[start : start + batch_size].to(device),
            params,
            stop_ids,
            pad_id,
            generator,
        )
        id_chunks.append(ids_BC.cpu())
        lp_chunks.append(lps_BC.cpu())
    model.train(was_training)
    width = max(c.shape[1] for c in id_chunks)
    completion_ids_BC = torch.cat(
        [torch.nn.functional.pad(c, (0, width - c.shape[1]), value=pad_id) for c in id_chunks]
    )
    logprobs_BC = torch.cat(
        [torch.nn.functional.pad(c, (0, width - c.shape[1])) for c in lp_chunks]
    )
    return completion_ids_BC, logprobs_BC


SHRINK_AT = 0.25
"""The decode loop drops finished rows from its forward batch once this share of the rows still
in it have finished (each drop copies the KV cache of the rows that stay)."""


def make_cache(model: Any, max_len: int) -> Any:
    """A KV cache preallocated for ``max_len`` positions (``StaticCache``), or a growing
    ``DynamicCache`` for a model that cannot use a static one."""
    from transformers import DynamicCache, StaticCache

    config = model.config
    if getattr(model, "_can_compile_fullgraph", False):
        return StaticCache(config=config, max_cache_len=max_len)
    return DynamicCache(config=config)


@torch.no_grad()
def decode(
    model: Any,
    prompt_ids_BP: torch.Tensor,
    prompt_mask_BP: torch.Tensor,
    params: GenerationParams,
    stop_ids: Sequence[int],
    pad_id: int,
    generator: torch.Generator | None = None,
    shrink_at: float = SHRINK_AT,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample up to ``params.max_new_tokens`` tokens after left-padded prompts.

    One prefill forward, then one single-token forward per further token over a preallocated
    KV cache; each step's own logits give the sampled token's log-probability (no second pass).
    A row that has emitted a stop token is written ``pad_id`` (log-probability 0) from then on;
    the loop ends when every row has stopped. Finished rows leave the forward batch and the KV
    cache (:func:`shrink_rows`) once ``shrink_at`` of the rows still in it have finished, so the
    cost follows the rows still running. Tokens are drawn for all ``B`` rows every step, as when
    no row leaves, so a seed gives the same tokens either way. The forwards run in
    ``params.precision`` (bf16 autocast or fp32); log-probabilities come from fp32 logits. Returns
    ``(completion_ids_BC, logprobs_BC)`` with ``C`` the steps taken.
    """
    B, P = prompt_ids_BP.shape
    C = params.max_new_tokens
    device = prompt_ids_BP.device
    mask_BL = torch.cat([prompt_mask_BP, prompt_mask_BP.new_ones((B, C))], dim=1)
    # positions count real tokens only, so left padding does not shift them
    next_pos_B = prompt_mask_BP.long().sum(1)
    positions_BC = next_pos_B[:, None] + torch.arange(C, device=device)
    cache_positions_L = torch.arange(P + C, device=device)
    stop_S = torch.tensor(list(stop_ids), dtype=torch.long, device=device)
    ids_BC = torch.full((B, C), pad_id, dtype=torch.long, device=device)
    logprobs_BC = torch.zeros((B, C), dtype=torch.float32, device=device)
    done_B = torch.zeros(B, dtype=torch.bool, device=device)
    # transformers >= 5.24 names the argument ``cache``, earlier versions ``past_key_values``
    cache = {
        "cache" if forward_accepts(model, "cache") else "past_key_values": make_cache(model, P + C)
    }

    def last_logits(**inputs: Any) -> torch.Tensor:
        """The logits at the last position."""
        return model(**inputs, **cache, use_cache=True).logits[:, -1]

    # one autocast region for the whole loop: autocast keeps the bf16 copy of each trainable
    # weight for the region's life, so the weights are cast once, not once per token
    with autocast(params.precision, device):
        logits_RV = last_logits(
            input_ids=prompt_ids_BP,
            attention_mask=prompt_mask_BP,
            position_ids=position_ids_from_mask(prompt_mask_BP),
            cache_position=cache_positions_L[:P],
            **({"logits_to_keep": 1} if forward_accepts(model, "logits_to_keep") else {}),
        )
        rows_R = torch.arange(B, device=device)  # the rows of the full batch still in the forward
        steps = 0
        for step in range(C):
            logits_BV = all_rows(logits_RV, rows_R, B).float()
            token_B, logprob_B = pick_tokens(logits_BV, params, generator)
            ids_BC[:, step] = torch.where(done_B, pad_id, token_B)
            logprobs_BC[:, step] = torch.where(done_B, 0.0, logprob_B)
            done_B |= torch.isin(token_B, stop_S)
            steps = step + 1
            if steps == C or bool(done_B.all()):
                break
            finished_R = done_B[rows_R]
            if int(finished_R.sum()) >= max(1.0, shrink_at * len(rows_R)):
                rows_R = shrink_rows(next(iter(cache.values())), rows_R, finished_R)
            logits_RV = last_logits(
                input_ids=ids_BC[rows_R, step : step + 1],
                attention_mask=mask_BL[rows_R, : P + steps],
                position_ids=positions_BC[rows_R, step : step + 1],
                cache_position=cache_positions_L[P + step : P + steps],
            )
    return ids_BC[:, :steps], logprobs_BC[:, :steps]


def all_rows(logits_RV: torch.Tensor, rows_R: torch.Tensor, B: int) -> torch.Tensor:
    """The logits of the ``R`` rows still decoding placed at their rows of the full batch of
    ``B`` (zeros on rows that left: their tokens are discarded)."""
    if len(rows_R) == B:
        return logits_RV
    logits_BV = logits_RV.new_zeros((B, logits_RV.shape[-1]))
    logits_BV[rows_R] = logits_RV
    return logits_BV


def shrink_rows(cache: Any, rows_R: torch.Tensor, finished_R: torch.Tensor) -> torch.Tensor:
    """Drop the finished rows from the forward batch: keep the others' KV cache entries
    (``reorder_cache`` selects batch rows); return the rows that stay."""
    keep_R = (~finished_R).nonzero().squeeze(-1)
    cache.reorder_cache(keep_R)
    return rows_R[keep_R]


def pick_tokens(
    logits_BV: torch.Tensor, params: GenerationParams, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample one token per row from ``generator`` (greedy at temperature 0, nucleus-filtered
    when ``top_p < 1``); return ``(token_B, logprob_B)``, the log-probability under
    ``softmax(logits / temperature)`` (``temperature`` 1 for greedy) before the top-p filter."""
    temperature = params.temperature if params.temperature > 0 else 1.0
    logprobs_BV = torch.log_softmax(logits_BV / temperature, dim=-1)
    if params.temperature <= 0:
        token_B = logprobs_BV.argmax(-1)
    elif params.top_p < 1.0:
        sorted_BV, order_BV = logprobs_BV.exp().sort(dim=-1, descending=True)
        # keep the smallest prefix whose mass reaches top_p (the first token always stays)
        outside_BV = sorted_BV.cumsum(-1) - sorted_BV >= params.top_p
        picked_B1 = torch.multinomial(
            sorted_BV.masked_fill(outside_BV, 0.0), 1, generator=generator
        )
        token_B = order_BV.gather(-1, picked_B1).squeeze(-1)
    else:
        token_B = torch.multinomial(logprobs_BV.exp(), 1, generator=generator).squeeze(-1)
    return token_B, logprobs_BV.gather(-1, token_B[:, None]).squeeze(-1)


class HFGenerator:
    """A :class:`opd_core.Generator` over a ``transformers`` model (used by evaluators)."""

    def __init__(self, name: str, model: Any, tokenizer: Any, batch_size: int) -> None:
        self.name = name
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size

    def generate(self, prompts: Sequence[Prompt], params: GenerationParams) -> list[str]:
        """One completion per prompt."""
        generated = generate(self.model, self.tokenizer, prompts, params, self.batch_size)
        return decode_completions(self.tokenizer, generated)
