"""The ``lm_eval`` evaluator: lm-eval's ``HFLM`` around the live model, no reload from disk."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from opd_core import EvalResult, Generator, OPDError, hookimpl
from opd_core.api import LoadedModel, RunContext, capture_rng, parse_eval_roles, restore_rng
from opd_lmeval.results import flatten_results
from opd_lmeval.tasks import TaskSelection, load_task_manager

log = logging.getLogger("opd_core")


class LMEvalEvaluator:
    """Scores the student (and, if asked, the teacher) on lm-evaluation-harness tasks.

    The model object the run trains is wrapped in lm-eval's ``HFLM`` at every evaluation, so the
    scores are those of the current weights; its train/eval mode and the random generators are
    put back afterwards.
    """

    def __init__(
        self,
        tasks: Sequence[str] | str | None = None,
        include_path: str | None = None,
        inline: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        limit: float | None = None,
        batch_size: int = 8,
        num_fewshot: int | None = None,
        roles: Sequence[str] = ("student",),
        bootstrap_iters: int = 1000,
        apply_chat_template: bool = False,
    ) -> None:
        if limit is not None and limit <= 0:
            raise ValueError(f"limit must be positive (a count, or a fraction < 1), got {limit}")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if num_fewshot is not None and num_fewshot < 0:
            raise ValueError(f"num_fewshot must be >= 0 or null, got {num_fewshot}")
        if bootstrap_iters < 0:
            raise ValueError(f"bootstrap_iters must be >= 0, got {bootstrap_iters}")
        self.selection = TaskSelection.from_config(tasks, include_path, inline)
        self.limit = limit
        self.batch_size = batch_size
        self.num_fewshot = num_fewshot
        self.roles = parse_eval_roles(roles)
        self.bootstrap_iters = bootstrap_iters
        self.apply_chat_template = apply_chat_template

    def setup(self, ctx: RunContext) -> None:
        require_lm_eval()
        self.ctx = ctx
        self.manager = load_task_manager(self.selection)
        self.specs = self.selection.specs(self.manager)

    @hookimpl
    def opd_evaluate(self, generator: Generator, role: str, step: int) -> EvalResult | None:
        if role not in self.roles:
            return None
        loaded = live_model(self.ctx, role)
        if loaded is None:
            log.info("lm_eval: no in-process model for the %s; skipping it", role)
            return None
        metrics = self.evaluate(loaded)
        if metrics is None:
            return None
        return EvalResult(evaluator="lm_eval", target=role, metrics=metrics)

    def evaluate(self, loaded: LoadedModel) -> dict[str, float] | None:
        """Run the tasks on ``loaded`` as it is now; ``None`` on processes that get no result."""
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM

        with kept_state(loaded.model):
            lm = HFLM(
                pretrained=loaded.model,
                tokenizer=loaded.tokenizer,
                backend="causal",
                batch_size=self.batch_size,
            )
            output = simple_evaluate(
                model=lm,
                tasks=self.specs,
                task_manager=self.manager,
                limit=self.limit,
                num_fewshot=self.num_fewshot,
                bootstrap_iters=self.bootstrap_iters,
                apply_chat_template=self.apply_chat_template,
                log_samples=False,
            )
        if output is None:  # lm-eval returns results on local rank 0 only
            return None
        return flatten_results(output["results"])


def live_model(ctx: RunContext, role: str) -> LoadedModel | None:
    """The model playing ``role`` in this process: a plugin's answer, else the run's student."""
    loaded: LoadedModel | None = ctx.hook.opd_eval_model(role=role)
    if loaded is None and role == "student":
        return ctx.student
    return loaded


@contextmanager
def kept_state(model: Any) -> Iterator[None]:
    """Put back ``model``'s train/eval mode and every random generator after the block.

    lm-eval switches the model to eval mode and seeds Python, NumPy and torch; the run goes on
    as if no evaluation had happened.
    """
    import numpy as np

    was_training = model.training
    rng = capture_rng()
    numpy_rng = np.random.get_state()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)
        restore_rng(rng)
        np.random.set_state(numpy_rng)


def require_lm_eval() -> None:
    """Fail clearly when lm-eval is not installed."""
    try:
        import lm_eval  # noqa: F401
    except ImportError as err:
        raise OPDError(
            "The lm_eval evaluator needs lm-eval, which is not installed; fix: "
            "pip install 'opd-core[eval]' (or pip install 'lm-eval[ifeval]')."
        ) from err
