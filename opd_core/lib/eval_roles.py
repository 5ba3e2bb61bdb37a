"""Which models an evaluator scores: the ``roles`` option that evaluators share."""

from __future__ import annotations

from collections.abc import Sequence

EVAL_ROLES = ("student", "teacher")
"""The models a run evaluates: the student, and the teacher with ``eval.teacher=true``."""


def parse_eval_roles(roles: Sequence[str] | str) -> tuple[str, ...]:
    """``roles`` as a tuple, checked: a non-empty subset of :data:`EVAL_ROLES`."""
    chosen = (roles,) if isinstance(roles, str) else tuple(roles)
    unknown = sorted(set(chosen) - set(EVAL_ROLES))
    if unknown or not chosen:
        raise ValueError(f"roles must be [student], [teacher] or both, got {list(chosen)}")
    return chosen
