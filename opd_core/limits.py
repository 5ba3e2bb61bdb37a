"""Limits that depend on the loaded student: answer and prompt lengths, teacher top-k.

Checked once the student's config is known, before any data is loaded or any token generated: a
``max_new_tokens`` the model cannot hold would otherwise generate far past its positions, and one
very long prompt line would grow memory until the process dies.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from opd_core.errors import OPDError
from opd_core.modeling import render_prompt
from opd_core.types import Prompt

log = logging.getLogger("opd_core")

CHARS_PER_TOKEN_BOUND = 64
"""No tokenizer packs more characters than this into one token on ordinary text: a prompt with
more than ``limit * 64`` characters is over the limit without being tokenized."""


def model_max_length(model: Any) -> int | None:
    """Positions the model can attend over (``max_position_embeddings``), if its config says."""
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def vocab_size(model: Any) -> int | None:
    """The size of the model's output vocabulary, if its config says."""
    value = getattr(getattr(model, "config", None), "vocab_size", None)
    return value if isinstance(value, int) and value > 0 else None


def check_generation_lengths(max_length: int | None, lengths: dict[str, int]) -> None:
    """Each ``key: max_new_tokens`` must leave the model room for at least one prompt token."""
    if max_length is None:
        return
    for key, value in lengths.items():
        if value >= max_length:
            raise OPDError(
                f"Invalid {key}={value}: the student holds at most {max_length} tokens "
                f"(prompt and answer together); use {key}<={max_length // 2} or so."
            )


def check_top_k(top_k: int, vocab: int | None) -> None:
    """A teacher top-k larger than the vocabulary cannot be scored."""
    if vocab is not None and top_k > vocab:
        raise OPDError(
            f"Invalid top_k={top_k}: the vocabulary has only {vocab} tokens; set loss.top_k "
            f"to at most {vocab} (20 is typical)."
        )


def prompt_token_limit(
    configured: int | None, max_length: int | None, max_new_tokens: int
) -> int | None:
    """The prompt limit in use: the configured one, else what the model holds beside an answer."""
    if configured is not None:
        return configured
    return None if max_length is None else max_length - max_new_tokens


def limit_prompts(
    prompts: Sequence[Prompt], tokenizer: Any, limit: int | None, policy: str
) -> list[Prompt]:
    """The prompts that fit in ``limit`` tokens; the others are skipped (counted) or refused.

    ``policy`` is ``skip`` (log one warning with the count) or ``error``.
    """
    if limit is None:
        return list(prompts)
    kept: list[Prompt] = []
    too_long: list[Prompt] = []
    for prompt in prompts:
        (kept if prompt_fits(prompt, tokenizer, limit) else too_long).append(prompt)
    if not too_long:
        return kept
    if policy == "error" or not kept:
        raise OPDError(
            f"{len(too_long)} of {len(prompts)} training prompts are longer than "
            f"{limit} tokens (first: '{too_long[0].id}'); shorten them, raise "
            "train.max_prompt_tokens, or set train.long_prompts=skip to leave them out."
        )
    log.warning(
        "skipped %d of %d training prompts longer than %d tokens (first: %s); "
        "train.max_prompt_tokens sets the limit",
        len(too_long),
        len(prompts),
        limit,
        too_long[0].id,
    )
    return kept


def prompt_fits(prompt: Prompt, tokenizer: Any, limit: int) -> bool:
    """Whether the rendered prompt has at most ``limit`` tokens (huge ones are not tokenized)."""
    chars = sum(len(m.get("content", "")) for m in prompt.messages)
    if chars > limit * CHARS_PER_TOKEN_BOUND:
        return False
    if not prompt.messages:  # a plain text (SFT on documents): nothing precedes the answer
        return True
    text = render_prompt(tokenizer, prompt)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"]) <= limit
