"""Trackers as components: ``logger=[tensorboard,wandb,mlflow,trackio]`` sends every step's
metrics and the run's summary to each, alongside ``metrics.jsonl`` (which every run writes). The
libraries come with ``pip install 'opd-core[trackers]'`` and are imported only when a logger is
chosen (docs/loggers.md)."""

from __future__ import annotations

from typing import Any

from opd_core import hookimpl
from opd_core.api import Registry, store_config_dir


@hookimpl
def opd_register_components(registry: Registry) -> None:
    registry.add("logger", "tensorboard", "opd_loggers.tensorboard:TensorBoardLogger")
    registry.add("logger", "wandb", "opd_loggers.wandb:WandbLogger")
    registry.add("logger", "mlflow", "opd_loggers.mlflow:MLflowLogger")
    registry.add("logger", "trackio", "opd_loggers.trackio:TrackioLogger")


@hookimpl
def opd_register_configs(store: Any) -> None:
    """This plugin's options (``conf/<group>/<option>.yaml``), stored as a third-party
    package's are."""
    store_config_dir(store, "opd_loggers")
