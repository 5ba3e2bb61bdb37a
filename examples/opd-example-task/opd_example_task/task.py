"""A task: reverse a string of digits (``rev 3819`` -> ``#9183``)."""

from __future__ import annotations

import random
from collections.abc import Sequence

from opd_core import Prompt, hookimpl


class ReverseDigits:
    """Prompts ``rev 3819``; the right answer ends with ``#9183``.

    A task answers ``opd_task_prompts`` (its ``train`` and ``eval`` splits) and, when it can
    grade, ``opd_grade_completions``. It needs no ``setup(ctx)``: that method is optional.
    """

    def __init__(
        self, num_digits: int = 4, train_size: int = 500, eval_size: int = 50, seed: int = 0
    ) -> None:
        if num_digits <= 0:
            raise ValueError(f"num_digits must be positive, got {num_digits}")
        rng = random.Random(seed)
        total = train_size + eval_size
        numbers = rng.sample(range(10 ** (num_digits - 1), 10**num_digits), total)
        prompts = [
            Prompt(
                id=f"rev-{i}",
                messages=({"role": "user", "content": f"rev {n}"},),
                answer=str(n)[::-1],
                source="reverse_digits",
            )
            for i, n in enumerate(numbers)
        ]
        self.splits = {"train": prompts[:train_size], "eval": prompts[train_size:]}

    @hookimpl
    def opd_task_prompts(self, split: str) -> Sequence[Prompt]:
        return self.splits.get(split, [])

    @hookimpl
    def opd_grade_completions(
        self, prompts: Sequence[Prompt], completions: Sequence[str]
    ) -> list[float]:
        return [
            1.0 if c.strip().endswith(f"#{p.answer}") else 0.0
            for p, c in zip(prompts, completions, strict=True)
        ]
