"""The ``ifeval`` task: IFEval prompts for on-policy distillation, graded by lm-eval's scorer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from opd_core import OPDError, Prompt, hookimpl
from opd_ifeval.data import choose, load_prompts
from opd_ifeval.scoring import IFEvalScorer


class IFEvalTask:
    """IFEval's instruction-following prompts as one-turn chats.

    ``eval_size`` prompts (drawn with ``seed``) are held out for evaluation, the rest train. A
    completion's grade is 1.0 when it follows every instruction of its prompt (IFEval's strict
    prompt-level accuracy), else 0.0.
    """

    def __init__(
        self,
        path: str | None = None,
        limit: int | None = None,
        eval_size: int = 100,
        seed: int | None = 0,
        teacher_context: str | None = None,
    ) -> None:
        """``teacher_context``: a system prompt only the teacher sees (``teacher=context``)."""
        if limit is not None and limit <= 0:
            raise ValueError(f"limit must be positive or null, got {limit}")
        if eval_size < 0:
            raise ValueError(f"eval_size must be >= 0, got {eval_size}")
        self.path = path
        self.limit = limit
        self.eval_size = eval_size
        self.seed = seed
        self.teacher_context = teacher_context
        self._splits: dict[str, list[Prompt]] | None = None
        self._scorer: IFEvalScorer | None = None

    @hookimpl
    def opd_task_prompts(self, split: str) -> Sequence[Prompt]:
        return self.splits().get(split, [])

    def splits(self) -> dict[str, list[Prompt]]:
        """``train`` and ``eval`` prompts, read once."""
        if self._splits is None:
            prompts = [
                replace(p, teacher_context=self.teacher_context)
                for p in choose(load_prompts(self.path), self.limit, self.seed)
            ]
            if self.eval_size >= len(prompts):
                raise OPDError(
                    f"task.eval_size={self.eval_size} leaves none of the {len(prompts)} IFEval "
                    f"prompts for training; fix: use task.eval_size<{len(prompts)}."
                )
            held_out = {p.id for p in choose(prompts, self.eval_size, self.seed)}
            self._splits = {
                "train": [p for p in prompts if p.id not in held_out],
                "eval": [p for p in prompts if p.id in held_out],
            }
        return self._splits

    @hookimpl
    def opd_grade_completions(
        self, prompts: Sequence[Prompt], completions: Sequence[str]
    ) -> list[float]:
        if self._scorer is None:
            self._scorer = IFEvalScorer()
        verdicts = self._scorer.judge(prompts, completions)
        return [float(v["prompt_level_strict_acc"]) for v in verdicts]
