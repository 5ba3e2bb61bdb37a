"""Model handles and the few tensor functions every backend shares.

Loading is a hook (:func:`opd_core.hookspecs.opd_load_model`); this module only defines what a
loaded model is, how prompts are rendered to tokens, and the per-token log-probability forward
used by the trainer and the Hugging Face teacher alike.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from opd_core.config import ModelSpec
from opd_core.errors import OPDError
from opd_core.types import Prompt


@dataclass
class LoadedModel:
    """A causal LM and its tokenizer, as returned by :func:`opd_load_model`."""

    model: Any
    """A ``transformers`` causal LM (``PreTrainedModel``) or a peft wrapper of one."""
    tokenizer: Any
    """Its ``PreTrainedTokenizerBase``, with ``padding_side='left'``."""
    spec: ModelSpec


def load_model(hook: Any, spec: ModelSpec, role: str, device: torch.device) -> LoadedModel:
    """Load a model through the ``opd_load_model`` hook; fail clearly if no plugin handles it."""
    loaded = hook.opd_load_model(spec=spec, role=role, device=device)
    if loaded is None:
        raise OPDError(
            f"No installed plugin can load the {role} model '{spec.path}'; give a "
            "local folder or a Hugging Face Hub id."
        )
    return loaded


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """Turn a dtype name into a torch dtype; ``auto`` is bf16 on capable GPUs, else fp32."""
    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in table:
        raise OPDError(f"Unknown dtype '{name}'. Use one of: auto, {', '.join(table)}.")
    return table[name]


TEMPLATE_PROBE = Prompt(
    id="template-probe", messages=({"role": "user", "content": "What is 7 + 5?"},)
)
"""The prompt whose rendering student and teacher tokenizers must agree on."""


def render_prompt(tokenizer: Any, prompt: Prompt) -> str:
    """Render a prompt as the model sees it: its chat template with the generation header.

    A tokenizer without a chat template (a base model) gets the message contents joined by
    newlines.
    """
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            list(prompt.messages), add_generation_prompt=True, tokenize=False
        )
        return str(text)
    return "\n".join(m["content"] for m in prompt.messages)


def check_same_rendering(student_tokenizer: Any, teacher_tokenizer: Any, probe: Prompt) -> None:
    """Fail unless student and teacher turn the same prompt into the same tokens.

    The teacher scores the student's token ids, so both must share a vocabulary and render chat
    prompts identically; a mismatch makes the teacher judge text in a format it never saw.
    """
    student_ids = student_tokenizer(render_prompt(student_tokenizer, probe))["input_ids"]
    teacher_ids = teacher_tokenizer(render_prompt(teacher_tokenizer, probe))["input_ids"]
    if student_ids != teacher_ids:
        raise OPDError(
            "The student and teacher render prompts differently (different chat template or "
            "tokenizer), so the teacher would score text in a format it was not trained on; "
            "use a teacher from the student's model family, or set teacher.check_template=false "
            "if you have verified the mismatch is harmless."
        )


def encode_prompts(tokenizer: Any, prompts: Sequence[Prompt]) -> tuple[torch.Tensor, torch.Tensor]:
    """Render and tokenize prompts, left padded: ``(input_ids_BP, attention_mask_BP)``."""
    texts = [render_prompt(tokenizer, p) for p in prompts]
    has_template = bool(getattr(tokenizer, "chat_template", None))
    rows = tokenizer(texts, add_special_tokens=not has_template)["input_ids"]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return pad_left(rows, pad_id)


def position_ids_from_mask(attention_mask_BT: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, so left padding does not shift them. (B, T)."""
    return (attention_mask_BT.long().cumsum(-1) - 1).clamp(min=0)


