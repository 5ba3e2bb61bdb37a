"""What the benchmark scripts share: running ``python -m opd_core`` as a real process into a run
folder, and reading how much a run spent to reach a score."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from opd_report.curves import Curve, first_reaching

ROOT = Path(__file__).resolve().parents[1]


def run_cli(overrides: list[str], out: Path, label: str) -> tuple[int, float]:
    """``python -m opd_core <overrides> hydra.run.dir=<out>`` with one thread, its output in
    ``<out>.log``; returns the exit status and the wall seconds."""
    command = [sys.executable, "-m", "opd_core", *overrides, "progress=false"]
    command.append(f"hydra.run.dir={out}")
    print(f"[{label}] {' '.join(command[2:])}", flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(out.parent / f"{out.name}.log", "w") as log:
        done = subprocess.run(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - started
    status = "done" if done.returncode == 0 else f"FAILED (exit {done.returncode})"
    print(f"[{label}] {status} in {seconds / 60:.1f} min", flush=True)
    return done.returncode, seconds


def median_or_none(values: list[float | None], runs: int) -> float | None:
    """The median over the runs that reached the target, None unless a majority did."""
    reached = [v for v in values if v is not None]
    return statistics.median(reached) if len(reached) * 2 > runs else None


def cost_to(curves: list[Curve], target: float, measure: str) -> float | None:
    """Median steps (``measure="steps"``) or FLOPs to ``target`` over the seeds that reached it
    (None unless most did)."""
    points = [first_reaching(c, target) for c in curves]
    values = [None if p is None else float(p.step if measure == "steps" else p.total_flops)
              for p in points]  # fmt: skip
    return median_or_none(values, len(curves))
