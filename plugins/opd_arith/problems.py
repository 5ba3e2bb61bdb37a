"""Synthetic arithmetic problems with short, exactly gradable chain-of-thought solutions.

A problem is a fully parenthesised expression over small integers, e.g. ``5+(2*3)``. Its solution
evaluates the innermost operation first, one step per operation, and ends with the final-answer
marker ``#``::

    question  5+(2*3)
    solution  2*3=6 5+6=11 #11
    answer    11

Train and held-out splits are disjoint by construction: every question is assigned to one split by
a hash of its text, so no seed or size can make a held-out question appear in training.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

from opd_core.api import Prompt

ANSWER_MARKER = "#"
"""Marks the final answer at the end of a solution (``... #11``)."""

SPLITS = ("train", "eval")

_ANSWER_RE = re.compile(re.escape(ANSWER_MARKER) + r"\s*(-?\d+)")
_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


def apply_op(op: str, left: int, right: int) -> int:
    """``left <op> right`` for one of the task's operations (``+``, ``-``, ``*``)."""
    return int(_OPS[op](left, right))


@dataclass(frozen=True)
class ArithmeticProblem:
    """One problem: the question, its exact answer and a reference chain-of-thought solution."""

    question: str
    """The expression to evaluate, e.g. ``5+(2*3)``."""
    answer: str
    """The exact integer answer as text, e.g. ``11``."""
    solution: str
    """Step-by-step solution ending in ``#<answer>``, e.g. ``2*3=6 5+6=11 #11``."""


@dataclass(frozen=True)
class _Expr:
    """A node of an expression tree: a leaf holds ``value``; an inner node ``op`` and children."""

    value: int
    op: str | None = None
    left: _Expr | None = None
    right: _Expr | None = None


def split_of(question: str, eval_fraction: float = 0.1) -> str:
    """The split (``train`` or ``eval``) a question belongs to, fixed by a hash of its text."""
    digest = hashlib.sha256(question.encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") / 2**64
    return "eval" if bucket < eval_fraction else "train"


def _random_tree(rng: random.Random, num_ops: int, max_operand: int, ops: str) -> _Expr:
    """A random binary expression tree with ``num_ops`` operations over ``0..max_operand``."""
    if num_ops == 0:
        return _Expr(value=rng.randint(0, max_operand))
    left_ops = rng.randint(0, num_ops - 1)
    left = _random_tree(rng, left_ops, max_operand, ops)
    right = _random_tree(rng, num_ops - 1 - left_ops, max_operand, ops)
    op = rng.choice(ops)
    return _Expr(value=_OPS[op](left.value, right.value), op=op, left=left, right=right)


def _render(expr: _Expr, outer: bool = True) -> str:
    """The expression as text, with parentheses around every operation but the outermost."""
    if expr.op is None:
        return str(expr.value)
    assert expr.left is not None and expr.right is not None
    text = _render(expr.left, outer=False) + expr.op + _render(expr.right, outer=False)
    return text if outer else f"({text})"


def _steps(expr: _Expr) -> list[str]:
    """The solution steps (``a*b=c``) in evaluation order: left subtree, right subtree, root."""
    if expr.op is None:
        return []
    assert expr.left is not None and expr.right is not None
    step = f"{expr.left.value}{expr.op}{expr.right.value}={expr.value}"
    return [*_steps(expr.left), *_steps(expr.right), step]


def _within(expr: _Expr, low: int | None, high: int | None) -> bool:
    """Whether every value in the tree lies in ``low..high`` (None: unbounded on that side)."""
    if (low is not None and expr.value < low) or (high is not None and expr.value > high):
        return False
    children = [c for c in (expr.left, expr.right) if c is not None]
    return all(_within(c, low, high) for c in children)


def _problem_from_tree(expr: _Expr) -> ArithmeticProblem:
    """Turn an expression tree into a problem with its reference solution."""
    answer = str(expr.value)
    solution = " ".join([*_steps(expr), f"{ANSWER_MARKER}{answer}"])
    return ArithmeticProblem(question=_render(expr), answer=answer, solution=solution)


def make_problems(
    n: int,
    seed: int,
    *,
    split: str = "train",
    num_ops: int = 2,
    max_operand: int = 9,
    ops: str = "+-*",
    eval_fraction: float = 0.1,
    min_result: int | None = None,
    max_result: int | None = None,
) -> list[ArithmeticProblem]:
    """``n`` distinct problems of ``split``, deterministic in all arguments.

    Each problem has ``num_ops`` operations (drawn from ``ops``) over integers ``0..max_operand``.
    Problems with any intermediate or final value outside ``min_result..max_result`` (a bound of
    None is no bound) are skipped. Questions are unique within the list and belong to ``split``
    only (see :func:`split_of`).
    Raises ``ValueError`` when the split holds fewer than ``n`` distinct questions.
    """
    if split not in SPLITS:
        raise ValueError(f"Unknown split '{split}'; use one of {', '.join(SPLITS)}.")
    if num_ops < 1 or max_operand < 1 or not ops or set(ops) - set(_OPS):
        raise ValueError(
            f"Need num_ops >= 1, max_operand >= 1 and ops made of '+-*' "
            f"(got num_ops={num_ops}, max_operand={max_operand}, ops='{ops}')."
        )
    rng = random.Random(f"opd_arith:{seed}:{split}")
    seen: dict[str, ArithmeticProblem] = {}
    max_attempts = 50 * n + 1000
    for _ in range(max_attempts):
        if len(seen) == n:
            break
        tree = _random_tree(rng, num_ops, max_operand, ops)
        if not _within(tree, min_result, max_result):
            continue
        problem = _problem_from_tree(tree)
        if problem.question not in seen and split_of(problem.question, eval_fraction) == split:
            seen[problem.question] = problem
    if len(seen) < n:
        raise ValueError(
            f"Found only {len(seen)} distinct '{split}' problems of the {n} asked for; "
            "ask for fewer or widen the space (num_ops, max_operand, ops, result bounds)."
        )
    return list(seen.values())


def extract_answer(completion: str) -> str | None:
    """The final answer in a completion: the integer after its last ``#``, or None if absent."""
    matches = _ANSWER_RE.findall(completion)
    return matches[-1] if matches else None


def grade(completion: str, answer: str) -> float:
    """1.0 when the completion's extracted final answer equals ``answer`` exactly, else 0.0."""
    extracted = extract_answer(completion)
    return 1.0 if extracted is not None and extracted == answer.strip() else 0.0


def to_prompt(problem: ArithmeticProblem, split: str, index: int) -> Prompt:
    """A problem as a one-turn chat prompt; its reference solution is the teacher's context."""
    return Prompt(
        id=f"arithmetic-{split}-{index}",
        messages=({"role": "user", "content": problem.question},),
        answer=problem.answer,
        reference=problem.solution,
        metadata={"solution": problem.solution},
        source="arithmetic",
        teacher_context=problem.solution,
    )
