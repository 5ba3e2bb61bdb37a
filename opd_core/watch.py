"""Watching a metric over a run: the best checkpoint, and the divergence stop.

``checkpoint.best_metric`` (an eval metric such as ``accuracy``; ``checkpoint.best_mode`` max or
min) keeps the checkpoint of the evaluation that scored best beside the last ``checkpoint.keep``:
a new best is saved at once (also between ``checkpoint.every`` saves), ``checkpoints/best`` names
it, and rotation never deletes it (:func:`opd_core.checkpoint.save_checkpoint`). Candidates are
the evaluations after training steps (``eval.every`` and the final one); the student before
training is not one (its weights are ``student.model.path``).

``divergence.metric`` stops a run early once that metric has been worse than its best by more
than ``divergence.margin`` for ``divergence.patience`` checks in a row: an eval metric is checked
at each evaluation of the student (the one before training included), a step metric
(``teacher_reverse_kl``, ``loss``, ``reward``) after every step. The run then ends as a finished
one at that step (final evaluation, checkpoint, summary with ``stopped_early``), with its best
checkpoint kept.

Both records are part of the trainer state, so a resumed run continues them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from opd_core.checkpoint import checkpoint_dir
from opd_core.errors import OPDError

STEP_METRICS = ("teacher_reverse_kl", "loss", "reward")
"""Metrics the divergence stop reads from each step's metrics instead of from evaluations."""

LOWER_IS_BETTER = ("teacher_reverse_kl", "loss")
"""Metrics whose best is their minimum when no mode is set."""


def default_mode(metric: str, mode: str | None) -> str:
    """``mode`` if set, else ``min`` for a metric that should fall and ``max`` otherwise."""
    if mode is not None:
        return mode
    return "min" if metric in LOWER_IS_BETTER else "max"


def require_metric(key: str, metric: str, scores: Mapping[str, float]) -> None:
    """Refuse a watched eval metric the evaluators do not report, naming those they do."""
    if scores and metric not in scores:
        raise OPDError(
            f"{key}={metric} is not a metric the evaluators report; use one of: "
            f"{', '.join(sorted(scores))}."
        )


@dataclass
class Record:
    """The best value of one metric so far and how many checks in a row were worse."""

    metric: str
    mode: str
    value: float | None = None
    step: int | None = None
    worse: int = 0

    def improves(self, value: float) -> bool:
        """Whether ``value`` beats the best so far (strictly; the first value always does)."""
        if self.value is None:
            return True
        return value > self.value if self.mode == "max" else value < self.value

    def is_worse(self, value: float, margin: float) -> bool:
        """Whether ``value`` is worse than the best by more than ``margin``."""
        if self.value is None:
            return False
        return value < self.value - margin if self.mode == "max" else value > self.value + margin


class BestCheckpoint:
    """Which checkpoint scored best on ``checkpoint.best_metric`` (``None``: off)."""

    def __init__(self, metric: str | None, mode: str) -> None:
        self.record = Record(metric, mode) if metric is not None else None
        self.checked = False

    @property
    def step(self) -> int | None:
        """The best checkpoint's step, once there is one."""
        return self.record.step if self.record is not None else None

    def observe(self, step: int, scores: Mapping[str, float]) -> bool:
        """Take the student's eval ``scores`` at ``step``; whether ``step`` is the new best
        (its checkpoint must then be written). The scores before training are only checked."""
        record = self.record
        if record is None or not scores:
            return False
        if not self.checked:
            require_metric("checkpoint.best_metric", record.metric, scores)
            self.checked = True
        value = float(scores[record.metric])
        if step == 0 or not record.improves(value):
            return False
        record.value, record.step = value, step
        return True

    def summary(self, output_dir: Path) -> dict[str, Any] | None:
        """The summary's ``best_checkpoint`` entry: step, metric, value, mode, checkpoint."""
        record = self.record
        if record is None or record.step is None:
            return None
        return {
            "step": record.step,
            "metric": record.metric,
            "value": record.value,
            "mode": record.mode,
            "checkpoint": str(checkpoint_dir(output_dir, record.step)),
        }

    def state_dict(self) -> dict[str, Any]:
        return asdict(self.record) if self.record is not None else {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.record is not None and state.get("metric") == self.record.metric:
            self.record = Record(**state)
            self.checked = True


class DivergenceStop:
    """Ends a run whose ``divergence.metric`` stays worse than its best (``None``: off)."""

    def __init__(self, metric: str | None, mode: str | None, margin: float, patience: int) -> None:
        self.record = Record(metric, default_mode(metric, mode)) if metric is not None else None
        self.margin = margin
        self.patience = patience
        self.checked = False

    @property
    def per_step(self) -> bool:
        """Whether the metric is a step metric, checked after every step."""
        return self.record is not None and self.record.metric in STEP_METRICS

    def observe_step(self, step: int, metrics: Mapping[str, float]) -> str | None:
        """Check a step metric after ``step``; why the run stops, or ``None``."""
        if self.record is None or not self.per_step or self.record.metric not in metrics:
            return None
        return self._check(step, float(metrics[self.record.metric]))

    def observe_eval(self, step: int, scores: Mapping[str, float]) -> str | None:
        """Check an eval metric on the student's ``scores`` at ``step``; why the run stops, or
        ``None``."""
        if self.record is None or self.per_step or not scores:
            return None
        if not self.checked:
            require_metric("divergence.metric", self.record.metric, scores)
            self.checked = True
        return self._check(step, float(scores[self.record.metric]))

    def _check(self, step: int, value: float) -> str | None:
        record = self.record
        assert record is not None
        if record.improves(value):
            record.value, record.step, record.worse = value, step, 0
            return None
        record.worse = record.worse + 1 if record.is_worse(value, self.margin) else 0
        if record.worse < self.patience:
            return None
        return (
            f"{record.metric} was worse than its best ({record.value:.4g} at step {record.step}) "
            f"by more than divergence.margin={self.margin:g} for {record.worse} checks in a row "
            f"(now {value:.4g} at step {step})"
        )

    def state_dict(self) -> dict[str, Any]:
        return asdict(self.record) if self.record is not None else {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.record is not None and state.get("metric") == self.record.metric:
            self.record = Record(**state)
            self.checked = True
