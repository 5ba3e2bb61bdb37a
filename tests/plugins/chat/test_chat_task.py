"""The chat task: prompts from local JSONL/JSON/parquet files (IFEval's file too), no grader."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from opd_chat.task import ChatTask
from opd_core import OPDError
from opd_core.plugin_manager import make_plugin_manager

TURNS = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Name a colour."},
    {"role": "assistant", "content": "Teal."},
]


def write_jsonl(path: Path, rows: Sequence[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_jsonl_prompts_and_conversations(tmp_path: Path) -> None:
    data = write_jsonl(
        tmp_path / "chat.jsonl",
        [{"prompt": "Say hi.", "response": "Hi!"}, {"messages": TURNS}, {"messages": TURNS[:2]}],
    )
    prompts = ChatTask(train={"path": str(data)}).opd_task_prompts(split="train")
    assert [p.id for p in prompts] == ["chat-0", "chat-1", "chat-2"]
    assert prompts[0].messages == ({"role": "user", "content": "Say hi."},)
    assert prompts[1].messages == tuple(TURNS[:2])  # the final answer is not part of the prompt
    assert [p.reference for p in prompts] == ["Hi!", "Teal.", None]
    assert all(p.answer is None and p.source == "chat" for p in prompts)
    assert all(p.teacher_context is None for p in prompts)
    shown = ChatTask(train={"path": str(data)}, teacher_context="You are Acme's assistant.")
    assert {p.teacher_context for p in shown.opd_task_prompts(split="train")} == {
        "You are Acme's assistant."
    }


def test_ifeval_style_prompts_keep_their_other_fields(tmp_path: Path) -> None:
    rows = [
        {"key": 1000, "prompt": "Write 3 words.", "instruction_id_list": ["length:words"],
         "kwargs": [{"num_words": 3}]},
        {"key": 1001, "prompt": "Answer in French.", "instruction_id_list": [], "kwargs": []},
    ]  # fmt: skip
    data = write_jsonl(tmp_path / "input_data.jsonl", rows)
    task = ChatTask(train={"path": str(data), "limit": 1})
    (prompt,) = task.opd_task_prompts(split="train")
    assert prompt.messages == ({"role": "user", "content": "Write 3 words."},)
    assert prompt.metadata == {
        "key": 1000,
        "instruction_id_list": ["length:words"],
        "kwargs": [{"num_words": 3}],
    }
    assert task.opd_task_prompts(split="eval") == []


def test_the_task_has_no_grader(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Hi"}])
    task = ChatTask(train={"path": str(data)})
    pm = make_plugin_manager([task])
    prompts = task.opd_task_prompts(split="train")
    assert pm.hook.opd_grade_completions(prompts=prompts, completions=["Hello"]) is None


def test_parquet_and_json_files_load_through_datasets(tmp_path: Path) -> None:
    import pandas as pd

    parquet = tmp_path / "prompts.parquet"
    pd.DataFrame({"instruction": ["Count to 3.", "Spell cat."]}).to_parquet(parquet)
    task = ChatTask(train={"path": str(parquet), "prompt_field": "instruction"})
    assert [p.messages[0]["content"] for p in task.opd_task_prompts(split="train")] == [
        "Count to 3.",
        "Spell cat.",
    ]
    data = write_jsonl(tmp_path / "tulu.json", [{"messages": TURNS, "id": "t0"}])
    task = ChatTask(train={"path": "json", "data_files": str(data)})
    (prompt,) = task.opd_task_prompts(split="train")
    assert prompt.reference == "Teal." and prompt.metadata == {"id": "t0"}


def test_bad_sources_are_named(tmp_path: Path) -> None:
    with pytest.raises(OPDError, match=r"missing.jsonl does not exist"):
        ChatTask(train={"path": str(tmp_path / "missing.jsonl")}).opd_task_prompts(split="train")
    with pytest.raises(OPDError, match=r"task.train.path=.*missing.parquet does not exist"):
        ChatTask(train={"path": str(tmp_path / "missing.parquet")}).opd_task_prompts(split="train")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"prompt": 3}\n')
    with pytest.raises(OPDError, match=r"bad.jsonl:2: 'prompt' must be a non-empty string"):
        ChatTask(train={"path": str(bad)}).opd_task_prompts(split="train")
