"""An evaluator: the share of answers that end in the task's ``#<answer>`` format."""

from __future__ import annotations

import logging
import re

from opd_core import EvalResult, GenerationParams, Generator, hookimpl
from opd_core.api import RunContext

log = logging.getLogger(__name__)
FINAL_ANSWER = re.compile(r"#\S+\s*$")


class AnswerFormat:
    """``format_rate``: answers to the task's eval prompts that end with ``#<something>``,
    right or wrong. Registered as kind ``evaluator``; its config node is
    ``evaluators.answer_format`` (``# @package`` line of ``conf/evaluator/answer_format.yaml``).
    """

    def __init__(self, max_examples: int = 20) -> None:
        if max_examples <= 0:
            raise ValueError(f"max_examples must be positive, got {max_examples}")
        self.max_examples = max_examples

    def setup(self, ctx: RunContext) -> None:
        """Once the student is loaded: take the eval prompts, or step aside without them."""
        self.prompts = list(ctx.hook.opd_task_prompts(split="eval") or [])[: self.max_examples]
        if not self.prompts:
            log.info("evaluator answer_format: the task has no eval prompts; skipping it")
        self.params = GenerationParams(
            max_new_tokens=ctx.config.eval.max_new_tokens, temperature=0.0
        )

    @hookimpl
    def opd_evaluate(self, generator: Generator, role: str, step: int) -> EvalResult | None:
        if not self.prompts:
            return None
        completions = generator.generate(self.prompts, self.params)
        formatted = sum(1 for c in completions if FINAL_ANSWER.search(c))
        return EvalResult(
            evaluator="answer_format",
            target=role,
            metrics={"format_rate": formatted / len(completions)},
        )
