"""Checks that an objective got the inputs it needs, with the fix in the message, and the one
range check of the weights in [0, 1] that several objectives take (``beta``, ``gamma``)."""

from __future__ import annotations

import torch

from opd_core import OPDError, TeacherScores


def require_scores(scores: TeacherScores | None, objective: str, top_k: int = 0) -> TeacherScores:
    """``scores``, checked to hold what ``objective`` needs (``top_k`` teacher tokens)."""
    if scores is None:
        raise OPDError(f"{objective} needs teacher scores; configure a teacher (+teacher=<name>).")
    if top_k and scores.top_k < top_k:
        raise OPDError(
            f"{objective} needs the teacher's top-{top_k} log-probabilities but the teacher "
            f"returned {scores.top_k}; use a teacher that supports top-k scoring."
        )
    return scores


def require_rewards(rewards_B: torch.Tensor | None, objective: str) -> torch.Tensor:
    """``rewards_B``, checked to exist: the task must grade completions."""
    if rewards_B is None:
        raise OPDError(
            f"{objective} learns from task rewards but the task has no grader "
            "(opd_grade_completions); choose a graded task or a distillation objective."
        )
    return rewards_B


def unit_interval(name: str, value: float) -> float:
    """``value``, checked to be in [0, 1]: each constructor that takes such a weight checks it
    here, once; the math it feeds (``generalized_jsd``, ``discounted_future_sum``) trusts it."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return value
