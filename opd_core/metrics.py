"""Per-step metrics (``metrics.jsonl``), the run summary, and stage timing."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from opd_core.io import write_json_atomic
from opd_core.reduction import Max

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"


class MetricsLog:
    """Appends one JSON object per training step to ``metrics.jsonl``, flushed line by line."""

    def __init__(self, output_dir: Path) -> None:
        self.path = output_dir / METRICS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: Mapping[str, Any]) -> None:
        """Append ``record`` (must contain ``step``)."""
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(dict(record), sort_keys=True) + "\n")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Read ``metrics.jsonl``, keeping the last record of each step (a resumed run re-logs the
    steps after its last checkpoint), in step order."""
    by_step: dict[int, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                by_step[int(record["step"])] = record
    return [by_step[s] for s in sorted(by_step)]


def write_summary(output_dir: Path, summary: Mapping[str, Any]) -> Path:
    """Write ``summary.json`` atomically and return its path."""
    path = output_dir / SUMMARY_FILE
    write_json_atomic(path, dict(summary))
    return path


class StageTimer:
    """Accumulates wall-clock seconds per named stage of a step."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the ``with`` block and add it to ``name``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def pop(self) -> dict[str, float]:
        """Return ``{"time/<stage>_s": seconds}`` (the slowest process's, when several) and
        reset."""
        out: dict[str, float] = {
            f"time/{name}_s": Max(round(sec, 4)) for name, sec in self.seconds.items()
        }
        self.seconds = {}
        return out
