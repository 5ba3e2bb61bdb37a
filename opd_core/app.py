"""The command line: Hydra composes ``conf/``, the trainer runs it.

``python -m opd_core`` runs the embedded demo; ``python -m opd_core +task=math
+teacher=qwen3_32b`` composes an experiment; ``-m`` sweeps. Whatever ends a run early is one line
on stderr: bad input (Hydra's errors included) is ``opd_core: error: ...`` with exit status 2, a
signal is ``opd_core: interrupted at step N; ...`` with 130 (SIGINT) or 143 (SIGTERM). A sweep
point that fails is named, the other points still run, and the sweep exits 2. ``OPD_DEBUG=1``
shows tracebacks.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import pluggy
from omegaconf import DictConfig

from opd_core.config import CONF_DIR, RunConfig
from opd_core.errors import OPDError
from opd_core.failures import PREFIX, debug_requested, describe
from opd_core.interrupts import Interrupts, RunInterrupted
from opd_core.plugin_manager import command_line_plugins, make_plugin_manager, register_configs

log = logging.getLogger("opd_core")


class SweepPointFailed(OPDError):
    """A sweep point's error, already reported in the process that ran it (the sweeper re-raises
    the first one once every point of the batch has run; it ends the sweep with exit 2)."""


def run(
    cfg: DictConfig,
    output_dir: Path,
    pm: pluggy.PluginManager | None = None,
    interrupts: Interrupts | None = None,
) -> dict[str, Any]:
    """Validate ``cfg`` and run it into ``output_dir``; return the summary.

    Each run gets its own plugin manager (so sweep jobs do not share components) unless one is
    given.
    """
    from opd_core.trainer import Trainer  # torch and the rest: not for --help or --cfg job

    config = RunConfig.from_dict(cfg)
    pm = pm or make_plugin_manager(disabled=config.disable_plugins)
    trainer = Trainer(config, pm, output_dir, interrupts)
    try:
        trainer.setup()
        summary = trainer.train()
    finally:
        trainer.cleanup()
    log.info("summary written to %s", output_dir / "summary.json")
    return summary


def exit_now(status: int) -> None:
    """End an interrupted run's process with ``status`` once its logs are flushed, skipping
    interpreter teardown: everything is saved by then, and a thread that sampled ahead
    (``train.overlap``) can still be unwinding its native thread state, which C++ static
    destructors running beside it abort on ("terminate called without an active exception",
    status -6 instead of 130)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def main() -> None:
    """Entry point of ``python -m opd_core`` and the ``opd-core`` script."""
    try:
        _main()
    except KeyboardInterrupt:  # Ctrl-C before or after a run (a run handles its own)
        if debug_requested():
            raise
        print("opd_core: interrupted", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)


def _main() -> None:
    import hydra
    from hydra.core.config_store import ConfigStore
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    report_hydra_errors()
    try:
        plugins, disabled = command_line_plugins(sys.argv[1:])
        pm = make_plugin_manager(plugins, disabled=disabled)
        register_configs(pm, ConfigStore.instance(), sys.argv[1:], CONF_DIR)
    except Exception as err:
        _fail(err)

    @hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
    def hydra_entry(cfg: DictConfig) -> None:
        hydra_cfg = HydraConfig.get()
        output_dir = Path(hydra_cfg.runtime.output_dir)
        overrides = list(hydra_cfg.overrides.task)
        sweeping = hydra_cfg.mode == RunMode.MULTIRUN
        try:
            with Interrupts() as interrupts:
                run(cfg, output_dir, interrupts=interrupts)
        except RunInterrupted as stop:
            print(interrupt_line(stop, output_dir, overrides), file=sys.stderr, flush=True)
            exit_now(stop.exit_status)
        except Exception as err:
            if debug_requested():
                raise
            if not sweeping:
                _fail(err)
            point = f"sweep point {hydra_cfg.job.num} ({' '.join(swept(overrides, sys.argv))})"
            message = f"{point} failed: {describe(err)}"
            print(f"{PREFIX}{message}", file=sys.stderr, flush=True)
            raise SweepPointFailed(message) from None  # the sweeper re-raises it after the batch

    hydra_entry()


def swept(overrides: Sequence[str], argv: Sequence[str]) -> list[str]:
    """The overrides of a sweep point that the sweep varies (``key=a,b``, ``range(...)``, ...)."""
    keys = set()
    for arg in argv[1:]:
        key, sep, value = arg.partition("=")
        if sep and ("," in value or "(" in value):
            keys.add(key.lstrip("+~"))
    chosen = [o for o in overrides if o.partition("=")[0].lstrip("+~") in keys]
    return chosen or list(overrides)


def interrupt_line(stop: RunInterrupted, output_dir: Path, overrides: Sequence[str]) -> str:
    """The one line an interrupted run ends with: where its work is and how to continue."""
    kept = [o for o in overrides if not o.startswith(("hydra.run.dir=", "resume="))]
    command = shlex.join(
        ["python", "-m", "opd_core", *kept, f"hydra.run.dir={output_dir}", "resume=true"]
    )
    step = stop.step if stop.step is not None else 0
    if stop.checkpoint is None:
        return f"opd_core: interrupted at step {step}; nothing to keep yet; rerun the command"
    return (
        f"opd_core: interrupted at step {step}; checkpoint written to {stop.checkpoint}; "
        f"continue with {command}"
    )


def report_hydra_errors() -> None:
    """Make Hydra's own errors (composition, overrides, output folder) the project's sentence.

    Hydra prints them itself, over several lines, and exits 1; its ``run_and_report`` is replaced
    by one that prints one ``opd_core: error:`` line and exits 2 (``HYDRA_FULL_ERROR=1`` or
    ``OPD_DEBUG=1`` still raise with the traceback).
    """
    from hydra._internal import utils as hydra_utils

    if hasattr(hydra_utils, "run_and_report"):
        hydra_utils.run_and_report = _run_and_report


def _run_and_report(func: Callable[[], Any]) -> Any:
    try:
        return func()
    except Exception as err:
        if debug_requested():
            raise
        _fail(err)


def _fail(err: BaseException) -> NoReturn:
    if debug_requested():
        raise err
    if not isinstance(err, SweepPointFailed):  # those were printed where the point ran
        print(f"{PREFIX}{describe(err)}", file=sys.stderr, flush=True)
    sys.exit(2)
