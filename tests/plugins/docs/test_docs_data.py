"""The company-docs data builder: reading a folder, chunking at paragraphs, the 70:30 mix."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from transformers import AutoTokenizer

from conftest import TinyModels
from opd_core import OPDError, Prompt
from opd_core.lib.chat_data import read_chat_jsonl
from opd_docs.data import (
    Document,
    chat_examples_needed,
    chunk_text,
    document_prompts,
    mix,
    read_documents,
)
from opd_docs.task import CompanyDocsTask


def words(text: str) -> int:
    """A token counter whose counts are easy to check by hand: one token per word."""
    return len(text.split())


def test_read_documents_takes_md_and_txt_in_path_order(tmp_path: Path) -> None:
    (tmp_path / "b.md").write_text("# B\n\nbee\n")
    (tmp_path / "a.txt").write_text("ay")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.MD").write_text("sea")
    (tmp_path / "empty.md").write_text("  \n")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "x.pdf").write_bytes(b"%PDF")
    (tmp_path / ".DS_Store").write_bytes(b"\x00")
    docs = read_documents(tmp_path)
    assert docs == [Document("a", "ay"), Document("b", "# B\n\nbee"), Document("sub/c", "sea")]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing", r"missing does not exist; set task.docs_dir"),
        (lambda d: d, r"has no non-empty .md/.txt file"),
    ],
)
def test_missing_or_empty_folder_is_named(tmp_path: Path, make: Any, message: str) -> None:
    with pytest.raises(OPDError, match=message):
        read_documents(make(tmp_path))


def test_non_text_files_are_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "handbook.md").write_text("fine")
    (tmp_path / "slides.pdf").write_bytes(b"%PDF-1.4")
    with pytest.raises(OPDError, match=r"slides.pdf is not a text document .* convert it"):
        read_documents(tmp_path)
    (tmp_path / "slides.pdf").unlink()
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(OPDError, match=r"latin1.txt is not UTF-8 text \(byte 3\)"):
        read_documents(tmp_path)


def test_chunks_pack_whole_paragraphs_up_to_the_limit() -> None:
    text = "one two three\n\nfour five\n\nsix seven eight nine\n\nten"
    assert chunk_text(text, words, max_tokens=5) == [
        "one two three\n\nfour five",
        "six seven eight nine\n\nten",
    ]
    assert chunk_text(text, words, max_tokens=100) == [text]
    assert chunk_text(text, words, max_tokens=4) == [
        "one two three",
        "four five",
        "six seven eight nine",
        "ten",
    ]


def test_a_paragraph_too_long_alone_is_cut_at_sentences_then_words() -> None:
    text = "Short intro.\n\nA b c. D e f g h i. J k.\n\nTail."
    chunks = chunk_text(text, words, max_tokens=3)
    assert chunks == ["Short intro.", "A b c.", "D e f", "g h i.", "J k.", "Tail."]
    assert " ".join(chunks).split() == text.split()  # nothing lost, order kept


def test_chunks_respect_the_student_tokenizer(tiny_models: TinyModels) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_models.student)

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    text = "\n\n".join(f"Paragraph {i}: " + "word " * (i * 7) for i in range(1, 9))
    chunks = chunk_text(text, count, max_tokens=60)
    assert all(count(c) <= 60 for c in chunks)
    assert " ".join(chunks).split() == text.split()
    assert len(chunks) > 5


def test_document_prompts_carry_their_text_as_reference() -> None:
    docs = [Document("policies", "a b\n\nc d"), Document("people", "e")]
    plain = document_prompts(docs, words, max_tokens=2, doc_format="text")
    assert [(p.id, p.messages, p.reference) for p in plain] == [
        ("doc-policies-1", (), "a b"),
        ("doc-policies-2", (), "c d"),
        ("doc-people-1", (), "e"),
    ]
    chat = document_prompts(docs, words, max_tokens=2, doc_format="chat")
    assert chat[1].messages == (
        {"role": "user", "content": 'Write part 2 of 2 of the internal document "policies".'},
    )
    assert chat[1].reference == "c d"
    assert [p.teacher_context for p in chat] == ["a b", "c d", "e"]  # what teacher=context shows


def _prompts(prefix: str, n: int) -> list[Prompt]:
    return [Prompt(id=f"{prefix}{i}", messages=(), reference=str(i)) for i in range(n)]


def test_mix_makes_documents_the_configured_share_of_an_epoch() -> None:
    docs, chat = _prompts("d", 14), _prompts("c", 20)
    assert chat_examples_needed(14, 0.7) == 6  # 14 : 6 is 70 : 30
    epoch = mix(docs, chat, docs_fraction=0.7, seed=0)
    assert len(epoch) == 20
    assert sorted(p.id for p in epoch if p.id.startswith("d")) == sorted(p.id for p in docs)
    assert sum(p.id.startswith("c") for p in epoch) == 6
    assert [p.id for p in mix(docs, chat, 0.7, seed=0)] == [p.id for p in epoch]
    assert [p.id for p in mix(docs, chat, 0.7, seed=1)] != [p.id for p in epoch]
    assert len({p.id for p in epoch}) == len(epoch)
    assert mix(docs, chat, docs_fraction=1.0, seed=0) != docs  # shuffled, nothing added
    assert sorted(p.id for p in mix(docs, [], 1.0, 0)) == sorted(p.id for p in docs)


def test_a_small_chat_set_is_drawn_in_whole_passes() -> None:
    docs, chat = _prompts("d", 7), _prompts("c", 2)
    epoch = mix(docs, chat, docs_fraction=0.5, seed=3)  # 7 chat examples from 2
    drawn = [p.id for p in epoch if p.id.startswith("c")]
    assert len(drawn) == len(set(drawn)) == 7
    assert sorted(Counter(i.split("#")[0] for i in drawn).values()) == [3, 4]


def test_malformed_chat_lines_name_file_line_and_problem(tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    good = json.dumps({"prompt": "hi", "response": "hello"})
    cases = {
        "{not json": r"chat.jsonl:2: not valid JSON",
        json.dumps({"messages": [{"role": "user", "content": "hi"}]}): (
            r"chat.jsonl:2: the record has no answer to train on"
        ),
        json.dumps({"messages": [{"role": "bot", "content": "x"}]}): (
            r"chat.jsonl:2: 'messages'\[0\] must be an object with a role"
        ),
        json.dumps({"messages": [{"role": "assistant", "content": "x"}]}): (
            r"chat.jsonl:2: the conversation in 'messages' must reach a user turn"
        ),
        json.dumps({"text": "hi"}): r"chat.jsonl:2: the record has neither 'messages' nor",
        json.dumps(["a list"]): r"chat.jsonl:2: expected a JSON object",
    }
    for line, message in cases.items():
        path.write_text(f"{good}\n{line}\n")
        with pytest.raises(OPDError, match=message):
            read_chat_jsonl(path, need_response=True)


def _company_docs(tmp_path: Path, tiny_models: TinyModels, **options: Any) -> CompanyDocsTask:
    docs = tmp_path / "docs"
    docs.mkdir(exist_ok=True)
    (docs / "handbook.md").write_text(
        "# Handbook\n\n" + "\n\n".join(f"Rule {i}." for i in range(9))
    )
    chat = tmp_path / "chat.jsonl"
    chat.write_text(
        json.dumps({"messages": [{"role": "user", "content": "1+1"}, {"role": "assistant",
                    "content": "2"}]}) + "\n" + json.dumps({"prompt": "2+2", "response": "4"})
    )  # fmt: skip

    tokenizer = AutoTokenizer.from_pretrained(tiny_models.student)
    ctx = SimpleNamespace(seed=0, student=SimpleNamespace(tokenizer=tokenizer))
    task = CompanyDocsTask(**{"docs_dir": str(docs), "chat_path": str(chat), **options})
    task.setup(ctx)  # type: ignore[arg-type]
    return task


def test_company_docs_task_builds_the_epoch(tmp_path: Path, tiny_models: TinyModels) -> None:
    task = _company_docs(tmp_path, tiny_models, max_tokens=20, docs_fraction=0.7)
    train = task.opd_task_prompts(split="train")
    docs = [p for p in train if p.source == "documents"]
    chat = [p for p in train if p.source == "chat"]
    assert all(task.count_tokens(p.reference or "") <= 20 for p in docs)
    assert all(p.messages == () for p in docs)  # plain text, no chat template
    assert len(chat) == chat_examples_needed(len(docs), 0.7) > 0
    assert {p.reference for p in chat} == {"2", "4"}
    assert task.opd_task_prompts(split="eval") == []


def test_company_docs_needs_its_folder_and_chat_data(
    tmp_path: Path, tiny_models: TinyModels
) -> None:
    with pytest.raises(OPDError, match=r"task.docs_dir is not set"):
        CompanyDocsTask().setup(None)  # type: ignore[arg-type]
    with pytest.raises(OPDError, match=r"task.chat_path is not set.*docs_fraction=1.0"):
        CompanyDocsTask(docs_dir=str(tmp_path)).setup(None)  # type: ignore[arg-type]
    task = _company_docs(tmp_path, tiny_models, docs_fraction=1.0, chat_path=None)
    assert {p.source for p in task.opd_task_prompts(split="train")} == {"documents"}
    with pytest.raises(ValueError, match=r"docs_fraction must be in \(0, 1\]"):
        CompanyDocsTask(docs_dir=str(tmp_path), docs_fraction=0.0)
