"""The ``cross_tokenizer`` teacher: a ``transformers`` model with its own tokenizer and chat
template scores the text the student wrote, mapped back onto the student's tokens.

For each rollout the student's completion tokens are decoded piece by piece (their character
spans), the prompt is rendered with the teacher's chat template, and the completion text is
tokenized by the teacher. The teacher's log-probability of each of its tokens is spread over the
student tokens it overlaps (:func:`opd_hf.char_spans.spread`); the student's EOS, when the
completion ended, gets the teacher's log-probability of ending there (the same token when the
teacher's vocabulary has it, else any of the teacher's EOS tokens). Exact: the sum over a
completion is the teacher's log-probability of its text (under the teacher's tokenization of it)
and of ending. Approximate: per token, where the two tokenizations split the text differently.
Only sampled-token objectives can use it (docs/teachers.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from opd_core import OPDError, Prompt, RolloutBatch, TeacherScores, hookimpl
from opd_core.api import RunContext, eos_ids, load_model, next_token_logits, pad_left, render_prompt
from opd_hf.char_spans import SPLITS, Span, piece_spans, segment_values, spread, token_pieces
from opd_hf.teacher import HFTeacher


@dataclass(frozen=True)
class TeacherRow:
    """One rollout in the teacher's tokens, and how its completion maps to the student's."""

    ids: list[int]
    """Teacher prompt + completion text tokens (+ one end token when the completion ended)."""
    prompt_len: int
    """Number of teacher prompt tokens at the start of ``ids``."""
    text_spans: list[Span]
    """Character span of each teacher completion token in the completion text."""
    student_spans: list[Span]
    """Character span of each student completion token (its EOS excluded)."""
    ended: bool
    """Whether the student's completion ended with an EOS token (scored as the teacher ending)."""
    end_id: int | None
    """The student's EOS token in the teacher's vocabulary; ``None``: any teacher EOS."""
    student_logprobs: list[float]
    """The sampler's log-probability of each student completion token (its EOS excluded)."""


