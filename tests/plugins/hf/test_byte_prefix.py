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
STUDENT = vocab([b"<|eos|>", b"2", b"0", b"1", b"+", b"01"], special={0})
TEACHER = vocab([b"</s>", b"2", b"0", b"1", b"201", b"20", b"+", b"x"], special={0})


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
            p_V.new_zeros(()),  # "01": no teacher token starts with it
            p_V[7],  # residual <- "x"
        ]
    )


def test_the_tables_of_a_hand_made_pair() -> None:
    pair = build_pair_map(STUDENT, TEACHER, student_eos=0, teacher_eos=[0])
    assert pair.map_V.tolist() == [0, 1, 2, 3, 1, 1, 4, 6]  # 6: the residual bucket
    flat = pair.shift_flat.tolist()
    start = int(pair.shift_offsets_V[4])  # "201" from byte 1 on: "01" is a student token
    assert flat[start : start + 3] == [1, 5, 3]
    assert pair.short_V.tolist() == [False, False, True, False, False, False, False, False]
    assert pair.extension_range(b"2") == (pair.sorted_bytes.index(b"20"), pair.sorted_bytes.index(b"201") + 1)


def hand_plan(depth: int) -> tuple[BatchPlan, Any]:
    """The student wrote "201" then EOS; the teacher reads "201" as one token after a prompt
    of two tokens."""
    pair = build_pair_map(STUDENT, TEACHER, student_eos=0, teacher_eos=[0])
    plan = BatchPlan()
    plan_row(plan, pair, [7, 6], b"201", [4], [0, 1, 2, 3], depth)
    return plan, pair


def random_logprobs(rows: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.log_softmax(torch.randn(rows, len(TEACHER.pieces), generator=generator), -1)


@pytest.mark.parametrize("depth", [0, 1, 2])
def test_targets_computed_by_hand(depth: int) -> None:
    plan, pair = hand_plan(depth)
    outputs = sorted(plan.outputs, key=plan.outputs.__getitem__)
    lp_RV = random_logprobs(len(outputs), seed=depth)
    P = {column: lp_RV[index].double().exp() for (_, column), index in plan.outputs.items()}
    got = assemble_targets(plan, pair, lp_RV)
    root, end = P[1], P[2]  # after the prompt; after "201"
    one_hot = torch.eye(7, dtype=torch.float64)
    expected = [mapped(root)]
    dropped = [0.0, 0.0, 0.0, 0.0]
    # after "2", inside "201": "201" goes on with "01", "20" with "0"; the teacher's own "2" then
    # whatever it says next (a branch token at column 3)
    ext = root[4] * one_hot[5] + root[5] * one_hot[2]
    if depth >= 1:
        total = root[4] + root[5] + root[1]
        expected.append((ext + root[1] * mapped(P[3])) / total)
    else:
        total = root[4] + root[5]
        expected.append(ext / total)
        dropped[1] = float(root[1] / (total + root[1]))
    # after "20": "201" goes on with "1"; "20" then anything; "2" then "0" then anything
    if depth == 2:
        after_2, after_20, after_2_0 = P[4], P[6], P[5]
        total = root[4] + root[5] + root[1] * after_2[2]
        expected.append(
            (root[4] * one_hot[3] + root[5] * mapped(after_20) + root[1] * after_2[2] * mapped(after_2_0))
            / total
        )
    elif depth == 1:  # "2" would need a second token inside "20": not followed
        after_20 = P[max(P)]
        total = root[4] + root[5]
        expected.append((root[4] * one_hot[3] + root[5] * mapped(after_20)) / total)
        dropped[2] = float(root[1] / (total + root[1]))
    else:
        expected.append(one_hot[3])
        dropped[2] = float((root[1] + root[5]) / (root[4] + root[1] + root[5]))
    expected.append(mapped(end))
    torch.testing.assert_close(got.probs_NS, torch.stack(expected), atol=1e-6, rtol=0)
    torch.testing.assert_close(got.dropped_N, torch.tensor(dropped, dtype=torch.float64), atol=1e-6, rtol=0)
    assert got.boundary_N.tolist() == [True, False, False, True]
    torch.testing.assert_close(got.residual_N, torch.stack(expected)[:, -1])
    # "0" is short: the student's "01" extends it and no teacher token spells "01"
    assert float(got.short_N[0]) == pytest.approx(float(root[2]), abs=1e-6)
    assert plan.rows[0].anchors == [2] * len(plan.rows[0].anchors)  # branches see the prompt
    assert len(plan.rows[0].anchors) == {0: 0, 1: 2, 2: 4}[depth]


def test_exact_positions_need_little_approximated_mass() -> None:
    plan, pair = hand_plan(2)
    lp_RV = random_logprobs(len(plan.outputs), seed=5)
    lp_RV[:, 7] = -1e4  # no residual mass ...
    lp_RV[:, 2] = -1e4  # ... nothing on the short "0" ...
    lp_RV[:, 5] = -1e4  # ... nor on "20", which after "2" goes on with that "0"
    got = assemble_targets(plan, pair, lp_RV)
    assert got.exact_N.all()
    lp_RV[:, 7] = 2 * EXACT_TOL  # now about 2e-3 * e / sum(e^x) residual: not exact
    lp_RV = torch.log_softmax(lp_RV, -1)
    got = assemble_targets(plan, pair, lp_RV)
    assert not got.exact_N[0] and got.residual_N[0] > EXACT_TOL


def test_a_tree_forward_scores_a_branch_as_a_plain_forward(tiny_models: TinyModels) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_models.teacher).eval()
    ids = [10, 11, 12, 13, 14, 15]
    rows = [  # depth-2 path [20, 21] after ids[:3], and a depth-1 branch 22 after ids[:1]
        TreeRow(ids=[*ids, 20, 21, 22], n_main=6, anchors=[3, 3, 1], parents=[-1, 6, -1]),
        TreeRow(ids=ids[:3], n_main=3),
    ]
    got = tree_logprobs(model, rows, [(0, 7), (0, 6), (0, 8), (0, 5), (1, 2)], pad_id=0)
    with torch.no_grad():
        for x, sequence in enumerate(
            ([*ids[:3], 20, 21], [*ids[:3], 20], [ids[0], 22], ids, ids[:3])
        ):
            plain = torch.log_softmax(model(input_ids=torch.tensor([sequence])).logits[0, -1], -1)
            torch.testing.assert_close(got[x], plain, atol=1e-5, rtol=0)


