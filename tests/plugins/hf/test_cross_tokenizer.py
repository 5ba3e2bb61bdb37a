"""The cross-tokenizer teacher's per-sequence path (``target=sequence``): today's scores through
the same tokenizer, the teacher's text log-probability per sequence through another one, and
top-k objectives refused; and a run with the default ``target=byte_prefix`` and the default
top-k objective (tests/plugins/hf/test_byte_prefix.py checks its targets)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import DictConfig
from transformers import PreTrainedTokenizerFast

from conftest import TINY_TEACHER, TinyModels, tiny_run_overrides
from opd_arith.build import make_model
from opd_arith.other_tokenizer import build_merging_tokenizer
from opd_arith.problems import make_problems
from opd_context.placement import with_context
from opd_context.teacher import ContextTeacher
from opd_core import OPDError, Prompt, RolloutBatch, ScoreRequest, hookimpl
from opd_core.app import run
from opd_core.config import RunConfig
from opd_core.context import RunContext
from opd_core.metrics import read_metrics
from opd_core.modeling import encode_prompts, pad_right, render_prompt
from opd_core.plugin_manager import make_plugin_manager
from opd_core.rollouts import Generated, eos_ids, rollout_batch
from opd_hf.char_spans import piece_spans, segment_values, spread, token_pieces
from opd_hf.cross_tokenizer import CrossTokenizerTeacher
from opd_hf.loading import load_hf_model
from opd_hf.teacher import HFTeacher

Compose = Callable[[list[str]], DictConfig]
CPU = torch.device("cpu")


def merging_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE that merges across characters (``11``, ``=6``), with another EOS."""
    problems = make_problems(400, seed=0)
    return build_merging_tokenizer([f"{p.question} {p.solution}" for p in problems], 420)


