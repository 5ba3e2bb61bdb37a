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
            # a number for every row of the batch, so a seed draws the same tokens whether or
            # not finished rows have left
            uniform_B = (
                torch.rand(B, generator=generator, device=device)
                if params.temperature > 0
                else None
            )
            token_R, logprob_R = pick_tokens(
                logits_RV.float(), params, None if uniform_B is None else uniform_B[rows_R]
            )
            live_B = torch.zeros_like(done_B)
            live_B[rows_R] = ~done_B[rows_R]
            ids_BC[rows_R, step] = token_R
            logprobs_BC[rows_R, step] = logprob_R
            ids_BC[:, step].masked_fill_(~live_B, pad_id)
            logprobs_BC[:, step].masked_fill_(~live_B, 0.0)
            done_B |= live_B & torch.isin(ids_BC[:, step], stop_S)
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


def shrink_rows(cache: Any, rows_R: torch.Tensor, finished_R: torch.Tensor) -> torch.Tensor:
    """Drop the finished rows from the forward batch: keep the others' KV cache entries
    (``reorder_cache`` selects batch rows); return the rows that stay."""
    keep_R = (~finished_R).nonzero().squeeze(-1)
    cache.reorder_cache(keep_R)
    return rows_R[keep_R]


def pick_tokens(
    logits_RV: torch.Tensor, params: GenerationParams, uniform_R: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row: greedy at temperature 0, else drawn by inverting the row's cumulative
    distribution at ``uniform_R`` (one ``U[0, 1)`` number per row, required when sampling;
    nucleus-filtered when ``top_p < 1``). Returns ``(token_R, logprob_R)``, the log-probability
    under ``softmax(logits / temperature)`` (``temperature`` 1 for greedy) before the top-p
    filter.

    One number per row instead of one per vocabulary entry (``torch.multinomial`` draws an
    exponential for every entry): over a 49k vocabulary the draw was a tenth of a decode step.
    """
    temperature = params.temperature if params.temperature > 0 else 1.0
    scaled_RV = logits_RV / temperature if temperature != 1.0 else logits_RV
    max_R1 = scaled_RV.amax(-1, keepdim=True)
    weights_RV = (scaled_RV - max_R1).exp_()  # the softmax, unnormalised
    log_total_R = weights_RV.sum(-1).log()
    if not bool(torch.isfinite(log_total_R).all()):
        # as torch.multinomial refuses them: a NaN row would otherwise draw a token silently
        bad = int((~torch.isfinite(log_total_R)).sum())
        raise RuntimeError(
            f"probability tensor contains inf, nan or no positive entry: the logits of {bad} of "
            f"{len(log_total_R)} rows are not finite"
        )
    if params.temperature <= 0:
        token_R = scaled_RV.argmax(-1)
    else:
        if uniform_R is None:
            raise ValueError("sampling at temperature > 0 needs one uniform number per row")
        token_R = invert_cdf(weights_RV, uniform_R, params.top_p)
    picked_R = scaled_RV.gather(-1, token_R[:, None]).squeeze(-1)
    return token_R, picked_R - max_R1.squeeze(-1) - log_total_R


def invert_cdf(weights_RV: torch.Tensor, uniform_R: torch.Tensor, top_p: float) -> torch.Tensor:
    """The entry of each row of unnormalised ``weights_RV`` whose cumulative share first exceeds
    ``uniform_R`` (a draw from the row's distribution); with ``top_p < 1``, from the smallest set
    of largest weights whose share reaches ``top_p`` (the largest always stays)."""
    order_RV = None
    if top_p < 1.0:
        weights_RV, order_RV = weights_RV.sort(dim=-1, descending=True)
        cdf_RV = weights_RV.cumsum(-1)
        outside_RV = cdf_RV - weights_RV >= top_p * cdf_RV[:, -1:]
        weights_RV = weights_RV.masked_fill(outside_RV, 0.0)
    cdf_RV = weights_RV.cumsum(-1)
    point_R1 = uniform_R[:, None].to(cdf_RV.dtype) * cdf_RV[:, -1:]
    index_R = torch.searchsorted(cdf_RV, point_R1, right=True).squeeze(-1)
    index_R = index_R.clamp_max(weights_RV.shape[-1] - 1)
    if order_RV is None:
        return index_R
    return order_RV.gather(-1, index_R[:, None]).squeeze(-1)


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
