"""TensorBoard: every step's metrics as scalars under ``<run folder>/tensorboard``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from opd_core.api import RunContext
from opd_loggers.tracker import Tracker, require


class TensorBoardLogger(Tracker):
    """Writes event files with torch's ``SummaryWriter`` (needs the tensorboard package)."""

    def __init__(self, log_dir: str | None = None) -> None:
        self.log_dir = log_dir

    def start(self, ctx: RunContext) -> None:
        require("tensorboard", "tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        path = Path(self.log_dir) if self.log_dir else ctx.output_dir / "tensorboard"
        self.writer: Any = SummaryWriter(log_dir=str(path))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, global_step=step)
        self.writer.flush()

    def finish(self, summary: dict[str, float] | None) -> None:
        for key, value in (summary or {}).items():
            self.writer.add_scalar(key, value)
        self.writer.close()
