"""The ``math`` task: a ``datasets`` source per split, answers in ``\\boxed{}``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opd_core import OPDError, Prompt, hookimpl
from opd_math.grading import grade_math


@dataclass(frozen=True)
class MathSource:
    """Where one split's problems come from: ``datasets.load_dataset(path, ...)``."""

    path: str
    """A Hub id, or a loader name (``json``, ``parquet``) with ``data_files``."""
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
        import datasets

        try:
            data = datasets.load_dataset(
                source.path, name=source.name, split=source.split, data_files=source.data_files
            )
        except Exception as err:
            raise OPDError(
                f"Cannot load the math task's {split} data '{source.path}' ({type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}); point task.{split}.path at a "
                f"loader such as json with task.{split}.data_files=/path/to/file.jsonl."
            ) from err
        missing = {source.question_field, source.answer_field} - set(data.column_names)
        if missing:
            raise OPDError(
                f"The math task's {split} data has no column {', '.join(sorted(missing))} "
                f"(columns: {', '.join(data.column_names)}); set task.{split}.question_field and "
                f"task.{split}.answer_field."
            )
        rows = data if source.limit is None else data.select(range(min(source.limit, len(data))))
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
