"""Byte-prefix matching (``teacher=cross_tokenizer``, ``target=byte_prefix``): targets computed by
hand on tiny vocabularies, and against a brute-force marginal over every teacher path through
plain forwards of a real model with the demo's two tokenizers."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import DictConfig
from test_cross_tokenizer import make_context
from transformers import PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import bytes_to_unicode

from conftest import TINY_TEACHER, TinyModels
from opd_arith.build import make_model
from opd_arith.other_tokenizer import build_merging_tokenizer
from opd_arith.problems import make_problems
from opd_core import OPDError, Prompt, RolloutBatch
from opd_core.modeling import encode_prompts, pad_right, render_prompt
from opd_core.rollouts import Generated, eos_ids, rollout_batch
from opd_hf.byte_prefix import (
    EXACT_TOL,
    BatchPlan,
    TreeRow,
    VocabBytes,
    assemble_targets,
    build_pair_map,
    plan_row,
    position,
    tree_logprobs,
    vocab_bytes,
)
from opd_hf.cross_tokenizer import CrossTokenizerTeacher

Compose = Callable[[list[str]], DictConfig]


def vocab(pieces: list[bytes], special: set[int]) -> VocabBytes:
    return VocabBytes(
        pieces=pieces,
        special=[i in special for i in range(len(pieces))],
        fallback=[False] * len(pieces),
    )


# the known failure mode: the teacher writes "201" as one token, the student writes digits
STUDENT = vocab([b"<|eos|>", b"2", b"0", b"1", b"+"], special={0})
TEACHER = vocab([b"</s>", b"2", b"0", b"1", b"201", b"20", b"+", b"x"], special={0})
PAIR = build_pair_map(STUDENT, TEACHER, student_eos=0, teacher_eos=[0])


def mapped(p_V: torch.Tensor) -> torch.Tensor:
    """A teacher distribution on STUDENT's vocabulary + residual, mapped by hand: each teacher
    token to the longest student token prefixing it (``</s>`` to the student's EOS)."""
    return torch.stack(
        [
            p_V[0],  # <|eos|> <- </s>
            p_V[1] + p_V[4] + p_V[5],  # "2" <- "2", "201", "20"
            p_V[2],  # "0"
            p_V[3],  # "1"
            p_V[6],  # "+"
            p_V[7],  # residual <- "x"
        ]
    )


def test_the_tables_of_a_hand_made_pair() -> None:
    assert PAIR.map_V.tolist() == [0, 1, 2, 3, 1, 1, 4, 5]  # 5: the residual bucket
    assert not PAIR.filled_V.any()  # rows inside teacher tokens: filled when first needed
    PAIR.fill(torch.tensor([4, 4, 5]))
    assert PAIR.filled_V.tolist() == [False] * 4 + [True, True] + [False] * 2
    start = int(PAIR.shift_offsets_V[4])  # "201" from each byte on: "2", "0", "1"
    assert PAIR.shift_flat[start : start + 3].tolist() == [1, 2, 3]
    assert not PAIR.short_V.any()
    assert PAIR.extension_range(b"2") == (
        PAIR.sorted_bytes.index(b"20"),
        PAIR.sorted_bytes.index(b"201") + 1,
    )
    # a student token "01" that no teacher token spells: the teacher's "0" is short
    with_01 = vocab([*STUDENT.pieces, b"01"], special={0})
    assert build_pair_map(with_01, TEACHER, 0, [0]).short_V.tolist() == [
        False, False, True, False, False, False, False, False
    ]  # fmt: skip


# the student wrote "2", "0", "1", EOS; the teacher's tokens of "2", "20", "201"
WRITTEN = [([], None), ([1], b"2"), ([5], b"0"), ([4], b"1")]


def hand_plan(depth: int) -> BatchPlan:
    plan = BatchPlan()
    where = [position(PAIR, ids, b"", last, heal=depth > 0) for ids, last in WRITTEN]
    plan_row(plan, PAIR, [7, 6], where, depth)
    return plan


def sequence(plan: BatchPlan, row: int, node: int) -> tuple[int, ...]:
    """The teacher tokens of a trie node after its row's prompt."""
    tree, out = plan.rows[row], []
    while node != tree.prompt_end:
        out.append(tree.ids[node])
        node = tree.parents[node]
    return tuple(reversed(out))


def fake_teacher(seq: tuple[int, ...]) -> torch.Tensor:
    """A fixed random next-token distribution after each teacher token sequence."""
    generator = torch.Generator().manual_seed(hash(seq) % (1 << 31))
    return torch.log_softmax(torch.randn(len(TEACHER.pieces), generator=generator), -1)


def fake_logprobs(plan: BatchPlan) -> torch.Tensor:
    return torch.stack([fake_teacher(sequence(plan, r, n)) for r, n in plan.output_nodes()])


@pytest.mark.parametrize("depth", [0, 1, 2])
def test_targets_computed_by_hand(depth: int) -> None:
    plan = hand_plan(depth)
    got = assemble_targets(plan, PAIR, fake_logprobs(plan))

    def P(*seq: int) -> torch.Tensor:
        return fake_teacher(seq).double().exp()

    root = P()
    one_hot = torch.eye(6, dtype=torch.float64)
    expected, dropped = [mapped(root)], [0.0] * 4
    if depth == 0:  # the teacher's tokens as they are: after "2", after "20", after "201"
        expected += [mapped(P(1)), mapped(P(5)), mapped(P(4))]
    else:
        # after "2": healed; "201" and "20" go on with "0", or the teacher's "2", then anything
        total = root[4] + root[5] + root[1]
        expected.append(((root[4] + root[5]) * one_hot[2] + root[1] * mapped(P(1))) / total)
        # after "20": "201" goes on with "1"; "20" then anything; "2", "0", then anything
        if depth == 2:
            total = root[4] + root[5] + root[1] * P(1)[2]
            expected.append(
                (
                    root[4] * one_hot[3]
                    + root[5] * mapped(P(5))
                    + root[1] * P(1)[2] * mapped(P(1, 2))
                )
                / total
            )
        else:  # "2" would need a second token inside "20": not followed
            total = root[4] + root[5]
            expected.append((root[4] * one_hot[3] + root[5] * mapped(P(5))) / total)
            dropped[2] = float(root[1] / (total + root[1]))
        # after "201": no teacher token goes on across the offset: its tokens as they are
        expected.append(mapped(P(4)))
    torch.testing.assert_close(got.probs_NS, torch.stack(expected), atol=1e-6, rtol=0)
    torch.testing.assert_close(
        got.dropped_N, torch.tensor(dropped, dtype=torch.float64), atol=1e-6, rtol=0
    )
    assert got.healed_N.tolist() == [False, depth > 0, depth > 0, False]
    # settled: nothing written; healed (at depth 0 the teacher's "2" and "20" say "no merge
    # follows", which the student's do not); nothing extends "201"
    assert got.settled_N.tolist() == [True, depth > 0, depth > 0, True]
    torch.testing.assert_close(got.residual_N, torch.stack(expected)[:, -1])
    assert len(plan.rows[0].ids) - plan.rows[0].prompt_end - 1 == {0: 3, 1: 3, 2: 4}[depth]


def test_healing_needs_a_teacher_merge_the_student_cannot_make() -> None:
    # "2" can be extended by the teacher ("20", "201") and not by the student: healed
    assert position(PAIR, [6, 1], b"", b"2").healed
    # "+" has no longer teacher token: the teacher's boundary is no artefact
    assert not position(PAIR, [1, 6], b"", b"+").healed
    # a student that has "20" commits to a boundary after "2" by writing it alone
    with_20 = build_pair_map(vocab([*STUDENT.pieces, b"20"], special={0}), TEACHER, 0, [0])
    kept = position(with_20, [6, 1], b"", b"2")
    assert not kept.healed and kept.context == [6, 1]
    assert not kept.settled  # the teacher extends "2" twice ("20", "201"), the student once
    assert not position(PAIR, [6, 1], b"", b"2", heal=False).healed


def test_exact_positions_need_little_approximated_mass() -> None:
    plan = hand_plan(1)
    lp_RV = fake_logprobs(plan)
    lp_RV[:, 7] = -1e4  # no residual mass
    lp_RV[:, 1] = -1e4  # and no path through a lone "2", which would need 2 tokens for "20"
    got = assemble_targets(plan, PAIR, lp_RV)
    assert got.exact_N.all()
    got = assemble_targets(plan, PAIR, fake_logprobs(plan))
    assert not got.exact_N[2] and got.dropped_N[2] > EXACT_TOL  # "2", "0": not followed
    assert not got.exact_N[0] and got.residual_N[0] > EXACT_TOL  # "x" maps nowhere


def test_a_tree_forward_scores_a_branch_as_a_plain_forward(tiny_models: TinyModels) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_models.teacher).eval()
    ids = [10, 11, 12, 13, 14, 15]
    first, second = TreeRow(ids), TreeRow(ids[:3])
    deep = first.add(first.add(2, 20), 21)  # [20, 21] after ids[:3]
    side = first.add(0, 22)  # 22 after ids[:1]
    nodes = [(0, deep), (0, first.parents[deep]), (0, side), (0, 5), (1, 2)]
    got = tree_logprobs(model, [first, second], nodes, pad_id=0)
    with torch.no_grad():
        for x, seq in enumerate(([*ids[:3], 20, 21], [*ids[:3], 20], [ids[0], 22], ids, ids[:3])):
            plain = torch.log_softmax(model(input_ids=torch.tensor([seq])).logits[0, -1], -1)
            torch.testing.assert_close(got[x], plain, atol=1e-5, rtol=0)


