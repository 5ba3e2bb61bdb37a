"""Sampling with a vLLM engine into the layout the HF sampler produces.

Prompts are rendered and tokenized by :func:`opd_core.modeling.encode_prompts` (the student's chat
template, exactly as ``sampler=hf`` does) and sent as token ids, so both backends sample after
the same tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn.utils.rnn import pad_sequence

from opd_core.api import (
    Generated,
    GenerationParams,
    Prompt,
    SampledTurn,
    TurnRequest,
    completion_mask,
    decode_completions,
    encode_prompts,
)
from opd_vllm.engine import generate, import_vllm
from opd_vllm.logprobs import sampled_logprobs


def unpadded_rows(ids_BT: torch.Tensor, mask_BT: torch.Tensor) -> list[list[int]]:
    """The real tokens of each (left- or right-padded) row, as id lists."""
    lengths = mask_BT.sum(1).tolist()
    starts = (~mask_BT.bool()).long().cumprod(1).sum(1).tolist()  # padding before each row
    return [
        ids_BT[b, s : s + n].tolist() for b, (s, n) in enumerate(zip(starts, lengths, strict=True))
    ]


@dataclass(frozen=True)
class Requests:
    """One sampling call's vLLM requests and what reading their outputs back needs."""

    prompts: list[Any]
    """``vllm.inputs.TokensPrompt`` of each prompt."""
    params: list[Any]
    """``vllm.SamplingParams`` of each prompt."""
    prompt_ids_BP: torch.Tensor
    prompt_mask_BP: torch.Tensor
    samples_per_prompt: int
    pad_id: int
    stop_ids: tuple[int, ...]
    with_logprobs: bool


def sample(
    llm: Any,
    role: str,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    samples_per_prompt: int,
    params: GenerationParams,
    stop_ids: Sequence[int],
    seeds: Sequence[int] | None = None,
    with_logprobs: bool = True,
) -> tuple[Generated, torch.Tensor | None]:
    """Sample ``samples_per_prompt`` completions of each prompt (consecutive rows) and, when
    asked, the log-probability of each sampled token at the sampling temperature: ``(generated,
    logprobs_BC)``. ``seeds`` (one per prompt) make the samples reproducible."""
    requests = make_requests(
        tokenizer, prompts, samples_per_prompt, params, stop_ids, seeds, with_logprobs
    )
    return collect(requests, generate(llm, role, requests.prompts, requests.params))


def make_requests(
    tokenizer: Any,
    prompts: Sequence[Prompt],
    samples_per_prompt: int,
    params: GenerationParams,
    stop_ids: Sequence[int],
    seeds: Sequence[int] | None = None,
    with_logprobs: bool = True,
) -> Requests:
    """The requests of :func:`sample` (the prompts tokenized here; no engine involved)."""
    vllm = import_vllm()
    from vllm.inputs import TokensPrompt

    prompt_ids_BP, prompt_mask_BP = encode_prompts(tokenizer, prompts)
    greedy = params.temperature <= 0
    sampling = [
        vllm.SamplingParams(
            n=samples_per_prompt,
            temperature=max(params.temperature, 0.0),
            top_p=1.0 if greedy else params.top_p,
            max_tokens=params.max_new_tokens,
            stop_token_ids=list(stop_ids),
            logprobs=0 if with_logprobs else None,
            flat_logprobs=True,
            detokenize=False,
            seed=None if seeds is None else int(seeds[i]),
        )
        for i in range(len(prompts))
    ]
    return Requests(
        prompts=[
            TokensPrompt(prompt_token_ids=row)
            for row in unpadded_rows(prompt_ids_BP, prompt_mask_BP)
        ],
        params=sampling,
        prompt_ids_BP=prompt_ids_BP,
        prompt_mask_BP=prompt_mask_BP,
        samples_per_prompt=samples_per_prompt,
        pad_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0],
        stop_ids=tuple(stop_ids),
        with_logprobs=with_logprobs,
    )


