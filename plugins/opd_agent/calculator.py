"""The calculator: what a student's turn asks for, and its answer.

A turn holding ``<calc>`` is a call: the text up to the next ``</calc>`` must be one operation
``a+b``, ``a-b`` or ``a*b`` on non-negative integers (at most 6 digits each), else the call is
invalid and the calculator answers ``error``. A turn without ``<calc>`` is the final answer: the
integer after its last ``#`` (the demo's answer marker), or none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from opd_agent.problems import CALL_CLOSE, CALL_OPEN
from opd_arith.problems import extract_answer

_EXPRESSION_RE = re.compile(r"^\s*(\d{1,6})\s*([+\-*])\s*(\d{1,6})\s*$")
_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


@dataclass(frozen=True)
class Turn:
    """What one assistant turn says."""

    kind: str
    """``call`` (a valid calculator call), ``invalid_call`` or ``answer``."""
    result: str | None = None
    """The calculator's answer to a call (``None`` for an invalid one)."""
    answer: str | None = None
    """The final answer of an ``answer`` turn (``None``: it gave none)."""


def calculate(expression: str) -> int | None:
    """The value of one operation ``a<op>b`` on non-negative integers, or ``None`` if
    ``expression`` is not one."""
    match = _EXPRESSION_RE.match(expression)
    if match is None:
        return None
    a, op, b = match.groups()
    return int(_OPS[op](int(a), int(b)))


def parse_turn(reply: str) -> Turn:
    """Read an assistant turn as a calculator call or a final answer."""
    start = reply.find(CALL_OPEN)
    if start < 0:
        return Turn("answer", answer=extract_answer(reply))
    end = reply.find(CALL_CLOSE, start + len(CALL_OPEN))
    if end < 0:
        return Turn("invalid_call")
    value = calculate(reply[start + len(CALL_OPEN) : end])
    return Turn("invalid_call") if value is None else Turn("call", result=str(value))