# --- against a brute-force marginal over every teacher path, with real tokenizers ----------

TEXTS = (  # (completion, ended with EOS)
    ("2*3=6 5+6=11 #11", True),
    ("1+200=201 #201", True),  # the teacher writes "201" as one token, the student digits
    (
        "7*8=56 ü #56 €",
        True,
    ),  # multi-byte characters: one teacher token, byte tokens to the student
    ("12+34*5", False),  # cut at max_new_tokens
)


def multibyte_merging_tokenizer() -> PreTrainedTokenizerFast:
    """The demo's BPE teacher tokenizer (merges across characters, EOS ``</s>``), trained on
    texts that also make it merge ``201`` and the UTF-8 bytes of ``ü`` and ``€``."""
    problems = make_problems(400, seed=0)
    texts = [f"{p.question} {p.solution}" for p in problems] + ["#201 ü €"] * 200
    return build_merging_tokenizer(texts, 420)


@pytest.fixture(scope="module")
def merging_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("merging_teacher")
    tokenizer = multibyte_merging_tokenizer()
    make_model(TINY_TEACHER, tokenizer, seed=4).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def text_rollouts(
    tokenizer: Any, texts: tuple[tuple[str, bool], ...] = TEXTS, one_prompt: bool = False
) -> RolloutBatch:
    """Rollouts whose completions are the student tokenizer's encoding of ``texts`` (answers
    to one prompt, or each to its own)."""
    prompts = [
        Prompt(id=f"p{i}", messages=({"role": "user", "content": f"{i * (not one_prompt)}+7*3"},))
        for i in range(len(texts))
    ]
    prompt_ids_BP, prompt_mask_BP = encode_prompts(tokenizer, prompts)
    rows = [
        tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] * ended
        for text, ended in texts
    ]
    completion_ids_BC, completion_mask_BC = pad_right(rows, tokenizer.pad_token_id)
    generated = Generated(prompt_ids_BP, prompt_mask_BP, completion_ids_BC, completion_mask_BC)
    logprobs_BT = torch.zeros(generated.input_ids_BT.shape)
    return rollout_batch(prompts, 1, generated, logprobs_BT, tokenizer)


