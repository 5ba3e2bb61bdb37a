"""The math task: boxed-answer extraction, grading, and loading local data files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from opd_core import OPDError
from opd_math.grading import grade_math, last_boxed
from opd_math.task import MathTask


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so the answer is \\boxed{42}.", "42"),
        ("\\boxed{1} then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("no box here", None),
        ("\\boxed{unclosed", None),
    ],
)
def test_last_boxed(text: str, expected: str | None) -> None:
    assert last_boxed(text) == expected


@pytest.mark.parametrize(
    ("completion", "reference", "grade"),
    [
        ("\\boxed{42}", "42", 1.0),
        ("\\boxed{ 42 }", "42", 1.0),
        ("\\boxed{41}", "42", 0.0),
        ("\\boxed{\\frac{1}{2}}", "0.5", 1.0),
        ("42", "42", 0.0),  # the answer must be boxed
    ],
)
def test_grade_math(completion: str, reference: str, grade: float) -> None:
    assert grade_math(completion, reference) == grade


def test_local_jsonl_source(tmp_path: Path) -> None:
    data = tmp_path / "train.jsonl"
    rows = [{"q": "What is 1+1?", "a": "2"}, {"q": "What is 2*3?", "a": "6"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = MathTask(
        train={"path": "json", "data_files": str(data), "question_field": "q", "answer_field": "a"},
        instruction="Box it.",
    )
    prompts = task.opd_task_prompts(split="train")
    assert [p.answer for p in prompts] == ["2", "6"]
    assert prompts[0].messages[0]["content"] == "What is 1+1?\nBox it."
    assert task.opd_task_prompts(split="eval") == []
    assert task.opd_grade_completions(prompts=prompts, completions=["\\boxed{2}", "7"]) == [
        1.0,
        0.0,
    ]


def test_missing_column_is_named(tmp_path: Path) -> None:
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps({"question": "x", "answer": "1"}) + "\n")
    task = MathTask(train={"path": "json", "data_files": str(data)})
    with pytest.raises(OPDError, match=r"no column problem .*set task.train.question_field"):
        task.opd_task_prompts(split="train")
