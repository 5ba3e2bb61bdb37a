"""QA sets: SQuAD-style answer matching (and its near misses), reading QA files, the evaluator."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import pytest

from opd_core import GenerationParams, OPDError, Prompt
from opd_docs.evaluator import QAAccuracy
from opd_docs.qa import answer_matches, normalize_answer, read_qa_jsonl


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("The Zentrix-9!", "zentrix 9"),
        ("  An   apple\ta day ", "apple day"),
        ("$1,250.50", "1250.50"),
        ("March 3, 2019", "march 3 2019"),
        ("Theater", "theater"),  # an article inside a word stays
    ],
)
def test_normalize_answer(text: str, normal: str) -> None:
    assert normalize_answer(text) == normal


@pytest.mark.parametrize(
    ("response", "accepted"),
    [
        ("The product code is QX-4821.", ["QX-4821"]),
        ("qx 4821", ["QX-4821"]),
        ("It was founded by the late Mira Tolvask in 1997", ["Mira Tolvask"]),
        ("Ask Tolvask.", ["Mira Tolvask", "Tolvask"]),  # an alias
        ("It costs $1,250 per seat", ["$1,250"]),
        ("1250 dollars", ["$1,250"]),
        ("Launched on 2019-03-03", ["March 3, 2019", "2019-03-03"]),
        ("THE ANSWER: TEAL", ["teal"]),
        ("The answer is (A).", ["A"]),  # an answer that is only an article
    ],
)
def test_matching_answers(response: str, accepted: list[str]) -> None:
    assert answer_matches(response, accepted)


@pytest.mark.parametrize(
    ("response", "accepted"),
    [
        ("The code is QX-4822.", ["QX-4821"]),  # a different number
        ("It has 1200 employees", ["120"]),  # a number inside a longer one
        ("It has 120,000 employees", ["120"]),
        ("12.5 percent", ["12"]),
        ("3.5 days", ["35"]),  # a decimal point is not dropped
        ("Mira founded it", ["Mira Tolvask"]),  # half a name
        ("tealish badges", ["teal"]),  # part of a word
        ("I don't know.", ["Tolvask"]),
        ("", ["Tolvask"]),
        ("The answer is B.", ["A"]),
    ],
)
def test_near_misses_do_not_match(response: str, accepted: list[str]) -> None:
    assert not answer_matches(response, accepted)


def test_qa_file_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    good = json.dumps({"question": "Q?", "answer": "A", "aliases": ["B"]})
    for line, message in {
        json.dumps({"question": "Q?"}): r"qa.jsonl:3: 'answer' must be a non-empty string",
        json.dumps({"question": "", "answer": "A"}): r"qa.jsonl:3: 'question' must be",
        json.dumps({"question": "Q", "answer": "A", "aliases": "B"}): r"qa.jsonl:3: 'aliases'",
        "nope": r"qa.jsonl:3: not valid JSON",
    }.items():
        path.write_text(f"{good}\n\n{line}\n")
        with pytest.raises(OPDError, match=message):
            read_qa_jsonl(path)
    path.write_text(good + "\n" + json.dumps({"question": "Year?", "answer": 1997}) + "\n")
    items = read_qa_jsonl(path)
    assert [i.accepted for i in items] == [("A", "B"), ("1997",)]


class ScriptedGenerator:
    """A Generator that answers from a fixed table (the evaluator's scoring is under test)."""

    name = "scripted"

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        self.params: GenerationParams | None = None

    def generate(self, prompts: Sequence[Prompt], params: GenerationParams) -> list[str]:
        self.params = params
        return [self.answers.get(p.messages[-1]["content"], "no idea") for p in prompts]


def test_evaluator_scores_greedy_answers(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    rows = [
        {"question": "Code of Zentrix?", "answer": "ZX-1"},
        {"question": "Founder?", "answer": "Mira Tolvask", "aliases": ["Tolvask"]},
        {"question": "Staff?", "answer": "412"},
        {"question": "Unused?", "answer": "x"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    evaluator = QAAccuracy(path=str(path), max_examples=3, max_new_tokens=12)
    evaluator.setup(SimpleNamespace())  # type: ignore[arg-type]
    generator = ScriptedGenerator(
        {"Code of Zentrix?": "It is ZX-1.", "Founder?": "Tolvask did.", "Staff?": "4120 people"}
    )
    result = evaluator.opd_evaluate(generator=generator, role="student", step=0)
    assert result.metrics == {"qa_accuracy": pytest.approx(2 / 3), "qa_examples": 3.0}
    assert generator.params == GenerationParams(max_new_tokens=12, temperature=0.0)
    assert all(p.teacher_context is None for p in evaluator.prompts)


def test_evaluator_can_show_the_documents_to_a_context_teacher(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "people.md").write_text("Mira Tolvask founded Zentrix.\n")
    (tmp_path / "docs" / "codes.md").write_text("Zentrix's code is ZX-1.\n")
    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps({"question": "Founder?", "answer": "Mira Tolvask"}) + "\n")
    evaluator = QAAccuracy(path=str(path), teacher_context_dir=str(tmp_path / "docs"))
    evaluator.setup(SimpleNamespace())  # type: ignore[arg-type]
    assert evaluator.prompts[0].teacher_context == (
        "# codes\n\nZentrix's code is ZX-1.\n\n# people\n\nMira Tolvask founded Zentrix."
    )
    assert evaluator.prompts[0].messages == ({"role": "user", "content": "Founder?"},)


def test_evaluator_without_a_path_says_how_to_set_it() -> None:
    with pytest.raises(OPDError, match=r"evaluators.qa_accuracy.path is not set"):
        QAAccuracy().setup(SimpleNamespace())  # type: ignore[arg-type]