def token_bytes(tokenizer: Any, ids: list[int]) -> list[bytes]:
    """Each id's bytes through GPT-2's byte alphabet (independent of opd_hf.byte_prefix)."""
    decode = {c: b for b, c in bytes_to_unicode().items()}
    return [bytes(decode[c] for c in tokenizer.convert_ids_to_tokens(i)) for i in ids]


class BruteForce:
    """The teacher's distribution over the next byte (or its end) after a context and some
    written bytes, summed over every teacher path that writes them: one plain forward per path
    prefix, no tree mask."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model
        specials = set(tokenizer.all_special_ids)
        ids = [i for i in range(len(tokenizer)) if i not in specials]
        self.pieces = dict(zip(ids, token_bytes(tokenizer, ids), strict=True))
        self.eos = eos_ids(model, tokenizer)
        self.specials = {i: tokenizer.convert_ids_to_tokens(i) for i in specials - set(self.eos)}

    def next_token(self, context: list[int]) -> torch.Tensor:
        with torch.no_grad():
            logits = self.model(input_ids=torch.tensor([context])).logits[0, -1]
        return torch.softmax(logits.double(), -1)

    def next_byte(self, context: list[int], written: bytes) -> dict[int | str, float]:
        """Keys: the next byte, ``"end"`` (any EOS) or a special token's text."""
        p_V = self.next_token(context)
        out: dict[int | str, float] = defaultdict(float)
        if not written:
            out["end"] += float(p_V[self.eos].sum())
            for index, name in self.specials.items():
                out[name] += float(p_V[index])
        for index, piece in self.pieces.items():
            if piece.startswith(written) and len(piece) > len(written):
                out[piece[len(written)]] += float(p_V[index])
            elif piece and written.startswith(piece):
                for key, value in self.next_byte([*context, index], written[len(piece) :]).items():
                    out[key] += float(p_V[index]) * value
        return out


