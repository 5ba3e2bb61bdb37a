"""The ``math`` task: a ``datasets`` source per split, answers in ``\\boxed{}``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opd_core import Prompt, hookimpl
from opd_core.api import load_rows, require_columns
from opd_math.grading import grade_math


@dataclass(frozen=True)
class MathSource:
    """Where one split's problems come from: ``datasets.load_dataset(path, ...)``."""

    path: str
    """A Hub id, a local ``.jsonl``/``.json``/``.parquet`` file, or a loader name (``json``,
    ``parquet``) with ``data_files``."""
    split: str = "train"
    question_field: str = "problem"
    answer_field: str = "answer"
    data_files: str | list[str] | None = None
    name: str | None = None
    limit: int | None = None


class MathTask:
    """Math word problems; the student must end with its answer in ``\\boxed{}``."""

    def __init__(
        self,
        train: Mapping[str, Any],
        eval: Mapping[str, Any] | None = None,
        instruction: str = "",
    ) -> None:
        self.sources = {"train": MathSource(**train)}
        if eval is not None:
            self.sources["eval"] = MathSource(**eval)
        self.instruction = instruction
        self._prompts: dict[str, list[Prompt]] = {}

    @hookimpl
    def opd_task_prompts(self, split: str) -> Sequence[Prompt]:
        if split not in self.sources:
            return []
        if split not in self._prompts:
            self._prompts[split] = self._load(split, self.sources[split])
        return self._prompts[split]

    def _load(self, split: str, source: MathSource) -> list[Prompt]:
        rows = load_rows(
            source.path,
            split=source.split,
            data_files=source.data_files,
            name=source.name,
            limit=source.limit,
            where=f"task.{split}",
            what=f"the math task's {split}",
        )
        require_columns(
            rows,
            {source.question_field, source.answer_field},
            where=f"math task's {split}",
            keys=f"task.{split}.question_field and task.{split}.answer_field",
        )
        prompts = []
        for index, row in enumerate(rows):
            question = str(row[source.question_field])
            content = f"{question}\n{self.instruction}".strip() if self.instruction else question
            prompts.append(
                Prompt(
                    id=f"math-{split}-{index}",
                    messages=({"role": "user", "content": content},),
                    answer=str(row[source.answer_field]),
                    source=source.path,
                )
            )
        return prompts

    @hookimpl
    def opd_grade_completions(
        self, prompts: Sequence[Prompt], completions: Sequence[str]
    ) -> list[float]:
        return [grade_math(c, p.answer or "") for p, c in zip(prompts, completions, strict=True)]
