"""Off-policy rollouts: the teacher's answers as training data (the SFT baseline's sampler)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from opd_core import OPDError, Prompt, RolloutBatch, hookimpl
from opd_core.context import RunContext
from opd_core.modeling import encode_prompts, pad_right
from opd_hf.sampler import HFSampler


class TeacherSamples(HFSampler):
    """Samples completions from the *teacher* (through its ``opd_eval_generator``), encoded for
    the student like an SFT dataset: chat-templated prompt, answer text, EOS unless the answer
    was cut at ``train.max_new_tokens``. Evaluation still generates with the student.

    The rollouts have ``sampler_role="teacher"`` and no sampler log-probabilities (zeros), so
    pair this sampler with a loss that does not use them: ``loss=cross_entropy``.
    """

    def setup(self, ctx: RunContext) -> None:
        super().setup(ctx)
        self.hook = ctx.hook

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
        expanded = tuple(p for p in prompts for _ in range(samples_per_prompt))
        completions = teacher.generate(expanded, self.params)
        tokenizer = self.student.tokenizer
        prompt_ids_BP, prompt_mask_BP = encode_prompts(tokenizer, expanded)
        completion_ids_BC, completion_mask_BC = encode_answers(
            tokenizer, completions, self.params.max_new_tokens
        )
        input_ids_BT = torch.cat([prompt_ids_BP, completion_ids_BC], dim=1)
        return RolloutBatch(
            prompts=expanded,
            group_ids_B=torch.arange(len(prompts)).repeat_interleave(samples_per_prompt),
            input_ids_BT=input_ids_BT,
            attention_mask_BT=torch.cat([prompt_mask_BP, completion_mask_BC], dim=1),
            completion_mask_BT=torch.cat(
                [torch.zeros_like(prompt_mask_BP), completion_mask_BC], dim=1
            ),
            sampler_logprobs_BT=torch.zeros(input_ids_BT.shape),
            completions=tuple(completions),
            prompt_len=prompt_ids_BP.shape[1],
            sampler_role="teacher",
        )


def encode_answers(
    tokenizer: Any, answers: Sequence[str], max_new_tokens: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenize answer texts, right padded: ``(ids_BC, mask_BC)``; EOS is appended to answers
    shorter than ``max_new_tokens`` tokens (those that ended on their own)."""
    eos = getattr(tokenizer, "eos_token_id", None)
    pad = getattr(tokenizer, "pad_token_id", None)
    if eos is None:
        raise OPDError("The student tokenizer has no eos_token_id; SFT answers need one.")
    rows = tokenizer(list(answers), add_special_tokens=False)["input_ids"]
    rows = [row if len(row) >= max_new_tokens else [*row, eos] for row in rows]
    return pad_right(rows, pad if pad is not None else eos)