def test_targets_equal_the_marginal_over_every_teacher_path(
    tiny_models: TinyModels, compose_config: Compose, tmp_path: Path, merging_teacher: Path
) -> None:
    ctx = make_context(tiny_models, compose_config, tmp_path)
    student = ctx.student.tokenizer
    rollouts = text_rollouts(student)
    teacher = CrossTokenizerTeacher(model={"path": str(merging_teacher)}, branch_depth=8)
    teacher.setup(ctx)
    tokenizer = teacher.loaded.tokenizer
    # preconditions: the student writes one byte per token (every pair of its tokens is
    # prefix-free), the teacher merges "201", "ü" and "€"
    pair = teacher.pair
    student_pieces = zip(pair.student.pieces, pair.student.special, strict=True)
    assert all(len(piece) <= 1 for piece, special in student_pieces if not special)
    ids = tokenizer("#201 ü €", add_special_tokens=False)["input_ids"]
    assert token_bytes(tokenizer, ids) == [b"#", b"201", " ü".encode(), " €".encode()]
    scores = teacher.opd_score_rollouts(rollouts=rollouts, top_k=len(teacher.pair.student.pieces))
    brute = BruteForce(teacher.loaded.model, tokenizer)
    student_id: dict[bytes | str, int] = {
        p: i for i, p in enumerate(pair.student.pieces) if len(p) == 1
    }
    student_id.update(  # the teachers' special tokens that the student has (roles, pad, bos)
        {t: student.convert_tokens_to_ids(t) for t in student.all_special_tokens}
    )
    mask_BT = rollouts.completion_mask_BT.bool()
    checked = healed = 0
    for b, (text, _) in enumerate(TEXTS):
        prompt = tokenizer(render_prompt(tokenizer, rollouts.prompts[b]), add_special_tokens=False)
        data, offset, last = text.encode(), 0, None
        for t in mask_BT[b].nonzero().squeeze(1).tolist():
            # the teacher's tokens of the text written so far (whole characters), and its last
            # token backed off when a teacher token could go on across the offset
            chars = len(data[:offset].decode("utf-8", errors="ignore"))
            context = tokenizer(text[:chars], add_special_tokens=False)["input_ids"]
            written = data[len(text[:chars].encode()) : offset]
            if context and last is not None:
                tail = token_bytes(tokenizer, context[-1:])[0] + written
                if any(p.startswith(tail) and p != tail for p in brute.pieces.values()):
                    context, written = context[:-1], tail
                    healed += 1
            masses = brute.next_byte([*prompt["input_ids"], *context], written)
            total = sum(masses.values())
            expected = torch.zeros(len(pair.student.pieces), dtype=torch.float64)
            for key, value in masses.items():
                index = (
                    pair.student_eos
                    if key == "end"
                    else student_id[key if isinstance(key, str) else bytes([key])]
                )
                expected[index] += value / total
            got = torch.zeros_like(expected)
            got[scores.topk_ids_BTK[b, t]] = scores.topk_logprobs_BTK[b, t].double().exp()
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
            token = int(rollouts.input_ids_BT[b, t])
            last = pair.student.pieces[token]
            offset += len(last) if token not in teacher.student_stops else 0
            checked += 1
    assert checked == int(mask_BT.sum()) and healed >= checked // 2
    assert scores.metrics["teacher/exact_frac"] == 1.0  # every path followed, nothing residual
    assert scores.metrics["teacher/healed_frac"] == healed / checked
    assert scores.metrics["teacher/tree_tokens"] > 1.0