def forward_accepts(model: Any, name: str) -> bool:
    """Whether ``model``'s forward (a peft wrapper's base model's) takes argument ``name``."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return name in inspect.signature(type(base).forward).parameters


def next_token_logits(
    model: Any, input_ids_BT: torch.Tensor, attention_mask_BT: torch.Tensor, first: int = 1
) -> torch.Tensor:
    """Logits that predict tokens ``1..T-1`` (the model's outputs at ``0..T-2``), in fp32.

    Shape (B, S, V) with ``S = T - 1``; the helpers below turn them into ``*_BT`` tensors whose
    position 0 (nothing predicts the first token) is 0. Only the logits predicting tokens
    ``first..T-1`` are computed (the LM head runs on those positions alone, when the model takes
    ``logits_to_keep``); those predicting earlier tokens are 0. Pass ``first=prompt_len`` where
    only completion tokens matter.
    """
    B, T = input_ids_BT.shape
    first = min(max(first, 1), T)
    kwargs: dict[str, Any] = {}
    if first > 1 and forward_accepts(model, "logits_to_keep"):
        kwargs["logits_to_keep"] = torch.arange(first - 1, T - 1, device=input_ids_BT.device)
    logits_BXV = model(
        input_ids=input_ids_BT,
        attention_mask=attention_mask_BT,
        position_ids=position_ids_from_mask(attention_mask_BT),
        use_cache=False,
        **kwargs,
    ).logits.float()
    if not kwargs:
        return logits_BXV[:, :-1]
    # X = T - first computed positions; the S - X before them are not needed
    skipped_BXV = logits_BXV.new_zeros((B, first - 1, logits_BXV.shape[-1]))
    return torch.cat([skipped_BXV, logits_BXV], dim=1)


def _pad_first(values_BS: torch.Tensor) -> torch.Tensor:
    """Prepend position 0 (zeros) to a per-position tensor over positions 1..T-1."""
    zeros = values_BS.new_zeros((values_BS.shape[0], 1, *values_BS.shape[2:]))
    return torch.cat([zeros, values_BS], dim=1)


def gather_logprobs(
    logits_BSV: torch.Tensor, input_ids_BT: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """``log softmax(logits / temperature)`` at each actual token; 0 at position 0. (B, T)."""
    scaled_BSV = logits_BSV / temperature if temperature != 1.0 else logits_BSV
    picked_BS = scaled_BSV.gather(-1, input_ids_BT[:, 1:].unsqueeze(-1)).squeeze(-1)
    return _pad_first(picked_BS - torch.logsumexp(scaled_BSV, dim=-1))


def entropy(logits_BSV: torch.Tensor) -> torch.Tensor:
    """Entropy of the distribution predicting each token; 0 at position 0. (B, T)."""
    logprobs_BSV = torch.log_softmax(logits_BSV, dim=-1)
    return _pad_first(-(logprobs_BSV.exp() * logprobs_BSV).sum(-1))


def topk_logprobs(logits_BSV: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` most likely tokens predicted for each position and their log-probabilities.

    Returns ``(ids_BTK, logprobs_BTK)``; position 0 holds token 0 with log-probability 0.
    """
    values_BSK, ids_BSK = logits_BSV.topk(k, dim=-1)
    logprobs_BSK = values_BSK - torch.logsumexp(logits_BSV, dim=-1, keepdim=True)
    return _pad_first(ids_BSK), _pad_first(logprobs_BSK)


def pad_left(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists into ``(ids_BT, mask_BT)`` (prompts, ready for generation)."""
    return _pad(sequences, pad_id, left=True)


def pad_right(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token lists into ``(ids_BT, mask_BT)`` (completions)."""
    return _pad(sequences, pad_id, left=False)


def _pad(
    sequences: Sequence[Sequence[int]], pad_id: int, left: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    width = max((len(s) for s in sequences), default=0)
    ids_BT = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask_BT = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):  # one row per sequence, not per token
        if seq:
            cols = slice(width - len(seq), width) if left else slice(0, len(seq))
            ids_BT[row, cols] = torch.tensor(seq, dtype=torch.long)
            mask_BT[row, cols] = 1
    return ids_BT, mask_BT


def check_same_vocabulary(student_tokenizer: Any, teacher_tokenizer: Any) -> None:
    """The teacher scores the student's token ids, so both must map ids to the same tokens."""
    if student_tokenizer.get_vocab() != teacher_tokenizer.get_vocab():
        raise OPDError(
            "The student and teacher tokenizers have different vocabularies, so the teacher "
            "cannot score the student's tokens; choose a teacher from the student's model family."
        )