# --- against a brute-force marginal over every teacher path, with real tokenizers ----------

TEXTS = (  # (completion, ended with EOS)
    ("2*3=6 5+6=11 #11", True),
    ("1+200=201 #201", True),  # the teacher writes "201" as one token, the student digits
    ("7*8=56 ü #56 €", True),  # multi-byte characters: one teacher token, byte tokens to the student
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


def text_rollouts(tokenizer: Any, texts: tuple[tuple[str, bool], ...] = TEXTS) -> RolloutBatch:
    """Rollouts whose completions are the student tokenizer's encoding of ``texts``."""
    prompts = [
        Prompt(id=f"p{i}", messages=({"role": "user", "content": f"{i}+{i + 7}*3"},))
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
    assert all(len(p) <= 1 for p, s in zip(pair.student.pieces, pair.student.special) if not s)
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
    checked = partial = 0
    for b, (text, _) in enumerate(TEXTS):
        prompt = tokenizer(render_prompt(tokenizer, rollouts.prompts[b]), add_special_tokens=False)["input_ids"]
        teacher_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        starts = [0]
        for piece in token_bytes(tokenizer, teacher_ids):
            starts.append(starts[-1] + len(piece))
        offset = 0
        for t in mask_BT[b].nonzero().squeeze(1).tolist():
            j = max(i for i, s in enumerate(starts) if s <= offset)
            written = text.encode()[starts[j] : offset]
            partial += bool(written)
            masses = brute.next_byte([*prompt, *teacher_ids[:j]], written)
            total = sum(masses.values())
            expected = torch.zeros(len(teacher.pair.student.pieces), dtype=torch.float64)
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
            offset += len(teacher.pair.student.pieces[token]) if token not in teacher.student_stops else 0
            checked += 1
    assert checked == int(mask_BT.sum()) and partial >= 8
    assert scores.metrics["teacher/exact_frac"] == 1.0  # every path followed, nothing residual
    assert scores.metrics["teacher/boundary_frac"] < 0.8
    assert scores.metrics["teacher/branch_tokens"] > 0


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
    assert got.metrics["teacher/boundary_frac"] == 1.0
    assert got.metrics["teacher/branch_tokens"] == 0.0


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
