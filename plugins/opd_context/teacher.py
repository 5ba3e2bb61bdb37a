"""The ``context`` teacher: an inner teacher scores each completion after a longer prompt.

The student's completion tokens are kept as they are; only the prompt columns change. The
prompts are re-rendered with their ``teacher_context`` (:mod:`opd_context.placement`) and
encoded with the student's tokenizer (the inner teacher checks it shares the student's
vocabulary, as it would without context), the inner teacher scores the longer rows, and its
scores on the completion columns are moved back to the student's layout. So position ``t`` of
the result is ``log p_teacher(x_t | context, prompt, x_<t)`` for exactly the student's tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch

from opd_context.placement import PLACEMENTS, with_context
from opd_core import (
    GenerationParams,
    Generator,
    OPDError,
    Prompt,
    RolloutBatch,
    TeacherScores,
    hookimpl,
)
from opd_core.api import ModelShape, Registry, RunContext, encode_prompts


class ContextTeacher:
    """Wraps any teacher (``inner``) and shows it each prompt's ``teacher_context``."""

    def __init__(
        self, inner: Mapping[str, Any], placement: str = "system", template: str = "{context}"
    ) -> None:
        """``inner``: the config of the teacher that scores (``hf``, ``vllm``, ``remote``,
        ``student_initial``, ``cross_tokenizer``, ...); ``placement``: ``system`` or ``user``
        (see :func:`opd_context.placement.with_context`); ``template``: how the context is
        written, with ``{context}`` where it goes."""
        if not inner or "name" not in inner:
            raise ValueError("inner must be a teacher config with a name, e.g. {name: hf, ...}")
        if inner["name"] == "context":
            raise ValueError("inner is itself a context teacher; nest none")
        if placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)}, got {placement!r}")
        if "{context}" not in template:
            raise ValueError(f"template must contain {{context}}, got {template!r}")
        self.node = dict(inner)
        self.placement = placement
        self.template = template

    def setup(self, ctx: RunContext) -> None:
        registry = Registry()
        ctx.hook.opd_register_components(registry=registry)
        self.inner: Any = registry.build("teacher", self.node)
        self.tokenizer = ctx.student.tokenizer
        if hasattr(self.inner, "setup"):
            self.inner.setup(ctx)

    def teacher_prompt(self, prompt: Prompt) -> Prompt:
        """``prompt`` with its context where the teacher sees it."""
        try:
            return with_context(prompt, self.placement, self.template)
        except ValueError as err:
            raise OPDError(f"teacher=context: {err}") from None

    @hookimpl
    def opd_run_start(self, ctx: RunContext) -> None:
        """Refuse a task that gives no prompt a context (the teacher would add nothing)."""
        if hasattr(self.inner, "opd_run_start"):
            self.inner.opd_run_start(ctx=ctx)
        pool = ctx.hook.opd_task_prompts(split="train") or []
        if not any(p.teacher_context is not None for p in pool):
            raise OPDError(
                f"teacher=context needs prompts with a teacher_context, but none of task "
                f"'{ctx.config.task['name']}''s train prompts has one; set the task's "
                "teacher_context (chat, ifeval) or use a task that gives one (docs/teachers.md)."
            )

    @hookimpl
    def opd_score_rollouts(self, rollouts: RolloutBatch, top_k: int) -> TeacherScores:
        longer = context_rollouts(
            rollouts, [self.teacher_prompt(p) for p in rollouts.prompts], self.tokenizer
        )
        scores: TeacherScores = self.inner.opd_score_rollouts(rollouts=longer, top_k=top_k)
        prompt_B, _ = longer.sequence_lengths()
        context_tokens = float(prompt_B.float().mean())
        metrics = {**scores.metrics, "teacher/context_prompt_tokens": context_tokens}
        return replace(
            to_student_layout(scores, rollouts.prompt_len, longer.prompt_len), metrics=metrics
        )

    @hookimpl
    def opd_model_shape(self, role: str) -> ModelShape | None:
        answer = getattr(self.inner, "opd_model_shape", None)
        return answer(role=role) if answer is not None else None

    @hookimpl
    def opd_eval_generator(self, role: str) -> Generator | None:
        """The teacher evaluation (``eval.teacher``) answers with the context: the ceiling."""
        if role != "teacher" or not hasattr(self.inner, "opd_eval_generator"):
            return None
        inner: Generator | None = self.inner.opd_eval_generator(role=role)
        return None if inner is None else ContextGenerator(inner, self.teacher_prompt)

    def close(self) -> None:
        if hasattr(self.inner, "close"):
            self.inner.close()


class ContextGenerator:
    """A generator that answers each prompt with its context shown (the teacher's view)."""

    def __init__(self, inner: Generator, teacher_prompt: Any) -> None:
        self.name = inner.name
        self.inner = inner
        self.teacher_prompt = teacher_prompt

    def generate(self, prompts: Sequence[Prompt], params: GenerationParams) -> list[str]:
        """One completion per prompt, generated after its context."""
        return self.inner.generate([self.teacher_prompt(p) for p in prompts], params)


def context_rollouts(
    rollouts: RolloutBatch, prompts: Sequence[Prompt], tokenizer: Any
) -> RolloutBatch:
    """``rollouts`` with their prompt columns replaced by ``prompts`` rendered and encoded with
    ``tokenizer`` (left padded, ``P'`` columns); the completion columns are unchanged."""
    prompt_ids_BP, prompt_mask_BP = encode_prompts(tokenizer, prompts)
    device = rollouts.input_ids_BT.device
    prompt_ids_BP, prompt_mask_BP = prompt_ids_BP.to(device), prompt_mask_BP.to(device)
    start = rollouts.prompt_len
    completion_ids_BC = rollouts.input_ids_BT[:, start:]
    completion_mask_BC = rollouts.completion_mask_BT[:, start:]
    return replace(
        rollouts,
        prompts=tuple(prompts),
        input_ids_BT=torch.cat([prompt_ids_BP, completion_ids_BC], dim=1),
        attention_mask_BT=torch.cat(
            [prompt_mask_BP, rollouts.attention_mask_BT[:, start:].to(prompt_mask_BP.dtype)], dim=1
        ),
        completion_mask_BT=torch.cat([torch.zeros_like(prompt_mask_BP), completion_mask_BC], dim=1),
        sampler_logprobs_BT=torch.cat(
            [
                rollouts.sampler_logprobs_BT.new_zeros(prompt_ids_BP.shape),
                rollouts.sampler_logprobs_BT[:, start:],
            ],
            dim=1,
        ),
        prompt_len=int(prompt_ids_BP.shape[1]),
    )


def to_student_layout(scores: TeacherScores, prompt_len: int, longer_len: int) -> TeacherScores:
    """Scores of the longer rows (prompts of ``longer_len`` columns) on the student's layout
    (prompts of ``prompt_len`` columns): the completion columns moved, the prompt columns 0."""

    def move(values: torch.Tensor) -> torch.Tensor:
        completion = values[:, longer_len:]
        prompt = values.new_zeros((values.shape[0], prompt_len, *values.shape[2:]))
        return torch.cat([prompt, completion], dim=1)

    return TeacherScores(
        logprobs_BT=move(scores.logprobs_BT),
        topk_ids_BTK=None if scores.topk_ids_BTK is None else move(scores.topk_ids_BTK),
        topk_logprobs_BTK=(
            None if scores.topk_logprobs_BTK is None else move(scores.topk_logprobs_BTK)
        ),
        metrics=scores.metrics,
    )
