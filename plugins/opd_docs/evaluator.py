"""The ``qa_accuracy`` evaluator: does the model know the facts of the documents?"""

from __future__ import annotations

from pathlib import Path

from opd_core import EvalResult, GenerationParams, Generator, OPDError, Prompt, hookimpl
from opd_core.context import RunContext
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
    ) -> None:
        if max_examples is not None and max_examples <= 0:
            raise ValueError(f"max_examples must be positive or null, got {max_examples}")
        if max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
        self.path = path
        self.max_examples = max_examples
        self.params = GenerationParams(max_new_tokens=max_new_tokens, temperature=0.0)
        self.instruction = instruction

    def setup(self, ctx: RunContext) -> None:
        if self.path is None:
            raise OPDError(
                "evaluators.qa_accuracy.path is not set; point it at a JSONL of "
                "{question, answer} lines (python -m opd_docs.synthetic writes qa.jsonl), or "
                "remove the evaluator with '~evaluators.qa_accuracy'."
            )
        self.items: list[QAItem] = read_qa_jsonl(Path(self.path).expanduser())[: self.max_examples]
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