@pytest.fixture(scope="module")
def other_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random teacher over :func:`merging_tokenizer` (another vocabulary and EOS)."""
    folder = tmp_path_factory.mktemp("other_teacher")
    tokenizer = merging_tokenizer()
    make_model(TINY_TEACHER, tokenizer, seed=3).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_context(models: TinyModels, compose_config: Compose, tmp_path: Path) -> RunContext:
    config = RunConfig.from_dict(compose_config(tiny_run_overrides(models, tmp_path)))
    student = load_hf_model(config.student.model, "student", CPU)
    return RunContext(config, make_plugin_manager().hook, CPU, tmp_path, student, seed=0)


COMPLETIONS = (  # (text, ended with EOS)
    ("2*3=6 5+6=11 #11", True),
    ("7*8=56 ü #56", True),
    ("12+34*5", False),  # cut at max_new_tokens
    ("", True),  # EOS only
)


def text_rollouts(tokenizer: Any) -> RolloutBatch:
    """Rollouts whose completions are the student tokenizer's own encoding of readable texts
    (a tiny random student samples byte pieces that decode to no text)."""
    prompts = [
        Prompt(id=f"p{i}", messages=({"role": "user", "content": f"{i}+{i + 7}*3"},))
        for i in range(len(COMPLETIONS))
    ]
    prompt_ids_BP, prompt_mask_BP = encode_prompts(tokenizer, prompts)
    rows = [
        tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] * ended
        for text, ended in COMPLETIONS
    ]
    completion_ids_BC, completion_mask_BC = pad_right(rows, tokenizer.pad_token_id)
    generated = Generated(prompt_ids_BP, prompt_mask_BP, completion_ids_BC, completion_mask_BC)
    logprobs_BT = -torch.rand(
        generated.input_ids_BT.shape, generator=torch.Generator().manual_seed(0)
    )
    return rollout_batch(prompts, 1, generated, logprobs_BT, tokenizer)


def test_spread_keeps_sums_and_aligned_tokens() -> None:
    student = piece_spans(["1", "2", "+", "3", "4"])  # "12+34"
    teacher_spans = [(0, 2), (2, 3), (3, 5), (2, 2)]  # "12", "+", "34", and an empty token
    values = spread([-2.0, -1.0, -4.0, -3.0], teacher_spans, student)
    assert values == [-1.0, -1.0, -4.0, -2.0, -2.0]  # "+" is aligned: -1 exactly, plus the empty
    assert sum(values) == -10.0
    assert spread([-1.0], [(5, 5)], student) == [0.0, 0.0, 0.0, 0.0, -1.0]  # at the end
    assert spread([-1.0], [(0, 1)], [(0, 0)]) == [0.0]  # no text to land on
    split = piece_spans(["a", "", "ü"])  # "ü" written by two byte tokens
    assert spread([-1.0, -2.0, -3.0], [(0, 1), (1, 2), (1, 2)], split) == [-1.0, -2.0, -3.0]
    assert spread([-1.0, -4.0], [(0, 1), (1, 2)], split) == [-1.0, -2.0, -2.0]  # one ü token


def test_split_last_gives_a_teacher_token_to_the_student_token_completing_it() -> None:
    student = piece_spans(["1", "2", "+", "3", "4"])  # "12+34"
    teacher_spans = [(0, 2), (2, 3), (3, 5), (2, 2)]  # "12", "+", "34", and an empty token
    values = spread([-2.0, -1.0, -4.0, -3.0], teacher_spans, student, "last")
    assert values == [0.0, -2.0, -4.0, 0.0, -4.0]  # "+": its own -1 and the empty token's -3
    with pytest.raises(ValueError, match="split must be one of chars, last"):
        spread([-1.0], [(0, 1)], student, "first")


def test_split_segment_shares_each_segments_difference_over_its_own_log_probs() -> None:
    student = piece_spans(["1", "2", "+", "3", "4"])  # "12+34"
    teacher_spans = [(0, 2), (2, 3), (3, 5)]  # "12", "+", "34": segments "12", "+", "34"
    own = [-0.5, -1.5, -0.25, -1.0, 0.0]  # the student's log-probabilities of its tokens
    values = segment_values([-4.0, -1.0, -3.0], teacher_spans, student, own)
    # "12": difference -4 - (-2) = -2, -1 each; "+" is one token: the teacher's -1 exactly
    assert values == [-1.5, -2.5, -1.0, -2.0, -1.0]
    assert sum(values) == -8.0  # the teacher's log-probability of the text
    merged = segment_values([-6.0], [(0, 5)], student, own)  # one teacher token: one segment
    diffs = [v - o for v, o in zip(merged, own, strict=True)]
    assert diffs == pytest.approx([(-6.0 + 3.25) / 5] * 5)  # (-6 - sum(own)) / 5


def test_pieces_join_to_the_decoded_text() -> None:
    tokenizer = merging_tokenizer()
    ids = tokenizer("7*8=56 ü #56", add_special_tokens=False)["input_ids"]
    pieces = token_pieces(tokenizer, ids)
    assert "".join(pieces) == "7*8=56 ü #56"
    assert len(pieces) == len(ids)


def test_the_same_tokenizer_gives_the_hf_teachers_scores(
    tiny_models: TinyModels, compose_config: Compose, tmp_path: Path
) -> None:
    ctx = make_context(tiny_models, compose_config, tmp_path)
    rollouts = text_rollouts(ctx.student.tokenizer)
    node = {"path": str(tiny_models.teacher)}
    hf = HFTeacher(model=node, batch_size=8)
    cross = CrossTokenizerTeacher(model=node, batch_size=3, target="sequence")
    hf.setup(ctx)
    cross.setup(ctx)
    expected = hf.opd_score_rollouts(rollouts=rollouts, top_k=0)
    got = cross.opd_score_rollouts(rollouts=rollouts, top_k=0)
    torch.testing.assert_close(got.logprobs_BT, expected.logprobs_BT, atol=1e-5, rtol=0)
    assert got.metrics["teacher/token_match"] == 1.0


@pytest.mark.parametrize("split", ["chars", "last", "segment"])
def test_another_tokenizer_keeps_each_sequences_text_logprob(
    tiny_models: TinyModels,
    compose_config: Compose,
    tmp_path: Path,
    other_teacher: Path,
    split: str,
) -> None:
    ctx = make_context(tiny_models, compose_config, tmp_path)
    rollouts = text_rollouts(ctx.student.tokenizer)
    cross = CrossTokenizerTeacher(
        model={"path": str(other_teacher)}, batch_size=3, target="sequence", split=split
    )
    cross.setup(ctx)
    with pytest.raises(OPDError, match="different vocabularies"):
        HFTeacher(model={"path": str(other_teacher)}).setup(ctx)  # the default path refuses
    scores = cross.opd_score_rollouts(rollouts=rollouts, top_k=0)
    assert scores.metrics["teacher/token_match"] < 1.0  # the tokenizations differ
    model, tokenizer = cross.loaded.model, cross.loaded.tokenizer
    stops = set(eos_ids(ctx.student.model, ctx.student.tokenizer))
    mask_BT = rollouts.completion_mask_BT.bool()
    for row, (prompt, (text, ended)) in enumerate(zip(rollouts.prompts, COMPLETIONS, strict=True)):
        completion = rollouts.input_ids_BT[row][mask_BT[row]].tolist()
        assert (completion[-1] in stops) == ended
        expected = text_logprob(model, tokenizer, prompt, text, ended)
        assert float(scores.logprobs_BT[row].sum()) == pytest.approx(expected, abs=1e-4)
        assert float(scores.logprobs_BT[row][~mask_BT[row]].abs().sum()) == 0.0


def text_logprob(model: Any, tokenizer: Any, prompt: Prompt, text: str, ended: bool) -> float:
    """``log p(text [, then any EOS] | prompt)`` by one plain forward of the teacher."""
    prompt_ids = tokenizer(render_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"]
    text_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    ids_1T = torch.tensor([[*prompt_ids, *text_ids]])
    with torch.no_grad():
        logprobs_TV = torch.log_softmax(model(input_ids=ids_1T).logits[0].float(), dim=-1)
    total = sum(float(logprobs_TV[len(prompt_ids) - 1 + k, t]) for k, t in enumerate(text_ids))
    if ended:
        total += float(torch.logsumexp(logprobs_TV[-1, eos_ids(model, tokenizer)], dim=0))
    return total


def test_it_scores_after_a_context_as_the_inner_teacher_of_teacher_context(
    tiny_models: TinyModels, compose_config: Compose, tmp_path: Path, other_teacher: Path
) -> None:
    ctx = make_context(tiny_models, compose_config, tmp_path)
    plain = text_rollouts(ctx.student.tokenizer)
    rollouts = replace(
        plain, prompts=tuple(replace(p, teacher_context="5+6=11") for p in plain.prompts)
    )
    teacher = ContextTeacher(
        inner={
            "name": "cross_tokenizer",
            "model": {"path": str(other_teacher)},
            "target": "sequence",
        }
    )
    teacher.setup(ctx)
    scores = teacher.opd_score_rollouts(rollouts=rollouts, top_k=0)
    model, tokenizer = teacher.inner.loaded.model, teacher.inner.loaded.tokenizer
    for row, (prompt, (text, ended)) in enumerate(zip(rollouts.prompts, COMPLETIONS, strict=True)):
        shown = with_context(prompt, "system", "{context}")
        expected = text_logprob(model, tokenizer, shown, text, ended)
        assert float(scores.logprobs_BT[row].sum()) == pytest.approx(expected, abs=1e-4)
    without = teacher.inner.opd_score_rollouts(rollouts=plain, top_k=0)
    assert not torch.allclose(without.logprobs_BT, scores.logprobs_BT)


class TopKLoss:
    @hookimpl
    def opd_score_request(self) -> ScoreRequest:
        return ScoreRequest(top_k=20)


def test_top_k_objectives_are_refused_in_one_sentence(
    tiny_models: TinyModels, compose_config: Compose, tmp_path: Path, other_teacher: Path
) -> None:
    ctx = make_context(tiny_models, compose_config, tmp_path)
    cross = CrossTokenizerTeacher(model={"path": str(other_teacher)}, target="sequence")
    cross.setup(ctx)
    ctx.hook = make_plugin_manager([TopKLoss()]).hook
    with pytest.raises(OPDError, match=r"loss=reverse_kl_topk asks for the teacher's top-20"):
        cross.opd_run_start(ctx=ctx)
    with pytest.raises(
        OPDError, match=r"use objective=opd \(advantage=reverse_kl, loss=importance_sampling\)\.$"
    ):
        cross.opd_score_rollouts(rollouts=text_rollouts(ctx.student.tokenizer), top_k=5)


@pytest.mark.parametrize("target", ["sequence", "byte_prefix"])
def test_a_run_with_a_teacher_of_another_tokenizer(
    tiny_models: TinyModels,
    compose_config: Compose,
    tmp_path: Path,
    other_teacher: Path,
    target: str,
) -> None:
    out = tmp_path / "run"
    overrides = [
        o
        for o in tiny_run_overrides(tiny_models, out, steps=2)
        if not o.startswith(("+teacher", "teacher."))
    ]
    extra = [
        "+teacher=cross_tokenizer",
        f"teacher.model.path={other_teacher}",
        f"teacher.target={target}",
        "task.eval_size=4",
        "eval.at_start=false",
    ]
    if target == "sequence":  # the per-sequence path serves sampled-token objectives only
        extra.append("objective=opd")
    run(compose_config([*overrides, *extra]), out, pm=make_plugin_manager())
    records = read_metrics(out / "metrics.jsonl")
    assert len(records) == 2
    if target == "sequence":
        assert all(0.0 <= r["teacher/token_match"] < 1.0 for r in records)
        return
    for record in records:  # the default objective: the top-k reverse KL over byte-prefix targets
        assert record["reverse_kl_topk"] > 0
        assert 0.0 <= record["teacher/healed_frac"] <= 1.0
        assert 0.0 <= record["teacher/exact_frac"] <= 1.0
        assert record["teacher/scoring_flops"] > 0.0 and record["teacher/tree_tokens"] >= 1.0
        # the ledger books the teacher's own count (its tree over its tokens), not a forward
        # over the student's tokens
        assert record["flops_step/teacher_scoring"] == record["teacher/scoring_flops"]
