"""Arithmetic that needs a calculator: the demo's expressions over two-digit numbers.

A problem is one of the demo's fully parenthesised expressions (``opd_arith.problems``) with
two-digit operands and at least one product of two numbers >= 10, which the demo's tiny models
cannot compute in their heads. Its tool-using solution calls the calculator once per operation,
innermost first, then answers::

    user       (37*58)+64
    assistant  <calc>37*58</calc>
    tool       2146
    assistant  <calc>2146+64</calc>
    tool       2210
    assistant  #2210

Train and held-out splits are disjoint by construction (``opd_arith.problems.split_of``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from opd_arith.problems import ANSWER_MARKER, ArithmeticProblem, make_problems
from opd_core.api import ChatMessage, Prompt

CALL_OPEN, CALL_CLOSE = "<calc>", "</calc>"
"""The calculator call's markup; each is one token of the tool-use tokenizer."""
TOOL_ROLE = "tool"
"""The chat role of the calculator's answers."""
ERROR_RESULT = "error"
"""What the calculator answers to a call it cannot evaluate."""

_STEP_RE = re.compile(r"(\d+)([+\-*])(\d+)=(\d+)")


@dataclass(frozen=True)
class ToolTaskSpec:
    """Difficulty of the calculator problems."""

    num_ops: int = 3
    """Operations per expression: the episode has ``num_ops`` calls and an answer turn."""
    max_operand: int = 99
    ops: str = "+-*"
    eval_fraction: float = 0.1
    max_result: int = 9999
    """Every intermediate and final value lies in ``0..max_result``."""
    min_factor: int = 10
    """Some product must have both factors at least this large (the tool is needed)."""

    def problems(self, n: int, seed: int, split: str) -> list[ToolProblem]:
        """``n`` problems of ``split`` at this difficulty, deterministic in all arguments."""
        asked = 2 * n + 100
        while True:
            drawn = make_problems(
                asked, seed, split=split, num_ops=self.num_ops, max_operand=self.max_operand,
                ops=self.ops, eval_fraction=self.eval_fraction, min_result=0,
                max_result=self.max_result,
            )  # fmt: skip
            kept = [ToolProblem.of(p) for p in drawn if self.needs_tool(p)]
            if len(kept) >= n:
                return kept[:n]
            asked *= 2

    def needs_tool(self, problem: ArithmeticProblem) -> bool:
        """Whether some product of ``problem`` has both factors at least ``min_factor``."""
        return any(
            op == "*" and int(a) >= self.min_factor and int(b) >= self.min_factor
            for a, op, b, _ in _STEP_RE.findall(problem.solution)
        )


@dataclass(frozen=True)
class ToolProblem:
    """A problem, its answer, and the calculator calls that solve it."""

    question: str
    """The expression, e.g. ``(37*58)+64``."""
    answer: str
    """The exact integer answer as text."""
    steps: tuple[tuple[str, str], ...]
    """``(expression, result)`` per operation in evaluation order, e.g. ``("37*58", "2146")``."""
    solution: str
    """The demo's worked solution, computed in the head: ``37*58=2146 2146+64=2210 #2210``."""

    @staticmethod
    def of(problem: ArithmeticProblem) -> ToolProblem:
        """The tool-use view of one of the demo's problems."""
        steps = tuple((f"{a}{op}{b}", c) for a, op, b, c in _STEP_RE.findall(problem.solution))
        return ToolProblem(problem.question, problem.answer, steps, problem.solution)

    def trajectory(self) -> tuple[ChatMessage, ...]:
        """The reference episode after the question: a call and its result per operation, then
        the final answer."""
        turns: list[ChatMessage] = []
        for expression, result in self.steps:
            turns.append({"role": "assistant", "content": call_text(expression)})
            turns.append({"role": TOOL_ROLE, "content": result})
        turns.append({"role": "assistant", "content": f"{ANSWER_MARKER}{self.answer}"})
        return tuple(turns)

    def as_arithmetic(self) -> ArithmeticProblem:
        """The problem as the demo's single-turn one (worked solution, no tool)."""
        return ArithmeticProblem(self.question, self.answer, self.solution)


def call_text(expression: str) -> str:
    """A calculator call, ``<calc>37*58</calc>``."""
    return f"{CALL_OPEN}{expression}{CALL_CLOSE}"


def to_prompt(problem: ToolProblem, split: str, index: int) -> Prompt:
    """A problem as a one-turn chat prompt (the question); the reference episode rides along in
    ``metadata["trajectory"]`` and the worked solution as ``reference``."""
    return Prompt(
        id=f"calculator-{split}-{index}",
        messages=({"role": "user", "content": problem.question},),
        answer=problem.answer,
        reference=problem.solution,
        metadata={"trajectory": problem.trajectory(), "split": split},
        source="calculator",
    )
