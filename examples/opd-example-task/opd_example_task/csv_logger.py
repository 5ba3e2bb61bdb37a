"""A logger: every step's metrics as rows ``step,metric,value`` of ``<run>/metrics.csv``."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from opd_core import hookimpl
from opd_core.api import RunContext


class CsvLogger:
    """A logger component (kind ``logger``, node ``loggers.csv``): it observes ``opd_step_end``
    and ``opd_run_end`` and writes into :attr:`RunContext.output_dir`, on rank 0 only."""

    def __init__(self, file_name: str = "metrics.csv") -> None:
        if not file_name or Path(file_name).name != file_name:
            raise ValueError(f"file_name must be a plain file name, got {file_name!r}")
        self.file_name = file_name
        self.file: IO[str] | None = None

    def setup(self, ctx: RunContext) -> None:
        if ctx.rank == 0:
            self.path = ctx.output_dir / self.file_name
            self.file = self.path.open("a", newline="", encoding="utf-8")
            self.writer = csv.writer(self.file)
            if self.path.stat().st_size == 0:
                self.writer.writerow(["step", "metric", "value"])

    @hookimpl
    def opd_step_end(self, ctx: RunContext, step: int, metrics: Mapping[str, float]) -> None:
        if self.file is None:
            return
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and math.isfinite(value) and key != "step":
                self.writer.writerow([step, key, value])
        self.file.flush()

    @hookimpl
    def opd_run_end(self, ctx: RunContext, summary: Mapping[str, Any]) -> None:
        self.close()

    def close(self) -> None:
        """Called when the run ends, failed runs too."""
        if self.file is not None:
            self.file.close()
            self.file = None
