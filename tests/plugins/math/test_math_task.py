"""The math task: boxed-answer extraction, grading, and loading local data files."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from opd_core import OPDError
from opd_core.config import RunConfig
from opd_core.plugin_manager import build_registry, make_plugin_manager
from opd_math.grading import grade_math, last_boxed
from opd_math.task import MathTask

Compose = Callable[[list[str]], DictConfig]


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
        ("\\boxed{\\dfrac{3}{4}}", "3/4", 1.0),  # fractions written three ways
        ("\\boxed{0.75}", "\\frac34", 1.0),
        ("\\boxed{\\frac{2}{4}}", "\\frac{1}{2}", 1.0),
        ("\\boxed{\\frac{1}{3}}", "0.33", 0.0),  # a rounded decimal is not the fraction
        ("\\boxed{2\\sqrt{2}}", "\\sqrt{8}", 1.0),  # math-verify compares values
        ("\\boxed{\\boxed{5}}", "5", 1.0),  # nested boxes: the innermost answer
        ("\\boxed{5} so \\boxed{6}", "5", 0.0),  # the last box is the answer
        ("\\boxed{033}", "33", 1.0),  # AIME answers are integers 0-999
        ("\\boxed{1,000}", "1000", 1.0),
        ("the answer is \\frac{1}{2}", "\\frac{1}{2}", 0.0),  # no box
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


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet"])
def test_local_files_by_path_alone(tmp_path: Path, suffix: str) -> None:
    import pandas as pd

    frame = pd.DataFrame({"problem": ["1+1?", "2+2?", "3+3?"], "answer": ["2", "4", "6"]})
    data = tmp_path / f"aime{suffix}"
    if suffix == ".parquet":
        frame.to_parquet(data)
    else:
        frame.to_json(data, orient="records", lines=suffix == ".jsonl")
    task = MathTask(train={"path": str(data), "limit": 2}, eval={"path": str(data)})
    assert [p.answer for p in task.opd_task_prompts(split="train")] == ["2", "4"]
    assert [p.messages[0]["content"] for p in task.opd_task_prompts(split="eval")] == [
        "1+1?",
        "2+2?",
        "3+3?",
    ]


def test_a_missing_local_file_is_named(tmp_path: Path) -> None:
    task = MathTask(train={"path": str(tmp_path / "nope.parquet")})
    with pytest.raises(OPDError, match=r"task.train.path=.*nope.parquet does not exist"):
        task.opd_task_prompts(split="train")


def test_math_defaults_to_aime_style_sampled_evaluation(compose_config: Compose) -> None:
    config = RunConfig.from_dict(compose_config(["+task=math", "+teacher=qwen3_32b"]))
    assert config.task["eval"]["path"] == "HuggingFaceH4/aime_2024"
    assert dict(config.evaluators) == {
        "task_accuracy": {
            "name": "task_accuracy",
            "samples_per_prompt": 16,
            "temperature": 0.6,
            "top_p": 0.95,
        }
    }
    greedy = compose_config(["+task=math", "+teacher=qwen3_32b", "evaluator=[task_accuracy]"])
    registry = build_registry(make_plugin_manager())
    evaluator = registry.build("evaluator", RunConfig.from_dict(greedy).evaluators["task_accuracy"])
    assert evaluator.samples_per_prompt == 1  # the constructor's default
