"""trackio, local only: a project in SQLite under ``<run folder>/trackio``; never a Space, a
self-hosted server or the Hub."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from opd_core import OPDError
from opd_core.api import RunContext
from opd_loggers.tracker import Tracker, require

log = logging.getLogger("opd_core.loggers")

REMOTE_VARIABLES = ("TRACKIO_SPACE_ID", "TRACKIO_SERVER_URL", "TRACKIO_DATASET_ID")
"""What would send trackio's data off the machine (a Space, a server, a Hub dataset)."""


class TrackioLogger(Tracker):
    """One trackio run per training run: metrics by step, the config, the summary at the end."""

    def __init__(
        self,
        project: str = "opd-core",
        run_name: str | None = None,
        trackio_dir: str | None = None,
    ) -> None:
        self.project = project
        self.run_name = run_name
        self.trackio_dir = trackio_dir

    def start(self, ctx: RunContext) -> None:
        remote = [name for name in REMOTE_VARIABLES if os.environ.get(name)]
        if remote:
            raise OPDError(
                f"logger 'trackio' writes locally only, but {remote[0]} is set; unset it, "
                "or drop trackio from logger=[...]."
            )
        folder = Path(self.trackio_dir) if self.trackio_dir else ctx.output_dir / "trackio"
        folder = folder.resolve()
        self.trackio = import_trackio(folder)
        config = asdict(ctx.config) if is_dataclass(ctx.config) else {}
        with hub_offline(), quiet():  # trackio prints a dashboard hint for its default folder
            self.run: Any = self.trackio.init(
                project=self.project,
                name=self.run_name or ctx.output_dir.name,
                config=config,
                embed=False,
                auto_log_gpu=False,
                auto_log_cpu=False,
            )
        self.step = 0
        log.info(
            "trackio: %s (dashboard: TRACKIO_DIR=%s trackio show --project %s)",
            folder,
            folder,
            self.project,
        )

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log({k: v for k, v in metrics.items() if k != "step"}, step=step)
        self.step = step

    def finish(self, summary: dict[str, float] | None) -> None:
        """The summary is logged at the last step (trackio has no separate summary or run
        status: a failed run's history just ends)."""
        if summary:
            self.run.log(summary, step=self.step)
        with quiet():
            self.trackio.finish()  # the run and trackio's current run, which it is


def import_trackio(folder: Path) -> Any:
    """trackio, storing under ``folder``.

    trackio reads its folder from ``TRACKIO_DIR`` once, when it is first imported; a run that
    wants another folder in the same process (a sweep's second point) is refused with the fix.
    """
    if sys.modules.get("trackio") is None:
        saved = os.environ.get("TRACKIO_DIR")
        os.environ["TRACKIO_DIR"] = str(folder)
        try:
            require("trackio", "trackio")
        finally:
            if saved is None:
                del os.environ["TRACKIO_DIR"]
            else:
                os.environ["TRACKIO_DIR"] = saved
    trackio = require("trackio.utils", "trackio")
    current = Path(trackio.TRACKIO_DIR)
    if current != folder:
        raise OPDError(
            f"logger 'trackio' keeps one folder per process ({current}, fixed when trackio was "
            f"first imported) but this run's is {folder}; set loggers.trackio.trackio_dir to "
            "one folder for every run of the process, or run each in its own process "
            "(hydra/launcher=joblib for sweeps)."
        )
    return sys.modules["trackio"]


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """No Hugging Face Hub request while trackio starts a run.

    A local run still asks the Hub who the user is when a token is stored (for the run's
    ``_Username``). ``huggingface_hub`` reads ``HF_HUB_OFFLINE`` when it is imported, long
    before a logger starts, so the flag it checks on each request is set for the duration.
    """
    from huggingface_hub import constants

    saved_flag, saved_env = constants.HF_HUB_OFFLINE, os.environ.get("HF_HUB_OFFLINE")
    constants.HF_HUB_OFFLINE = True
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved_flag
        if saved_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved_env


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """trackio's console lines go to the debug log instead of the run's console."""
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            yield
    finally:
        for line in out.getvalue().splitlines():
            log.debug("trackio: %s", line)
