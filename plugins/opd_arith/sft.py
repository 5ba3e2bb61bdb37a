"""Supervised fine-tuning on the arithmetic task's reference solutions.

Each example is the chat-rendered prompt followed by the solution and EOS; the loss is the mean
next-token cross-entropy over the solution and EOS tokens only (never the prompt). An example may
carry a context (the reference solution) in a system turn before the question, as
``teacher=context`` (``placement=system``, ``template="{context}"``) shows it to a teacher.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from opd_arith.problems import ArithmeticProblem


@dataclass(frozen=True)
class SFTData:
    """Right-padded training sequences: prompt, then solution + EOS, then padding."""

    input_ids_NT: torch.Tensor
    """Token ids of all N examples. (N, T) int64."""
    attention_mask_NT: torch.Tensor
    """1 on real tokens, 0 on padding. (N, T) int64."""
    loss_mask_NT: torch.Tensor
    """1 on solution and EOS tokens (the ones trained on), 0 elsewhere. (N, T) float32."""


def render_prompt(
    tokenizer: PreTrainedTokenizerBase, question: str, context: str | None = None
) -> str:
    """The prompt text a model sees for ``question``: its chat template with the answer header,
    after a system turn holding ``context`` when one is given."""
    messages = [{"role": "user", "content": question}]
    if context is not None:
        messages.insert(0, {"role": "system", "content": context})
    return str(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))


def encode_sft_data(
    tokenizer: PreTrainedTokenizerBase,
    problems: Sequence[ArithmeticProblem],
    contexts: Sequence[str | None] | None = None,
) -> SFTData:
    """Tokenize prompts and solutions (+ EOS) into right-padded tensors with a loss mask;
    ``contexts`` (one per problem, ``None``: none) go in a system turn before the question."""
    if contexts is None:
        contexts = [None] * len(problems)
    if len(contexts) != len(problems):
        raise ValueError(f"{len(contexts)} contexts for {len(problems)} problems; give one each")
    prompts = [
        render_prompt(tokenizer, p.question, c) for p, c in zip(problems, contexts, strict=True)
    ]
    completions = [p.solution + tokenizer.eos_token for p in problems]
    prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(completions, add_special_tokens=False)["input_ids"]
    pairs = list(zip(prompt_ids, completion_ids, strict=True))
    rows = [torch.tensor(p + c) for p, c in pairs]
    masks = [torch.tensor([0.0] * len(p) + [1.0] * len(c)) for p, c in pairs]
    input_ids_NT = torch.nn.utils.rnn.pad_sequence(
        rows, batch_first=True, padding_value=tokenizer.pad_token_id
    )
    loss_mask_NT = torch.nn.utils.rnn.pad_sequence(masks, batch_first=True, padding_value=0.0)
    lengths_N = torch.tensor([len(r) for r in rows])
    attention_mask_NT = (torch.arange(input_ids_NT.shape[1])[None, :] < lengths_N[:, None]).long()
    return SFTData(input_ids_NT, attention_mask_NT, loss_mask_NT)


def completion_loss(model: PreTrainedModel, data: SFTData, rows_B: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the loss-masked tokens of the examples ``rows_B``."""
    attention_mask_BT = data.attention_mask_NT[rows_B]
    width = int(attention_mask_BT.sum(dim=1).max())
    input_ids_BT = data.input_ids_NT[rows_B, :width]
    loss_mask_BT = data.loss_mask_NT[rows_B, :width]
    logits_BTV = model(input_ids=input_ids_BT, attention_mask=attention_mask_BT[:, :width]).logits
    # Position t predicts token t + 1.
    token_loss_BT = F.cross_entropy(
        logits_BTV[:, :-1].float().transpose(1, 2), input_ids_BT[:, 1:], reduction="none"
    )
    target_mask_BT = loss_mask_BT[:, 1:]
    return (token_loss_BT * target_mask_BT).sum() / target_mask_BT.sum().clamp(min=1.0)


def _lr_factor(step: int, steps: int, warmup_steps: int) -> float:
    """Linear warmup to 1, then cosine decay to 0.1 at the last step."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, steps - warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


def _batches(num_examples: int, batch_size: int, steps: int, seed: int) -> list[torch.Tensor]:
    """``steps`` batches of row indices, drawn epoch by epoch without replacement."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.cat(
        [
            torch.randperm(num_examples, generator=generator)
            for _ in range(math.ceil(steps * batch_size / num_examples))
        ]
    )
    return list(order[: steps * batch_size].split(batch_size))


def sft(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    problems: Sequence[ArithmeticProblem],
    steps: int,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    log_every: int = 50,
    progress: bool = True,
    weight_decay: float = 0.01,
    name: str = "sft",
    stop_when: Callable[[int], bool] | None = None,
    check_every: int = 10,
    contexts: Sequence[str | None] | None = None,
) -> list[float]:
    """Fine-tune ``model`` in place on the problems' solutions; returns the loss of every step.

    AdamW with linear warmup (5% of steps) and cosine decay, gradient norm clipped at 1. With
    ``progress``, prints a line every ``log_every`` steps, prefixed by ``name``. With
    ``stop_when``, training ends early after the first step ``s`` (a multiple of ``check_every``)
    for which ``stop_when(s)`` is true; the model is left in eval mode either way. ``contexts``
    gives each problem a context shown in a system turn (:func:`encode_sft_data`).
    """
    if steps <= 0:
        return []
    data = encode_sft_data(tokenizer, problems, contexts)
    return train_on(
        model, data, steps, batch_size, lr, seed, log_every, progress, weight_decay, name,
        stop_when, check_every,
    )  # fmt: skip


def train_on(
    model: PreTrainedModel,
    data: SFTData,
    steps: int,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    log_every: int = 50,
    progress: bool = True,
    weight_decay: float = 0.01,
    name: str = "sft",
    stop_when: Callable[[int], bool] | None = None,
    check_every: int = 10,
) -> list[float]:
    """Fine-tune ``model`` in place on encoded ``data`` (any sequences with a loss mask, such as
    multi-turn conversations); returns the loss of every step. The schedule, logging and early
    stopping are :func:`sft`'s."""
    if steps <= 0:
        return []
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    warmup_steps = max(1, steps // 20)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: _lr_factor(s, steps, warmup_steps)
    )
    model.train()
    losses: list[float] = []
    start = time.perf_counter()
    num_examples = int(data.input_ids_NT.shape[0])
    for step, rows_B in enumerate(_batches(num_examples, batch_size, steps, seed)):
        loss = completion_loss(model, data, rows_B)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        if progress and ((step + 1) % log_every == 0 or step + 1 == steps):
            recent = losses[-log_every:]
            print(
                f"[{name}] step {step + 1}/{steps}  loss {sum(recent) / len(recent):.4f}  "
                f"lr {scheduler.get_last_lr()[0]:.2e}  {time.perf_counter() - start:.0f}s",
                flush=True,
            )
        if stop_when is not None and (step + 1) % check_every == 0:
            model.eval()
            stop = stop_when(step + 1)
            model.train()
            if stop:
                break
    model.eval()
    return losses
