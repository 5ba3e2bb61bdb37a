"""The token layout of a sampling call: prompts and completions side by side, the completion
mask up to the first stop token, and the :class:`RolloutBatch` built from them (shared by every
sampler that writes rollouts: ``sampler=hf``, ``sampler=vllm``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from opd_core.types import Prompt, RolloutBatch


@dataclass(frozen=True)
class Generated:
    """Prompts and completions of one ``generate`` call, unpadded to a common layout."""

    prompt_ids_BP: torch.Tensor
    prompt_mask_BP: torch.Tensor
    completion_ids_BC: torch.Tensor
    completion_mask_BC: torch.Tensor
    """1 up to and including the first EOS."""
    completion_logprobs_BC: torch.Tensor | None = None
    """Log-probability of each sampled token under the sampling distribution (temperature
    applied, before top-p); 0 after the first EOS. None when the sampler did not keep them."""

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


def completion_pad_id(tokenizer: Any) -> int:
    """The id completions are padded with after their stop token (the tokenizer's pad, else 0)."""
    return int(tokenizer.pad_token_id) if tokenizer.pad_token_id is not None else 0


def decode_completions(tokenizer: Any, generated: Generated) -> list[str]:
    """Completion texts without special tokens or padding."""
    rows = generated.completion_ids_BC.tolist()
    lengths = generated.completion_mask_BC.sum(1).tolist()
    return tokenizer.batch_decode(
        [row[:n] for row, n in zip(rows, lengths, strict=True)], skip_special_tokens=True
    )


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


def sampled_rollout_batch(
    prompts: Sequence[Prompt], samples_per_prompt: int, generated: Generated, tokenizer: Any
) -> RolloutBatch:
    """:func:`rollout_batch` whose sampler log-probabilities are those ``generated`` kept."""
    assert generated.completion_logprobs_BC is not None
    sampler_logprobs_BT = torch.cat(
        [torch.zeros(generated.prompt_ids_BP.shape), generated.completion_logprobs_BC], dim=1
    )
    return rollout_batch(prompts, samples_per_prompt, generated, sampler_logprobs_BT, tokenizer)