def test_a_target_depends_on_the_text_before_it_only(
    tiny_models: TinyModels, compose_config: Compose, tmp_path: Path, merging_teacher: Path
) -> None:
    """The known failure mode: cut after "20" of "201", the teacher's tokens of the whole text
    would end... with "201" and its tokens of the text so far with "20", which tells it the
    number has ended; the target there must not depend on what the student writes next."""
    ctx = make_context(tiny_models, compose_config, tmp_path)
    texts = (("1+200=201 #201", True), ("1+200=20 #20", True), ("1+200=2015", False))
    rollouts = text_rollouts(ctx.student.tokenizer, texts, one_prompt=True)
    teacher = CrossTokenizerTeacher(model={"path": str(merging_teacher)})
    teacher.setup(ctx)
    V = teacher.pair.student.size
    scores = teacher.opd_score_rollouts(rollouts=rollouts, top_k=V)
    assert scores.topk_ids_BTK is not None and scores.topk_logprobs_BTK is not None
    targets_BTV = torch.full((len(texts), rollouts.input_ids_BT.shape[1], V), -1.0)
    targets_BTV.scatter_(2, scores.topk_ids_BTK, scores.topk_logprobs_BTK.exp())
    first = rollouts.prompt_len  # the student writes one character per token here
    shared = len("1+200=20") + 1  # positions predicting characters 0..8 see the same text
    for other in (1, 2):
        torch.testing.assert_close(
            targets_BTV[other, first : first + shared],
            targets_BTV[0, first : first + shared],
            atol=1e-6,
            rtol=0,
        )
    digit = teacher.pair.lookup[b"1"]
    assert float(targets_BTV[0, first + shared - 1, digit]) > 0.0  # after "20": "1" possible


def test_the_same_tokenizer_gives_the_hf_teachers_scores_and_top_k(
    tiny_models: TinyModels, compose_config: Compose, tmp_path: Path
) -> None:
    from opd_hf.teacher import HFTeacher

    ctx = make_context(tiny_models, compose_config, tmp_path)
    rollouts = text_rollouts(ctx.student.tokenizer)
    node = {"path": str(tiny_models.teacher)}
    hf, cross = HFTeacher(model=node), CrossTokenizerTeacher(model=node, batch_size=3)
    hf.setup(ctx)
    cross.setup(ctx)
    expected = hf.opd_score_rollouts(rollouts=rollouts, top_k=20)
    got = cross.opd_score_rollouts(rollouts=rollouts, top_k=20)
    mask_BT = rollouts.completion_mask_BT.bool()
    torch.testing.assert_close(got.logprobs_BT, expected.logprobs_BT, atol=1e-5, rtol=0)
    assert got.topk_ids_BTK is not None and expected.topk_ids_BTK is not None
    assert torch.equal(got.topk_ids_BTK[mask_BT], expected.topk_ids_BTK[mask_BT])
    torch.testing.assert_close(
        got.topk_logprobs_BTK[mask_BT], expected.topk_logprobs_BTK[mask_BT], atol=1e-5, rtol=0
    )
    assert got.metrics["teacher/exact_frac"] == 1.0
    assert got.metrics["teacher/healed_frac"] == 0.0  # no teacher token extends a student one
    assert got.metrics["teacher/settled_frac"] == 1.0


def test_bad_settings_are_one_sentence() -> None:
    with pytest.raises(ValueError, match="target must be one of byte_prefix, sequence"):
        CrossTokenizerTeacher(model={"path": "x"}, target="tokens")
    with pytest.raises(ValueError, match="branch_depth must be >= 0"):
        CrossTokenizerTeacher(model={"path": "x"}, branch_depth=-1)


def test_a_tokenizer_whose_tokens_do_not_spell_the_text_is_refused() -> None:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    lowering = Tokenizer(models.WordLevel({"[UNK]": 0, "ca": 1, "va": 2}, unk_token="[UNK]"))
    lowering.normalizer = normalizers.Lowercase()
    lowering.pre_tokenizer = pre_tokenizers.Whitespace()
    wrapped = PreTrainedTokenizerFast(tokenizer_object=lowering)
    with pytest.raises(OPDError, match="do not spell the text they encode byte for byte"):
        vocab_bytes(wrapped, 3, "teacher")
