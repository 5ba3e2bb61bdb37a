"""A run inside the benchmark's own process, with plugins of its own (a step clock, a probe),
composed as ``python -m opd_core`` composes it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pluggy
    from omegaconf import DictConfig


def compose_config(overrides: Sequence[str], pm: pluggy.PluginManager) -> DictConfig:
    """The config ``python -m opd_core <overrides>`` would run: every plugin of ``pm`` (and
    those the named config files list) stores its options first, as the command line does."""
    from hydra import compose, initialize_config_dir
    from hydra.core.config_store import ConfigStore

    from opd_core.config import CONF_DIR
    from opd_core.plugin_manager import register_configs

    register_configs(pm, ConfigStore.instance(), list(overrides), CONF_DIR)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def run_in_process(
    overrides: Sequence[str], out: Path, plugins: Sequence[object] = ()
) -> dict[str, Any]:
    """Run ``overrides`` into ``out`` here, ``plugins`` registered besides the installed ones
    (they see every hook: ``opd_run_start(ctx)`` gets the loaded student and components);
    the run's summary."""
    from opd_core.app import run
    from opd_core.plugin_manager import make_plugin_manager

    pm = make_plugin_manager(list(plugins))
    return run(compose_config(overrides, pm), out, pm=pm)
