"""The synthetic company: every answer is in its documents, a seed fixes it, seeds differ."""

from __future__ import annotations

import json
from pathlib import Path

from opd_docs.qa import answer_matches, read_qa_jsonl
from opd_docs.synthetic import Company, main, write_company


def docs_text(out: Path) -> str:
    return "\n".join(p.read_text() for p in sorted((out / "docs").glob("*.md")))


def test_every_answer_is_stated_in_the_documents(tmp_path: Path) -> None:
    write_company(tmp_path, seed=0)
    text = docs_text(tmp_path)
    items = read_qa_jsonl(tmp_path / "qa.jsonl")
    assert len(items) >= 60
    assert len({i.question for i in items}) == len(items)
    for item in items:
        assert item.answer in text, item  # verbatim, as the documents state it
        assert answer_matches(text, [item.answer]), item


def test_answers_are_unambiguous_numbers_and_names(tmp_path: Path) -> None:
    company = Company.invent(seed=3)
    answers = [qa.answer for qa in company.questions()]
    numbers = [a for a in answers if a.replace(",", "").isdigit()]
    assert len(numbers) == len(set(numbers)) >= 20  # no two numeric facts share a value
    names = [p.name for p in (company.founder, company.ceo, *company.people)]
    assert len({n.split()[-1] for n in names}) == len(names)  # surnames identify people


def test_a_seed_always_writes_the_same_files(tmp_path: Path) -> None:
    for name in ("a", "b"):
        assert main(["--out", str(tmp_path / name), "--seed", "7", "--products", "3"]) == 0
    for path in sorted((tmp_path / "a").rglob("*.*")):
        twin = tmp_path / "b" / path.relative_to(tmp_path / "a")
        assert path.read_bytes() == twin.read_bytes(), path.name
    assert len(read_qa_jsonl(tmp_path / "a" / "qa.jsonl")) == 5 + 3 * 5 + 12 * 2 + 3 * 2 + 9


def test_two_seeds_invent_different_facts(tmp_path: Path) -> None:
    write_company(tmp_path / "s0", seed=0)
    write_company(tmp_path / "s1", seed=1)

    def answers(out: Path) -> set[str]:
        lines = (out / "qa.jsonl").read_text().splitlines()
        invented = [json.loads(line) for line in lines if "role" not in line]  # titles are fixed
        return {qa["answer"] for qa in invented}

    shared = answers(tmp_path / "s0") & answers(tmp_path / "s1")
    assert len(shared) <= 3, shared  # a colour or a small number may repeat, names never
    assert docs_text(tmp_path / "s0") != docs_text(tmp_path / "s1")
