"""The command line: Hydra composes ``opd_core/conf/``, the trainer runs it.

``python -m opd_core`` runs the embedded demo; ``python -m opd_core +task=math
+teacher=qwen3_32b`` composes an experiment; ``-m`` sweeps. Bad input ends the run with one
sentence on stderr and exit status 2.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import pluggy
from omegaconf import DictConfig

from opd_core.config import RunConfig
from opd_core.errors import OPDError
from opd_core.plugin_manager import make_plugin_manager
from opd_core.trainer import Trainer

CONF_DIR = Path(__file__).resolve().parent / "conf"
log = logging.getLogger("opd_core")


def run(
    cfg: DictConfig, output_dir: Path, pm: pluggy.PluginManager | None = None
) -> dict[str, Any]:
    """Validate ``cfg`` and run it into ``output_dir``; return the summary.

    Each run gets its own plugin manager (so sweep jobs do not share components) unless one is
    given.
    """
    config = RunConfig.from_dict(cfg)
    pm = pm or make_plugin_manager()
    trainer = Trainer(config, pm, output_dir)
    try:
        trainer.setup()
        summary = trainer.train()
    finally:
        trainer.cleanup()
    log.info("summary written to %s", output_dir / "summary.json")
    return summary


def main() -> None:
    """Entry point of ``python -m opd_core`` and the ``opd-core`` script."""
    import hydra
    from hydra.core.config_store import ConfigStore
    from hydra.core.hydra_config import HydraConfig

    try:
        pm = make_plugin_manager()
        pm.hook.opd_register_configs(store=ConfigStore.instance())
    except OPDError as err:
        _fail(err)

    @hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
    def hydra_entry(cfg: DictConfig) -> None:
        output_dir = Path(HydraConfig.get().runtime.output_dir)
        try:
            run(cfg, output_dir)
        except OPDError as err:
            _fail(err)

    hydra_entry()


def _fail(err: OPDError) -> None:
    print(f"opd_core: error: {err}", file=sys.stderr)
    sys.exit(2)
