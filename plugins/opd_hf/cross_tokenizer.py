"""The ``cross_tokenizer`` teacher: a ``transformers`` model with its own tokenizer and chat
template scores the text the student wrote.

``target=byte_prefix`` (the default, :mod:`opd_hf.byte_prefix`): at every completion position the
teacher's next-token distribution at the same byte offset of the text, mapped onto the student's
vocabulary by byte-prefix matching (a residual bucket for what maps nowhere). The result is a
``TeacherScores`` like ``teacher=hf``'s: the sampled token's log-probability under that target and
its top-k tokens, so every objective works (the top-k reverse KL, forward KL, JSD, ...).

``target=sequence`` (the earlier path): the student's completion tokens are decoded piece by piece
(their character spans), the completion text is tokenized by the teacher, and each teacher
token's log-probability is spread over the student tokens it overlaps
(:func:`opd_hf.char_spans.spread`); the student's EOS, when the completion ended, gets the
teacher's log-probability of ending there. Exact per sequence (the sum over a completion is the
teacher's log-probability of its text and of ending), approximate per token; sampled-token
objectives only (docs/teachers.md).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from opd_core import OPDError, Prompt, RolloutBatch, TeacherScores, hookimpl
from opd_core.api import (
    ModelShape,
    RunContext,
    Sum,
    eos_ids,
    load_model,
    next_token_logits,
    pad_left,
    render_prompt,
)
from opd_hf.byte_prefix import (
    MIN_LOGPROB,
    BatchPlan,
    PairMap,
    Position,
    TreeRow,
    assemble_targets,
    build_pair_map,
    plan_row,
    row_positions,
    tree_logprobs,
    vocab_bytes,
)
from opd_hf.char_spans import SPLITS, Span, piece_spans, segment_values, spread, token_pieces
from opd_hf.teacher import HFTeacher

TARGETS = ("byte_prefix", "sequence")
"""What the teacher gives: a next-token target over the student's vocabulary at every position
(``byte_prefix``), or its per-sequence log-probability shared among the student's tokens
(``sequence``)."""


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
    """Scores the student's text with a teacher that has another tokenizer."""

    def __init__(
        self,
        model: Mapping[str, Any],
        batch_size: int = 8,
        target: str = "byte_prefix",
        branch_depth: int = 2,
        split: str = "chars",
    ) -> None:
        """``target``: :data:`TARGETS`. ``branch_depth`` (``byte_prefix``): how many teacher
        tokens a followed path may spend inside a teacher token that the student's boundary
        splits (0: only the tokens that extend what the student wrote, renormalised; no extra
        forward work). ``split`` (``sequence``): how a teacher token's log-probability is
        shared among the student tokens it overlaps (:data:`opd_hf.char_spans.SPLITS`): by
        characters, all to the last, or ``segment``: each student token its own sampled
        log-probability plus an equal share of its segment's teacher-minus-student difference
        (``char_spans.segment_values``)."""
        if target not in TARGETS:
            raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        if branch_depth < 0:
            raise ValueError(f"branch_depth must be >= 0, got {branch_depth}")
        super().__init__(model, batch_size=batch_size, check_template=False)
        self.target = target
        self.branch_depth = branch_depth
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
        if self.target == "byte_prefix":
            self.setup_byte_prefix(ctx)

    def setup_byte_prefix(self, ctx: RunContext) -> None:
        """The tokenizer pair's tables, and a check that the teacher scores branch tokens."""
        started = time.perf_counter()
        student_eos = eos_ids(ctx.student.model, ctx.student.tokenizer)
        eos = ctx.student.tokenizer.eos_token_id
        self.pair: PairMap = build_pair_map(
            vocab_bytes(ctx.student.tokenizer, vocab_size(ctx.student.model), "student"),
            vocab_bytes(self.loaded.tokenizer, vocab_size(self.loaded.model), "teacher"),
            student_eos=eos if eos in student_eos else student_eos[0],
            teacher_eos=self.teacher_eos,
        )
        self.student_stops = set(student_eos)
        self.shape = ModelShape.of(self.loaded.model)
        self.setup_s = time.perf_counter() - started
        if self.branch_depth > 0:
            check_tree_attention(self.loaded.model, self.loaded.tokenizer, self.spec.path)

    @hookimpl
    def opd_run_start(self, ctx: RunContext) -> None:
        """Refuse, before the first step, an objective that needs the teacher's top-k tokens
        when the target is per sequence."""
        if self.target != "sequence":
            return
        requests = [r for r in ctx.hook.opd_score_request() if r is not None]
        refuse_top_k(max((r.top_k for r in requests), default=0), ctx.config.loss.get("name"))

    @hookimpl
    @torch.no_grad()
    def opd_score_rollouts(self, rollouts: RolloutBatch, top_k: int) -> TeacherScores:
        if self.target == "byte_prefix":
            return self.score_byte_prefix(rollouts, top_k)
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

    def score_byte_prefix(self, rollouts: RolloutBatch, top_k: int) -> TeacherScores:
        """Byte-prefix-matched targets (:mod:`opd_hf.byte_prefix`) at every completion
        position: the sampled token's log-probability under them and their top-k tokens."""
        mask_BT = rollouts.completion_mask_BT.cpu().bool()
        ids_BT = rollouts.input_ids_BT.cpu()
        B, T = ids_BT.shape
        K = min(top_k, self.pair.student.size)
        logprobs_BT = torch.zeros((B, T), dtype=torch.float32)
        topk_ids_BTK = torch.zeros((B, T, K), dtype=torch.long)
        topk_lps_BTK = torch.zeros((B, T, K), dtype=torch.float32)
        sums = dict.fromkeys(("exact", "healed", "settled", "residual", "short", "dropped"), 0.0)
        counts = {"positions": 0, "tree": 0, "teacher_tokens": 0}
        seconds = {"align": 0.0, "forward": 0.0, "target": 0.0}
        flops = {"scoring": 0.0, "plain": 0.0}
        for start in range(0, B, self.batch_size):
            clock = time.perf_counter()
            plan = BatchPlan()
            where: list[tuple[int, int]] = []
            plain: list[tuple[int, int]] = []  # (prompt, completion) teacher tokens per row
            for b in range(start, min(start + self.batch_size, B)):
                columns = mask_BT[b].nonzero().squeeze(-1).tolist()
                if not columns:
                    continue
                conditions, teacher_tokens = self.positions(ids_BT[b, columns].tolist())
                prompt_ids = self.prompt_ids(rollouts.prompts[b])
                plan_row(plan, self.pair, prompt_ids, conditions, self.branch_depth)
                counts["teacher_tokens"] += teacher_tokens
                plain.append((len(prompt_ids), teacher_tokens + 1))  # + what follows the text
                where += [(b, t) for t in columns]
            if not where:
                continue
            seconds["align"] += time.perf_counter() - clock
            clock = time.perf_counter()
            logprobs_RV = tree_logprobs(
                self.loaded.model, plan.rows, plan.output_nodes(), self.pad_id()
            )
            seconds["forward"] += time.perf_counter() - clock
            clock = time.perf_counter()
            targets = assemble_targets(plan, self.pair, logprobs_RV.cpu())
            b_N, t_N = torch.tensor(where, dtype=torch.long).unbind(1)
            probs_NS = targets.probs_NS
            sampled_N = probs_NS.gather(1, ids_BT[b_N, t_N].unsqueeze(1)).squeeze(1)
            logprobs_BT[b_N, t_N] = sampled_N.log().clamp(min=MIN_LOGPROB).float()
            if K:
                values_NK, index_NK = probs_NS[:, :-1].topk(K, dim=-1)
                topk_ids_BTK[b_N, t_N] = index_NK
                topk_lps_BTK[b_N, t_N] = values_NK.log().clamp(min=MIN_LOGPROB).float()
            seconds["target"] += time.perf_counter() - clock
            for name, values_N in (
                ("exact", targets.exact_N),
                ("healed", targets.healed_N),
                ("settled", targets.settled_N),
                ("residual", targets.residual_N),
                ("short", targets.short_N),
                ("dropped", targets.dropped_N),
            ):
                sums[name] += float(values_N.double().sum())
            counts["positions"] += len(where)
            counts["tree"] += sum(len(r.ids) - r.prompt_end - 1 for r in plan.rows)
            flops["scoring"] += tree_flops(self.shape, plan.rows)
            prompt_R, completion_R = torch.tensor(plain).unbind(1)
            flops["plain"] += self.shape.forward_flops(prompt_R + completion_R - 1, completion_R)
        device = rollouts.input_ids_BT.device
        positions = max(counts["positions"], 1)
        teacher_tokens = counts["teacher_tokens"]
        metrics: dict[str, float] = {
            "teacher/exact_frac": sums["exact"] / positions,
            "teacher/healed_frac": sums["healed"] / positions,
            "teacher/settled_frac": sums["settled"] / positions,
            "teacher/residual_mass": sums["residual"] / positions,
            "teacher/short_mass": sums["short"] / positions,
            "teacher/dropped_mass": sums["dropped"] / positions,
            "teacher/tree_tokens": counts["tree"] / positions,
            "teacher/token_ratio": teacher_tokens / positions,
            "teacher/align_s": seconds["align"],
            "teacher/forward_s": seconds["forward"],
            "teacher/target_s": seconds["target"],
            "teacher/scoring_flops": Sum(flops["scoring"]),
            "teacher/plain_flops": Sum(flops["plain"]),
        }
        return TeacherScores(
            logprobs_BT=logprobs_BT.to(device),
            topk_ids_BTK=topk_ids_BTK.to(device) if K else None,
            topk_logprobs_BTK=topk_lps_BTK.to(device) if K else None,
            metrics=metrics,
        )

    def positions(self, completion_ids: list[int]) -> tuple[list[Position], int]:
        """What the target at each completion position is conditioned on, and the teacher's
        token count of the text (:func:`opd_hf.byte_prefix.row_positions`)."""
        return row_positions(
            self.pair,
            self.loaded.tokenizer,
            self.student_tokenizer,
            completion_ids,
            self.student_stops,
            heal=self.branch_depth > 0,
        )

    def prompt_ids(self, prompt: Prompt) -> list[int]:
        """The prompt in the teacher's chat template and tokens."""
        tokenizer = self.loaded.tokenizer
        has_template = bool(getattr(tokenizer, "chat_template", None))
        ids: list[int] = tokenizer(
            render_prompt(tokenizer, prompt), add_special_tokens=not has_template
        )["input_ids"]
        return ids

    def pad_id(self) -> int:
        pad = self.loaded.tokenizer.pad_token_id
        return int(pad) if pad is not None else 0

    def teacher_row(
        self, prompt: Prompt, completion_ids: list[int], logprobs: torch.Tensor | None = None
    ) -> TeacherRow:
        """The rollout of ``prompt`` with student completion ``completion_ids`` (sampled with
        ``logprobs``, needed by ``split=segment``) re-tokenized."""
        ended = bool(completion_ids) and completion_ids[-1] in self.end_ids
        text_ids = completion_ids[:-1] if ended else completion_ids
        pieces = token_pieces(self.student_tokenizer, text_ids)
        tokenizer = self.loaded.tokenizer
        prompt_ids = self.prompt_ids(prompt)
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


