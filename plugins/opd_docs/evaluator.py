"""The ``qa_accuracy`` evaluator: does the model know the facts of the documents?"""

from __future__ import annotations

from pathlib import Path

from opd_core import EvalResult, GenerationParams, Generator, OPDError, Prompt, hookimpl
from opd_core.api import RunContext
from opd_docs.data import read_documents
from opd_docs.qa import QAItem, answer_matches, read_qa_jsonl


class QAAccuracy:
    """Greedy answers to the questions of a QA file, scored by normalised answer matching
    (:func:`opd_docs.qa.answer_matches`). Logs ``qa_accuracy`` and ``qa_examples``. Independent
    of the task, so the same questions measure a model before and after every stage."""

    def __init__(
        self,
        path: str | None = None,
        max_examples: int | None = None,
        max_new_tokens: int = 64,
        instruction: str = "",
        teacher_context_dir: str | None = None,
    ) -> None:
        """``teacher_context_dir``: a documents folder shown, whole, to ``teacher=context`` with
        every question (the teacher row then measures the model with the documents in context)."""
        if max_examples is not None and max_examples <= 0:
            raise ValueError(f"max_examples must be positive or null, got {max_examples}")
        if max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
        self.path = path
        self.max_examples = max_examples
        self.params = GenerationParams(max_new_tokens=max_new_tokens, temperature=0.0)
        self.instruction = instruction
        self.teacher_context_dir = teacher_context_dir

    def setup(self, ctx: RunContext) -> None:
        if self.path is None:
            raise OPDError(
                "evaluators.qa_accuracy.path is not set; point it at a JSONL of "
                "{question, answer} lines (python -m opd_docs.synthetic writes qa.jsonl), or "
                "remove the evaluator with '~evaluators.qa_accuracy'."
            )
        self.items: list[QAItem] = read_qa_jsonl(Path(self.path).expanduser())[: self.max_examples]
        self.context = (
            None
            if self.teacher_context_dir is None
            else all_documents(Path(self.teacher_context_dir).expanduser())
        )
        self.prompts = [self.to_prompt(i, item) for i, item in enumerate(self.items)]

    def to_prompt(self, index: int, item: QAItem) -> Prompt:
        """The question as a one-turn chat prompt (with the configured instruction after it)."""
        content = (
            f"{item.question}\n{self.instruction}".strip() if self.instruction else item.question
        )
        return Prompt(
            id=f"qa-{index}",
            messages=({"role": "user", "content": content},),
            answer=item.answer,
            source="qa",
            teacher_context=self.context,
        )

    @hookimpl
    def opd_evaluate(self, generator: Generator, role: str, step: int) -> EvalResult:
        responses = generator.generate(self.prompts, self.params)
        correct = [
            answer_matches(r, item.accepted) for r, item in zip(responses, self.items, strict=True)
        ]
        return EvalResult(
            evaluator="qa_accuracy",
            target=role,
            metrics={
                "qa_accuracy": sum(correct) / len(correct),
                "qa_examples": float(len(correct)),
            },
        )


def all_documents(docs_dir: Path) -> str:
    """Every document of ``docs_dir`` under a ``# <name>`` heading, in path order."""
    return "\n\n".join(f"# {d.name}\n\n{d.text.strip()}" for d in read_documents(docs_dir))
