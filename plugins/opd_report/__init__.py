"""What a run shows on the console and leaves in its folder besides the metrics: the run folder
when it starts; at the end a table of the scores (student before and after, teacher, deltas),
wall time, FLOPs and the checkpoint, and ``learning_curve.png`` of the eval scores (titled with
the task, objective and student).

Only rank 0 reports. Disable it like any plugin: ``pip uninstall`` is not needed, the hooks
only read what the run already wrote.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from opd_core import hookimpl

if TYPE_CHECKING:
    from opd_core.api import RunContext

log = logging.getLogger("opd_core.report")


@hookimpl
def opd_run_start(ctx: RunContext) -> None:
    if ctx.rank == 0:
        log.info("run folder: %s", ctx.output_dir)


@hookimpl
def opd_run_end(ctx: RunContext, summary: Mapping[str, Any]) -> None:
    if ctx.rank != 0:
        return
    from opd_report.plot import plot_learning_curve
    from opd_report.run_label import RunLabel
    from opd_report.table import summary_table

    log.info("run summary (%s):\n%s", ctx.output_dir / "summary.json", summary_table(summary))
    path = plot_learning_curve(ctx.output_dir, RunLabel.of_run(ctx))
    if path is not None:
        log.info("learning curve: %s", path)