def vocab_size(model: Any) -> int:
    """The number of logits a causal LM outputs per position."""
    head = model.get_output_embeddings()
    return int(head.weight.shape[0]) if head is not None else int(model.config.vocab_size)


def tree_flops(shape: ModelShape, rows: Sequence[TreeRow]) -> float:
    """Forward FLOPs of the teacher over ``rows``' tries: every node is a token, attention over
    the whole unpadded row (as the kernel computes it under a mask), the LM head at every node
    from the prompt's last on."""
    lengths = torch.tensor([len(r.ids) for r in rows])
    heads = torch.tensor([len(r.ids) - r.prompt_end for r in rows])
    return shape.forward_flops(lengths, heads)


def check_tree_attention(model: Any, tokenizer: Any, path: str) -> None:
    """One sentence unless the teacher, given a tree attention mask, scores a branch token as it
    scores the same tokens in a plain forward (left padding included)."""
    ids = tokenizer("12+34=46 #46 ok", add_special_tokens=False)["input_ids"][:6]
    if len(ids) < 4:
        return
    first, second = TreeRow(ids[:4]), TreeRow(ids[:2])
    branch = first.add(1, ids[5 % len(ids)])  # after ids[:2], beside ids[2:4]
    got_XV = tree_logprobs(model, [first, second], [(0, branch), (0, 3), (1, 1)], 0)
    device = next(model.parameters()).device
    expected = []
    for sequence in ([*ids[:2], ids[5 % len(ids)]], ids[:4], ids[:2]):
        logits_1TV = model(input_ids=torch.tensor([sequence], device=device)).logits
        expected.append(torch.log_softmax(logits_1TV[0, -1].float(), dim=-1))
    gap = float((got_XV - torch.stack(expected)).abs().max())
    if gap > 1e-3:
        raise OPDError(
            f"The teacher {path} does not score tokens under a custom 4D attention mask as in "
            f"a plain forward (log-probabilities differ by {gap:.2g}), which teacher.branch_depth "
            "> 0 needs; set teacher.branch_depth=0."
        )
