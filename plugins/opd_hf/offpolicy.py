"""Off-policy rollouts: the teacher's answers as training data (the SFT baseline's sampler)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch

from opd_core import Generator, OPDError, Prompt, RolloutBatch, RolloutPrefetcher, hookimpl
from opd_core.api import (
    EpisodeRunner,
    RunContext,
    SampledTurn,
    TurnRequest,
    encode_prompts,
    pad_left,
    pad_right,
)
from opd_hf.sampler import HFSampler


class TeacherSamples(HFSampler):
    """Samples completions from the *teacher* (through its ``opd_eval_generator``), encoded for
    the student like an SFT dataset: chat-templated prompt, answer text, EOS unless the answer
    was cut at ``train.max_new_tokens``. Evaluation still generates with the student.

    The rollouts have ``sampler_role="teacher"`` and no sampler log-probabilities (zeros), so
    pair this sampler with a loss that does not use them: ``loss=cross_entropy``.

    With an ``environment`` the teacher writes every turn of the episodes: it answers the
    conversation so far as chat messages (its own template), its text is tokenized for the
    student like an SFT answer, and the environment's answers are appended at the token level
    as for the student's own episodes.
    """

    def setup(self, ctx: RunContext) -> None:
        super().setup(ctx)
        self.hook = ctx.hook
        self.episodes = EpisodeRunner.for_run(
            ctx, self.params.max_new_tokens, sampler_role="teacher"
        )

    @hookimpl
    def opd_rollout_prefetcher(self) -> RolloutPrefetcher | None:
        """The teacher's answers are not sampled ahead (``train.overlap``): the teacher is busy
        scoring while the student updates, and they would not be stale anyway."""
        return None

    @hookimpl
    def opd_sample_rollouts(
        self, prompts: Sequence[Prompt], samples_per_prompt: int
    ) -> RolloutBatch:
        teacher = self.hook.opd_eval_generator(role="teacher")
        if teacher is None:
            raise OPDError(
                "sampler=teacher_samples needs a teacher that can generate; configure one "
                "with +teacher=<name>."
            )
        if self.episodes is not None:
            return self.episodes.run(
                prompts, samples_per_prompt, lambda requests: self._teacher_turns(teacher, requests)
            )
        expanded = tuple(p for p in prompts for _ in range(samples_per_prompt))
        completions = teacher.generate(expanded, self.params)
        return supervised_rollouts(
            self.student.tokenizer,
            expanded,
            completions,
            group_ids_B=torch.arange(len(prompts)).repeat_interleave(samples_per_prompt),
            max_new_tokens=self.params.max_new_tokens,
            sampler_role="teacher",
        )

    def _teacher_turns(
        self, teacher: Generator, requests: Sequence[TurnRequest]
    ) -> list[SampledTurn]:
        """The teacher's next turn of each live episode, tokenized for the student (EOS
        appended unless the text filled the turn's budget)."""
        asked = [replace(r.prompt, messages=r.messages) for r in requests]
        longest = max(r.max_new_tokens for r in requests)
        texts = teacher.generate(asked, replace(self.params, max_new_tokens=longest))
        tokenizer = self.student.tokenizer
        rows = tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
        eos = tokenizer.eos_token_id
        return [
            SampledTurn(row[: r.max_new_tokens] if len(row) >= r.max_new_tokens else [*row, eos])
            for row, r in zip(rows, requests, strict=True)
        ]


def supervised_rollouts(
    tokenizer: Any,
    prompts: Sequence[Prompt],
    answers: Sequence[str],
    group_ids_B: torch.Tensor,
    max_new_tokens: int,
    sampler_role: str,
) -> RolloutBatch:
    """A rollout batch for supervised training on given ``answers`` to ``prompts``: the prompts
    encoded as the student sees them (:func:`encode_training_prompts`), each answer after its
    prompt (:func:`encode_answers`), the completion mask on exactly the answer tokens, and no
    sampler log-probabilities (zeros: pair with ``loss=cross_entropy``)."""
    prompt_ids_BP, prompt_mask_BP = encode_training_prompts(tokenizer, prompts)
    completion_ids_BC, completion_mask_BC = encode_answers(tokenizer, answers, max_new_tokens)
    input_ids_BT = torch.cat([prompt_ids_BP, completion_ids_BC], dim=1)
    return RolloutBatch(
        prompts=tuple(prompts),
        group_ids_B=group_ids_B,
        input_ids_BT=input_ids_BT,
        attention_mask_BT=torch.cat([prompt_mask_BP, completion_mask_BC], dim=1),
        completion_mask_BT=torch.cat([torch.zeros_like(prompt_mask_BP), completion_mask_BC], dim=1),
        sampler_logprobs_BT=torch.zeros(input_ids_BT.shape),
        completions=tuple(answers),
        prompt_len=prompt_ids_BP.shape[1],
        sampler_role=sampler_role,
    )


def start_of_text_id(tokenizer: Any) -> int:
    """The token a plain-text prompt consists of: BOS, or EOS (the document separator of
    tokenizers without a BOS, such as Qwen's)."""
    for token_id in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    raise OPDError("The student tokenizer has neither a BOS nor an EOS token to start a text.")


def encode_training_prompts(
    tokenizer: Any, prompts: Sequence[Prompt]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts left padded, ``(ids_BP, mask_BP)``: chat prompts rendered as the samplers render
    them (:func:`opd_core.modeling.encode_prompts`); a prompt with no messages (plain text to
    continue, e.g. a document) is the start-of-text token alone, with no chat template."""
    chat = [p for p in prompts if p.messages]
    if len(chat) == len(prompts):
        return encode_prompts(tokenizer, prompts)
    rows: list[list[int]] = []
    if chat:
        ids_BP, mask_BP = encode_prompts(tokenizer, chat)
        rows = [ids[mask.bool()].tolist() for ids, mask in zip(ids_BP, mask_BP, strict=True)]
    chat_rows = iter(rows)
    start = start_of_text_id(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else start
    return pad_left([next(chat_rows) if p.messages else [start] for p in prompts], pad)


def encode_answers(
    tokenizer: Any, answers: Sequence[str], max_new_tokens: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenize answer texts, right padded: ``(ids_BC, mask_BC)``; answers longer than
    ``max_new_tokens`` tokens are cut to it, EOS is appended to the shorter ones (those that
    ended on their own)."""
    eos = getattr(tokenizer, "eos_token_id", None)
    pad = getattr(tokenizer, "pad_token_id", None)
    if eos is None:
        raise OPDError("The student tokenizer has no eos_token_id; SFT answers need one.")
    rows = tokenizer(list(answers), add_special_tokens=False, verbose=False)["input_ids"]
    rows = [row[:max_new_tokens] if len(row) >= max_new_tokens else [*row, eos] for row in rows]
    return pad_right(rows, pad if pad is not None else eos)
