"""The tool-use demo's build: multi-turn SFT data, the cached build, and what the built models
measure (the teacher solves >= 90% of held-out episodes with the calculator; the student's shape
without it solves < 20%)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from opd_agent import build
from opd_agent.build import (
    AgentSpec,
    build_agent_models,
    encode_conversations,
    episode_conversation,
    play,
    success_rate,
)
from opd_agent.plugin import cache_dir
from opd_agent.problems import CALL_CLOSE, CALL_OPEN, TOOL_ROLE, ToolTaskSpec
from opd_arith.build import Architecture
from opd_arith.tokenizer import ROLES, build_tokenizer

TINY = Architecture(32, 64, 1, 2, 1, 16, max_position_embeddings=160)
TINY_SPEC = AgentSpec(
    num_train=200, teacher=TINY, student=TINY, teacher_steps=4, student_steps=4,
    teacher_target_success=None, student_target_success=None, notool_steps=2,
    num_validation=8, num_replays=10, batch_size=8,
)  # fmt: skip


def tool_tokenizer():  # type: ignore[no-untyped-def]
    problems = ToolTaskSpec().problems(50, 0, "train")
    return build_tokenizer(
        [f"{p.question} {p.solution}" for p in problems], roles=(*ROLES, TOOL_ROLE),
        words=(CALL_OPEN, CALL_CLOSE),
    )  # fmt: skip


def test_conversations_train_on_the_assistant_turns_only() -> None:
    tokenizer = tool_tokenizer()
    problems = ToolTaskSpec().problems(4, 0, "train")
    conversations = [episode_conversation(p) for p in problems]
    data = encode_conversations(tokenizer, conversations)
    for row, conversation in enumerate(conversations):
        text = tokenizer.apply_chat_template(conversation, tokenize=False)
        whole = tokenizer(text, add_special_tokens=False)["input_ids"]
        length = int(data.attention_mask_NT[row].sum())
        assert data.input_ids_NT[row, :length].tolist() == whole  # as the template renders it
        trained = data.input_ids_NT[row][data.loss_mask_NT[row].bool()].tolist()
        turns = [m["content"] for m in conversation if m["role"] == "assistant"]
        expected = "".join(f"{t}{tokenizer.eos_token}" for t in turns)
        assert tokenizer.decode(trained) == expected
    first = tokenizer(f"{CALL_OPEN}37*58{CALL_CLOSE}", add_special_tokens=False)["input_ids"]
    assert len(first) == 7  # <calc> and </calc> are one token each
    with pytest.raises(ValueError, match="opens with a question"):
        encode_conversations(tokenizer, [conversations[0][1:]])


def test_the_build_saves_reloadable_models_and_teacher_episodes_and_reuses_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = build_agent_models(TINY_SPEC, tmp_path, progress=False)
    for folder in (paths.teacher_dir, paths.student_dir, paths.notool_dir):
        AutoModelForCausalLM.from_pretrained(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": "1*2"}, {"role": "tool", "content": "2"}],
            tokenize=False,
            add_generation_prompt=True,
        )
        assert rendered == "<|bos|><|user|>1*2<|tool|>2<|assistant|>"
    records = [json.loads(line) for line in paths.trajectories.read_text().splitlines()]
    questions = [p.question for p in TINY_SPEC.train_problems()[: TINY_SPEC.num_replays]]
    assert [r["question"] for r in records] == questions
    assert all(r["turns"][0]["role"] == "assistant" for r in records)
    info = json.loads((paths.root / "build_info.json").read_text())
    assert info["digest"] == TINY_SPEC.digest() and info["teacher"]["steps"] == 4

    def no_rebuild(*args: object) -> None:
        raise AssertionError("the cached entry was rebuilt")

    monkeypatch.setattr(build, "_build_entry", no_rebuild)
    assert build_agent_models(TINY_SPEC, tmp_path, progress=False) == paths


@pytest.mark.slow
def test_the_demo_teacher_needs_and_uses_the_tool() -> None:
    """The cached demo build (built here on first use: ~15 min of CPU): the teacher solves at
    least 90% of 500 held-out episodes with the calculator; the student's shape trained to compute
    in its head (the same SFT budget as the teacher's) solves under 20%; the tool-using student
    starts clearly below the teacher."""
    spec = AgentSpec()
    paths = build_agent_models(spec, cache_dir(), progress=False)
    problems = spec.eval_problems(500)
    rates = {}
    for name, folder in (
        ("teacher", paths.teacher_dir),
        ("student", paths.student_dir),
        ("notool", paths.notool_dir),
    ):
        model = AutoModelForCausalLM.from_pretrained(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        episodes = play(model, tokenizer, problems, spec, split="eval")
        rates[name] = success_rate(episodes)
        if name == "notool":  # it answers at once and never calls the calculator
            assert all(e.summary.counts.get("tool_calls", 0) == 0 for e in episodes)
    assert rates["teacher"] >= 0.90, rates
    assert rates["notool"] < 0.20, rates
    assert rates["student"] < rates["teacher"] - 0.2, rates
