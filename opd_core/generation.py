"""Batched sampling with ``transformers``' ``generate``: left-padded prompts, completion masks,
and the :class:`RolloutBatch` of a sampling call (shared by every sampler that writes one)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from opd_core.modeling import encode_prompts
from opd_core.types import GenerationParams, Prompt, RolloutBatch


@dataclass(frozen=True)
class Generated:
    """Prompts and completions of one ``generate`` call, unpadded to a common layout."""

    prompt_ids_BP: torch.Tensor
    prompt_mask_BP: torch.Tensor
    completion_ids_BC: torch.Tensor
    completion_mask_BC: torch.Tensor
    """1 up to and including the first EOS."""

    @property
    def input_ids_BT(self) -> torch.Tensor:
        """Prompt and completion ids side by side. (B, T)."""
        return torch.cat([self.prompt_ids_BP, self.completion_ids_BC], dim=1)

    @property
    def attention_mask_BT(self) -> torch.Tensor:
        """1 on real prompt and completion tokens. (B, T)."""
        return torch.cat([self.prompt_mask_BP, self.completion_mask_BC], dim=1)

    @property
    def completion_mask_BT(self) -> torch.Tensor:
        """1 on completion tokens only. (B, T)."""
        return torch.cat([torch.zeros_like(self.prompt_mask_BP), self.completion_mask_BC], dim=1)


def eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every token id that ends a completion (tokenizer EOS and the generation config's)."""
    ids: set[int] = set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (tokenizer.eos_token_id, configured):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return sorted(ids)


def completion_mask(completion_ids_BC: torch.Tensor, stop_ids: Sequence[int]) -> torch.Tensor:
    """1 on tokens up to and including the first stop token of each row, else 0. (B, C)."""
    is_stop_BC = torch.isin(
        completion_ids_BC,
        torch.tensor(list(stop_ids), dtype=torch.long, device=completion_ids_BC.device),
    )
    stops_before_BC = is_stop_BC.long().cumsum(1) - is_stop_BC.long()
    return (stops_before_BC == 0).long()


@torch.no_grad()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    params: GenerationParams,
    batch_size: int,
) -> Generated:
    """Sample one completion per prompt, ``batch_size`` prompts per ``generate`` call."""
    from transformers import GenerationConfig

    device = next(model.parameters()).device
    stop = eos_ids(model, tokenizer)
    config = GenerationConfig(
        do_sample=params.temperature > 0,
        temperature=params.temperature if params.temperature > 0 else None,
        top_k=0 if params.temperature > 0 else None,
        top_p=params.top_p if params.temperature > 0 else None,
        max_new_tokens=params.max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=stop,
    )
    was_training = model.training
    model.eval()
    prompt_ids_BP, prompt_mask_BP = encode_prompts(tokenizer, prompts)
    chunks = []
    for start in range(0, len(prompts), batch_size):
        ids = prompt_ids_BP[start : start + batch_size].to(device)
        mask = prompt_mask_BP[start : start + batch_size].to(device)
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
        chunks.append(out[:, ids.shape[1] :].cpu())
    model.train(was_training)
    width = max(c.shape[1] for c in chunks)
    pad = tokenizer.pad_token_id
    completion_ids_BC = torch.cat(
        [torch.nn.functional.pad(c, (0, width - c.shape[1]), value=pad) for c in chunks]
    )
    return Generated(
        prompt_ids_BP=prompt_ids_BP,
        prompt_mask_BP=prompt_mask_BP,
        completion_ids_BC=completion_ids_BC,
        completion_mask_BC=completion_mask(completion_ids_BC, stop),
    )


def decode_completions(tokenizer: Any, generated: Generated) -> list[str]:
    """Completion texts without special tokens or padding."""
    rows = generated.completion_ids_BC.tolist()
    lengths = generated.completion_mask_BC.sum(1).tolist()
    return tokenizer.batch_decode(
        [row[:n] for row, n in zip(rows, lengths, strict=True)], skip_special_tokens=True
    )


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


def rollout_batch(
    prompts: Sequence[Prompt],
    samples_per_prompt: int,
    generated: Generated,
    sampler_logprobs_BT: torch.Tensor,
    tokenizer: Any,
) -> RolloutBatch:
    """The rollouts of one sampling call whose ``generated`` rows answer each prompt
    ``samples_per_prompt`` times in a row; log-probabilities off the completions are zeroed."""
    completion_mask_BT = generated.completion_mask_BT
    return RolloutBatch(
        prompts=tuple(p for p in prompts for _ in range(samples_per_prompt)),
        group_ids_B=torch.arange(len(prompts)).repeat_interleave(samples_per_prompt),
        input_ids_BT=generated.input_ids_BT,
        attention_mask_BT=generated.attention_mask_BT,
        completion_mask_BT=completion_mask_BT,
        sampler_logprobs_BT=sampler_logprobs_BT * completion_mask_BT,
        completions=tuple(decode_completions(tokenizer, generated)),
        prompt_len=generated.prompt_ids_BP.shape[1],
    )
