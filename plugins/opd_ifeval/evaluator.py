"""The ``ifeval`` evaluator: generate answers to IFEval prompts, score them with lm-eval."""

from __future__ import annotations

from collections.abc import Sequence

from opd_core import EvalResult, GenerationParams, Generator, hookimpl
from opd_core.api import EVAL_ROLES, RunContext, parse_eval_roles
from opd_ifeval.data import choose, load_prompts
from opd_ifeval.scoring import IFEvalScorer


class IFEvalEvaluator:
    """IFEval's four accuracies of the model's answers (strict and loose, prompt and instruction
    level), logged as ``ifeval/<metric>``."""

    def __init__(
        self,
        path: str | None = None,
        limit: int | None = None,
        seed: int | None = None,
        max_new_tokens: int = 1280,
        temperature: float = 0.0,
        roles: Sequence[str] = EVAL_ROLES,
    ) -> None:
        """``roles``: the models scored (with ``eval.teacher=true``, the teacher too by default)."""
        if limit is not None and limit <= 0:
            raise ValueError(f"limit must be positive or null, got {limit}")
        if max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0: greedy), got {temperature}")
        self.path = path
        self.limit = limit
        self.seed = seed
        self.params = GenerationParams(max_new_tokens=max_new_tokens, temperature=temperature)
        self.roles = parse_eval_roles(roles)

    def setup(self, ctx: RunContext) -> None:
        self.scorer = IFEvalScorer()
        self.prompts = choose(load_prompts(self.path), self.limit, self.seed)
        self.scorer.check(self.prompts)

    @hookimpl
    def opd_evaluate(self, generator: Generator, role: str, step: int) -> EvalResult | None:
        if role not in self.roles:
            return None
        responses = generator.generate(self.prompts, self.params)
        scores = self.scorer.scores(self.prompts, responses)
        metrics = {f"ifeval/{name}": value for name, value in scores.items()}
        metrics["ifeval/examples"] = float(len(self.prompts))
        return EvalResult(evaluator="ifeval", target=role, metrics=metrics)
