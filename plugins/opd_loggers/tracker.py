"""What every tracker shares: rank 0 alone logs, numbers only, started once, finished once."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

from opd_core import OPDError, hookimpl
from opd_core.api import RunContext


class Tracker(ABC):
    """A logger component. Subclasses open the tracker in :meth:`start`, send one step's
    scalars in :meth:`log` and close it in :meth:`finish` (with the summary, or ``None`` when
    the run failed)."""

    def setup(self, ctx: RunContext) -> None:
        self.active = False  # until the tracker is open: a failed start is not closed
        self.finished = False
        if ctx.rank == 0:
            self.start(ctx)
            self.active = True

    @hookimpl
    def opd_step_end(self, ctx: RunContext, step: int, metrics: Mapping[str, float]) -> None:
        if self.active:
            self.log(step, scalars(metrics))

    @hookimpl
    def opd_run_end(self, ctx: RunContext, summary: Mapping[str, Any]) -> None:
        if self.active and not self.finished:
            self.finished = True
            self.finish(scalars(flatten(summary, "summary")))

    def close(self) -> None:
        """The run ends (failed runs too): close the tracker if the summary did not."""
        if getattr(self, "active", False) and not self.finished:
            self.finished = True
            self.finish(None)

    @abstractmethod
    def start(self, ctx: RunContext) -> None:
        """Implemented by each tracker."""

    @abstractmethod
    def log(self, step: int, metrics: dict[str, float]) -> None:
        """Implemented by each tracker."""

    @abstractmethod
    def finish(self, summary: dict[str, float] | None) -> None:
        """Implemented by each tracker."""


def require(module: str, logger: str) -> Any:
    """Import a tracker's library; a missing one is one sentence saying what to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise OPDError(
            f"logger '{logger}' needs the {module.split('.')[0]} package ({err}); fix: "
            "pip install 'opd-core[trackers]', or drop it from logger=[...]."
        ) from err


def scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of ``metrics`` (booleans and strings left out)."""
    out = {}
    for key, value in metrics.items():
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if number and math.isfinite(float(value)):
            out[key] = float(value)
    return out


def flatten(tree: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """Nested mappings as ``prefix/a/b`` keys."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}/{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out