class CrossTokenizerTeacher(HFTeacher):
    """Scores the student's text with a teacher that has another tokenizer (sampled tokens only)."""

    def __init__(self, model: Mapping[str, Any], batch_size: int = 8, split: str = "chars") -> None:
        """``split``: how a teacher token's log-probability is shared among the student tokens
        it overlaps (:data:`opd_hf.char_spans.SPLITS`): by characters, all to the last, or
        ``segment``: each student token its own sampled log-probability plus an equal share of
        its segment's teacher-minus-student difference (``char_spans.segment_values``)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        super().__init__(model, batch_size=batch_size, check_template=False)
        self.split = split

    def setup(self, ctx: RunContext) -> None:
        if getattr(ctx.config, "environment", None) is not None:
            raise OPDError(
                "teacher=cross_tokenizer re-tokenizes the student's text, so it cannot score "
                "multi-turn episodes token for token; use a teacher that shares the student's "
                "tokenizer (hf, vllm, remote) with an environment."
            )
        self.loaded = load_model(ctx.hook, self.spec, "teacher", ctx.device)
        self.loaded.model.eval().requires_grad_(False)
        self.student_tokenizer = ctx.student.tokenizer
        self.teacher_eos = eos_ids(self.loaded.model, self.loaded.tokenizer)
        teacher_vocab = self.loaded.tokenizer.get_vocab()
        self.end_ids: dict[int, int | None] = {
            eos: teacher_vocab.get(ctx.student.tokenizer.convert_ids_to_tokens(eos))
            for eos in eos_ids(ctx.student.model, ctx.student.tokenizer)
        }
        """Each student EOS token's id in the teacher's vocabulary (``None``: it has none)."""
        if not self.teacher_eos:
            raise OPDError(
                f"The teacher {self.spec.path} names no EOS token (tokenizer or generation "
                "config), so cross-tokenizer scoring cannot score where the student stopped."
            )
        for tokenizer, who in (
            (ctx.student.tokenizer, "student"),
            (self.loaded.tokenizer, "teacher"),
        ):
            if getattr(tokenizer, "backend_tokenizer", None) is None:
                raise OPDError(
                    f"teacher=cross_tokenizer needs fast (Rust) tokenizers, but the {who}'s "
                    f"is a {type(tokenizer).__name__}; load it with use_fast=True."
                )

    @hookimpl
    def opd_run_start(self, ctx: RunContext) -> None:
        """Refuse, before the first step, an objective that needs the teacher's top-k tokens."""
        requests = [r for r in ctx.hook.opd_score_request() if r is not None]
        refuse_top_k(max((r.top_k for r in requests), default=0), ctx.config.loss.get("name"))

    @hookimpl
    @torch.no_grad()
    def opd_score_rollouts(self, rollouts: RolloutBatch, top_k: int) -> TeacherScores:
        refuse_top_k(top_k, None)
        logprobs_BT = torch.zeros_like(rollouts.sampler_logprobs_BT, device="cpu")
        mask_BT = rollouts.completion_mask_BT.cpu().bool()
        ids_BT = rollouts.input_ids_BT.cpu()
        sampler_BT = rollouts.sampler_logprobs_BT.cpu().float()
        rows = [
            self.teacher_row(prompt, ids_BT[b][mask_BT[b]].tolist(), sampler_BT[b][mask_BT[b]])
            for b, prompt in enumerate(rollouts.prompts)
        ]
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            for offset, values in enumerate(self.score_rows(chunk)):
                b = start + offset
                columns = mask_BT[b].nonzero().squeeze(-1)
                logprobs_BT[b, columns] = torch.tensor(values, dtype=logprobs_BT.dtype)
        return TeacherScores(
            logprobs_BT=logprobs_BT.to(rollouts.input_ids_BT.device),
            metrics={"teacher/token_match": token_match(rows)},
        )

    def teacher_row(
        self, prompt: Prompt, completion_ids: list[int], logprobs: torch.Tensor | None = None
    ) -> TeacherRow:
        """The rollout of ``prompt`` with student completion ``completion_ids`` (sampled with
        ``logprobs``, needed by ``split=segment``) re-tokenized."""
        ended = bool(completion_ids) and completion_ids[-1] in self.end_ids
        text_ids = completion_ids[:-1] if ended else completion_ids
        pieces = token_pieces(self.student_tokenizer, text_ids)
        tokenizer = self.loaded.tokenizer
        has_template = bool(getattr(tokenizer, "chat_template", None))
        prompt_ids = tokenizer(
            render_prompt(tokenizer, prompt), add_special_tokens=not has_template
        )["input_ids"]
        encoded = tokenizer("".join(pieces), add_special_tokens=False, return_offsets_mapping=True)
        end_id = self.end_ids[completion_ids[-1]] if ended else None
        tail = [end_id if end_id is not None else self.teacher_eos[0]] if ended else []
        return TeacherRow(
            ids=[*prompt_ids, *encoded["input_ids"], *tail],
            prompt_len=len(prompt_ids),
            text_spans=[tuple(span) for span in encoded["offset_mapping"]],
            student_spans=piece_spans(pieces),
            ended=ended,
            end_id=end_id,
            student_logprobs=[] if logprobs is None else logprobs[: len(text_ids)].tolist(),
        )

    def score_rows(self, rows: Sequence[TeacherRow]) -> list[list[float]]:
        """Per student completion token (EOS included), the teacher's log-probabilities."""
        model = self.loaded.model
        device = next(model.parameters()).device
        pad = self.loaded.tokenizer.pad_token_id
        ids_BT, mask_BT = pad_left([r.ids for r in rows], pad if pad is not None else 0)
        ids_BT, mask_BT = ids_BT.to(device), mask_BT.to(device)
        logits_BSV = next_token_logits(model, ids_BT, mask_BT)
        lse_BS = torch.logsumexp(logits_BSV, dim=-1)
        picked_BS = logits_BSV.gather(-1, ids_BT[:, 1:].unsqueeze(-1)).squeeze(-1) - lse_BS
        eos = torch.tensor(self.teacher_eos, device=device)
        any_end_BS = torch.logsumexp(logits_BSV[:, :, eos], dim=-1) - lse_BS
        width = ids_BT.shape[1]
        out = []
        for b, row in enumerate(rows):
            first = width - len(row.ids) + row.prompt_len  # column of the first completion token
            n_text = len(row.text_spans)
            text_lps = picked_BS[b, first - 1 : first - 1 + n_text].tolist()
            if self.split == "segment":
                values = segment_values(
                    text_lps, row.text_spans, row.student_spans, row.student_logprobs
                )
            else:
                values = spread(text_lps, row.text_spans, row.student_spans, self.split)
            if row.ended:
                s = first - 1 + n_text  # the position predicting what follows the text
                end = picked_BS[b, s] if row.end_id is not None else any_end_BS[b, s]
                values.append(float(end))
            out.append(values)
        return out


def token_match(rows: Sequence[TeacherRow]) -> float:
    """Share of student tokens (with characters) that are exactly one teacher token: these get
    the teacher's log-probability exactly, the rest a share of it (1.0 with no text)."""
    exact = total = 0
    for row in rows:
        teacher_spans = set(row.text_spans)
        written = [s for s in row.student_spans if s[1] > s[0]]
        exact += sum(1 for s in written if s in teacher_spans)
        total += len(written)
    return exact / total if total else 1.0


def refuse_top_k(top_k: int, loss: str | None) -> None:
    """One sentence for an objective that needs the teacher's distribution over the student's
    vocabulary, which a teacher with another tokenizer does not have."""
    if top_k > 0:
        which = f"loss={loss}" if loss else "the objective"
        raise OPDError(
            f"teacher=cross_tokenizer scores only the student's sampled tokens, but {which} "
            f"asks for the teacher's top-{top_k} tokens over the student's vocabulary; use "
            "objective=opd (advantage=reverse_kl, loss=importance_sampling)."
        )
