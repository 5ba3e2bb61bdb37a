"""Processes a benchmark starts: ``python -m opd_core`` runs, and workers (the script itself
with ``--worker``) that answer in JSON; plus what a report records about them."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench_common.paths import ROOT

BUSY_LOAD = 1.0
"""A load average above this inflates timings."""


def run_cli(
    overrides: Sequence[str],
    out: Path,
    label: str,
    *,
    threads: int | None = 1,
    env: Mapping[str, str] | None = None,
    check: bool = False,
) -> tuple[int, float]:
    """``python -m opd_core <overrides> progress=false hydra.run.dir=<out>`` with ``threads``
    threads (None: the caller's environment decides) and ``env`` added, its output in
    ``<out>.log``; returns the exit status and the wall seconds (``check``: a failure ends the
    benchmark, naming the log)."""
    command = [sys.executable, "-m", "opd_core", *overrides, "progress=false"]
    command.append(f"hydra.run.dir={out}")
    print(f"[{label}] {' '.join(command[2:])}", flush=True)
    full_env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    if threads is not None:
        full_env["OMP_NUM_THREADS"] = str(threads)
    out.parent.mkdir(parents=True, exist_ok=True)
    log = out.parent / f"{out.name}.log"
    started = time.perf_counter()
    with open(log, "w") as handle:
        done = subprocess.run(
            command, cwd=ROOT, env=full_env, stdout=handle, stderr=subprocess.STDOUT
        )
    seconds = time.perf_counter() - started
    status = "done" if done.returncode == 0 else f"FAILED (exit {done.returncode})"
    print(f"[{label}] {status} in {seconds / 60:.1f} min", flush=True)
    if check and done.returncode != 0:
        raise SystemExit(f"[{label}] the run in {out} failed; see {log}")
    return done.returncode, seconds


def spawn_worker(
    script: str | Path,
    args: Sequence[str],
    threads: int,
    label: str,
    log: Path,
    python: str = sys.executable,
) -> dict[str, Any]:
    """Run ``script --worker <args> --answer <log>.json`` with ``python`` in a fresh process
    (``threads`` threads, output in ``log``); its JSON answer. A failure ends the benchmark."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_VERBOSITY": "error",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins"), str(ROOT / "benchmarks")]),
    }
    answer = log.with_suffix(".json")
    command = [python, str(script), "--worker", *args, "--answer", str(answer)]
    tag = Path(script).stem
    started = time.perf_counter()
    with open(log, "w") as handle:
        done = subprocess.run(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SystemExit(f"[{tag}] {label} failed (exit {done.returncode}); see {log}")
    result = dict(json.loads(answer.read_text()))
    steps = ", ".join(f"{s:.2f}" for s in result.get("step_s", []))
    print(
        f"[{tag}] {label}: {time.perf_counter() - started:.0f} s"
        + (f", step times {steps}" if steps else ""),
        flush=True,
    )
    return result


def command_line(script: str | Path, *flags: str) -> str:
    """The command that reproduces a result, as its report records it:
    ``python benchmarks/<script>.py <flags>``."""
    return shlex.join(["python", f"benchmarks/{Path(script).name}", *flags])


def load_average() -> float:
    """The machine's 1-minute load average."""
    return os.getloadavg()[0]


def warn_if_busy(tag: str) -> float:
    """The load average now, with a warning when it will inflate timings."""
    load = load_average()
    if load > BUSY_LOAD:
        print(f"[{tag}] warning: load average {load:.1f}; timings will be inflated", flush=True)
    return load


def package_versions(*names: str) -> dict[str, str]:
    """The installed version of each package in this environment."""
    from importlib.metadata import version

    return {name: version(name) for name in names}
