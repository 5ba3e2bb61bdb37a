"""A ``wrapper=True`` hook: how long each call of three stages took, in ``<run>/stage_times.json``.

Not a component: a plugin module that a run enables with ``plugins=[opd_example_task.stage_times]``
(cross-cutting concerns such as timing wrap a stage without touching the component answering it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Generator, Mapping
from typing import Any

from opd_core import hookimpl
from opd_core.api import RunContext

seconds: dict[str, list[float]] = {}
"""Seconds of each call, by hook name, in the current run."""


def _timed(name: str) -> Generator[None, Any, Any]:
    started = time.perf_counter()
    try:
        return (yield)
    finally:
        seconds.setdefault(name, []).append(time.perf_counter() - started)


@hookimpl
def opd_run_start(ctx: RunContext) -> None:
    seconds.clear()


@hookimpl(wrapper=True)
def opd_sample_rollouts(prompts: Any, samples_per_prompt: int) -> Generator[None, Any, Any]:
    return (yield from _timed("opd_sample_rollouts"))


@hookimpl(wrapper=True)
def opd_score_rollouts(rollouts: Any, top_k: int) -> Generator[None, Any, Any]:
    return (yield from _timed("opd_score_rollouts"))


@hookimpl(wrapper=True)
def opd_compute_advantages(rollouts: Any, scores: Any, rewards_B: Any) -> Generator[None, Any, Any]:
    return (yield from _timed("opd_compute_advantages"))


@hookimpl
def opd_run_end(ctx: RunContext, summary: Mapping[str, Any]) -> None:
    if ctx.rank == 0:
        (ctx.output_dir / "stage_times.json").write_text(json.dumps(seconds, indent=2) + "\n")