def collect(requests: Requests, outputs: Sequence[Any]) -> tuple[Generated, torch.Tensor | None]:
    """The engine's ``outputs`` for ``requests`` in the layout :func:`sample` returns."""
    samples = [c for out in outputs for c in sorted(out.outputs, key=lambda c: c.index)]
    completion_ids_BC = pad_sequence(
        [torch.tensor(c.token_ids, dtype=torch.long) for c in samples],
        batch_first=True,
        padding_value=requests.pad_id,
    )
    n = requests.samples_per_prompt
    generated = Generated(
        prompt_ids_BP=requests.prompt_ids_BP.repeat_interleave(n, dim=0),
        prompt_mask_BP=requests.prompt_mask_BP.repeat_interleave(n, dim=0),
        completion_ids_BC=completion_ids_BC,
        completion_mask_BC=completion_mask(completion_ids_BC, requests.stop_ids),
    )
    if not requests.with_logprobs:
        return generated, None
    logprobs_BC = pad_sequence(
        [sampled_logprobs(c.logprobs, c.token_ids) for c in samples], batch_first=True
    )
    return generated, logprobs_BC


def turn_seed(episode_seed: int, turn: int) -> int:
    """The seed of an episode's ``turn`` (1-based) from the episode's own seed."""
    return (episode_seed + 1_000_003 * (turn - 1)) % 2**31


def make_turn_requests(
    requests: Sequence[TurnRequest],
    params: GenerationParams,
    stop_ids: Sequence[int],
    episode_seeds: Sequence[int] | None = None,
) -> tuple[list[Any], list[Any]]:
    """The vLLM prompts (each episode's whole token history, ``TokensPrompt``) and sampling
    parameters of one turn of multi-turn rollouts (no engine involved)."""
    vllm = import_vllm()
    from vllm.inputs import TokensPrompt

    greedy = params.temperature <= 0
    sampling = [
        vllm.SamplingParams(
            n=1,
            temperature=max(params.temperature, 0.0),
            top_p=1.0 if greedy else params.top_p,
            max_tokens=r.max_new_tokens,
            stop_token_ids=list(stop_ids),
            logprobs=0,
            flat_logprobs=True,
            detokenize=False,
            seed=None if episode_seeds is None else turn_seed(episode_seeds[r.episode], r.turn),
        )
        for r in requests
    ]
    return [TokensPrompt(prompt_token_ids=list(r.token_ids)) for r in requests], sampling


def sample_turns(
    llm: Any,
    role: str,
    requests: Sequence[TurnRequest],
    params: GenerationParams,
    stop_ids: Sequence[int],
    episode_seeds: Sequence[int] | None = None,
) -> list[SampledTurn]:
    """One assistant turn of each live episode (multi-turn rollouts, :mod:`opd_core.episodes`):
    token ids in, the sampled ids and their log-probabilities out."""
    prompts, sampling = make_turn_requests(requests, params, stop_ids, episode_seeds)
    outputs = generate(llm, role, prompts, sampling)
    turns = []
    for out in outputs:
        completion = out.outputs[0]
        logprobs = sampled_logprobs(completion.logprobs, completion.token_ids)
        turns.append(SampledTurn(list(completion.token_ids), logprobs.tolist()))
    return turns


class VLLMGenerator:
    """A :class:`opd_core.Generator` over a vLLM engine (used by evaluators); ``before`` runs
    before each call (the student's weight sync)."""

    def __init__(
        self,
        name: str,
        llm: Any,
        tokenizer: Any,
        stop_ids: Sequence[int],
        before: Callable[[], object] | None = None,
    ) -> None:
        self.name = name
        self.llm = llm
        self.tokenizer = tokenizer
        self.stop_ids = list(stop_ids)
        self.before = before

    def generate(self, prompts: Sequence[Prompt], params: GenerationParams) -> list[str]:
        """One completion per prompt."""
        if self.before is not None:
            self.before()
        generated, _ = sample(
            self.llm,
            self.name,
            self.tokenizer,
            prompts,
            1,
            params,
            self.stop_ids,
            with_logprobs=False,
        )
        return decode_completions(self.tokenizer, generated)
