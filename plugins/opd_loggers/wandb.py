"""Weights & Biases: offline by default (no account, no network); ``wandb sync`` uploads later."""

from __future__ import annotations

from dataclasses import asdict, is_dataclass
from typing import Any

from opd_core.api import RunContext
from opd_loggers.tracker import Tracker, require

MODES = ("offline", "online", "disabled")


class WandbLogger(Tracker):
    """One W&B run per training run, its files under ``<run folder>/wandb``."""

    def __init__(
        self, project: str = "opd-core", mode: str = "offline", run_name: str | None = None
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.project = project
        self.mode = mode
        self.run_name = run_name

    def start(self, ctx: RunContext) -> None:
        wandb = require("wandb", "wandb")
        config = asdict(ctx.config) if is_dataclass(ctx.config) else {}
        self.run: Any = wandb.init(
            project=self.project,
            mode=self.mode,
            dir=str(ctx.output_dir),
            name=self.run_name or ctx.output_dir.name,
            config=config,
            reinit="create_new",
        )

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log(metrics, step=step)

    def finish(self, summary: dict[str, float] | None) -> None:
        if summary:
            self.run.summary.update(summary)
        self.run.finish(exit_code=0 if summary is not None else 1)
