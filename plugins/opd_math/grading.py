"""Final answers in ``\\boxed{...}`` and their comparison with the reference."""

from __future__ import annotations

import re

_BOXED = "\\boxed{"


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` in ``text`` (nested braces allowed), or None."""
    start = text.rfind(_BOXED)
    if start < 0:
        return None
    depth, begin = 1, start + len(_BOXED)
    for index in range(begin, len(text)):  # one answer's characters, not a hot path
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return text[begin:index].strip()
    return None


def normalize(answer: str) -> str:
    """Loose textual form: no spaces, ``$``, ``\\!``, ``\\left``/``\\right`` or trailing ``.``."""
    text = re.sub(r"\\left|\\right|\\!|\$|\s", "", answer)
    return text.rstrip(".")


def is_equivalent(predicted: str, reference: str) -> bool:
    """Whether two answers agree: ``math-verify`` when installed, else normalized text."""
    try:
        from math_verify import parse, verify
    except ImportError:
        return normalize(predicted) == normalize(reference)
    gold = parse(f"${reference}$")
    guess = parse(f"${predicted}$")
    return bool(verify(gold, guess)) or normalize(predicted) == normalize(reference)


def grade_math(completion: str, reference: str) -> float:
    """1.0 when the completion's last boxed answer equals the reference, else 0.0."""
    predicted = last_boxed(completion)
    return 1.0 if predicted is not None and is_equivalent(predicted, reference) else 0.0
