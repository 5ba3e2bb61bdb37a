"""The arithmetic problems: exact grading, deterministic generation, disjoint splits."""

from __future__ import annotations

import pytest

from opd_arith.problems import (
    ArithmeticProblem,
    apply_op,
    extract_answer,
    grade,
    make_problems,
    split_of,
    to_prompt,
)


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("2*3=6 5+6=11 #11", "11"),
        ("5-9=-4 #-4", "-4"),
        ("#3 then again #42", "42"),
        ("# 7", "7"),
        ("2*3=6 5+6=11", None),
        ("", None),
        ("#", None),
    ],
)
def test_extract_answer(completion: str, expected: str | None) -> None:
    assert extract_answer(completion) == expected


@pytest.mark.parametrize(
    ("completion", "answer", "score"),
    [
        ("2*3=6 5+6=11 #11", "11", 1.0),
        ("2*3=6 5+6=12 #12", "11", 0.0),
        ("#110", "11", 0.0),
        ("#1", "11", 0.0),
        ("#-4", "-4", 1.0),
        ("#4", "-4", 0.0),
        ("11", "11", 0.0),
    ],
)
def test_grade(completion: str, answer: str, score: float) -> None:
    assert grade(completion, answer) == score


def test_solutions_are_correct_and_well_formed() -> None:
    for problem in make_problems(300, seed=1, num_ops=3):
        assert int(problem.answer) == eval(problem.question)  # plain integer arithmetic
        assert problem.solution.endswith(f"#{problem.answer}")
        assert grade(problem.solution, problem.answer) == 1.0
        assert problem.solution.count("=") == 3


def test_format_is_pinned() -> None:
    """The generator's output is part of the demo's cache key: changing it needs a format bump."""
    assert make_problems(2, seed=0) == [
        ArithmeticProblem("(8-2)*7", "42", "8-2=6 6*7=42 #42"),
        ArithmeticProblem("(2+9)+3", "14", "2+9=11 11+3=14 #14"),
    ]
    (three_ops,) = make_problems(1, seed=0, num_ops=3)
    assert three_ops.solution.count("=") == 3 and three_ops.question.count("(") == 2


def test_generation_is_deterministic() -> None:
    assert make_problems(50, seed=7) == make_problems(50, seed=7)
    assert make_problems(50, seed=7) != make_problems(50, seed=8)
    assert make_problems(20, seed=7, split="eval") == make_problems(20, seed=7, split="eval")


def test_splits_are_disjoint_whatever_the_seeds() -> None:
    train = {p.question for seed in (0, 1) for p in make_problems(3000, seed=seed)}
    held_out = {p.question for seed in (0, 5) for p in make_problems(300, seed, split="eval")}
    assert train.isdisjoint(held_out)
    assert all(split_of(q) == "eval" for q in held_out)


def test_questions_are_unique_and_results_bounded() -> None:
    problems = make_problems(1000, seed=0, min_result=0, max_result=99)
    assert len({p.question for p in problems}) == 1000
    for problem in problems:
        values = [int(step.split("=")[1]) for step in problem.solution.split(" ")[:-1]]
        assert all(0 <= v <= 99 for v in values)


def test_bad_requests_fail_clearly() -> None:
    with pytest.raises(ValueError, match="Unknown split"):
        make_problems(5, seed=0, split="test")
    with pytest.raises(ValueError, match="distinct 'eval' problems"):
        make_problems(200, seed=0, split="eval", num_ops=1)
    with pytest.raises(ValueError, match="ops made of"):
        make_problems(5, seed=0, ops="/")


def test_the_reference_solution_is_the_teachers_context() -> None:
    problem = make_problems(1, seed=0)[0]
    prompt = to_prompt(problem, "train", 0)
    assert prompt.teacher_context == problem.solution == prompt.reference
    assert problem.solution not in prompt.messages[0]["content"]  # the student does not see it


def test_apply_op_computes_each_operation_and_refuses_others() -> None:
    assert [apply_op(op, 3, 7) for op in "+-*"] == [10, -4, 21]
    with pytest.raises(KeyError):
        apply_op("/", 3, 7)
