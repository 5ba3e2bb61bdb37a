"""An example third-party task plugin for opd-core: reverse a string of digits."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from opd_core import Prompt, hookimpl
from opd_core.config import store_config_dir
from opd_core.registry import Registry


class ReverseDigits:
    """Prompts ``rev 3819``; the right answer ends with ``#9183``."""

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


@hookimpl
def opd_register_components(registry: Registry) -> None:
    registry.add("task", "reverse_digits", ReverseDigits)


@hookimpl
def opd_register_configs(store: Any) -> None:
    store_config_dir(store, "opd_example_task")
