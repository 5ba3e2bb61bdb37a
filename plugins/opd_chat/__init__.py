"""Chat: instruction prompts (local JSONL or any ``datasets`` source) for OPD recovery training."""

from __future__ import annotations

from typing import Any

from opd_core import hookimpl
from opd_core.api import Registry, store_config_dir


@hookimpl
def opd_register_components(registry: Registry) -> None:
    registry.add("task", "chat", "opd_chat.task:ChatTask")


@hookimpl
def opd_register_configs(store: Any) -> None:
    """This plugin's options (``conf/<group>/<option>.yaml``), stored as a third-party
    package's are."""
    store_config_dir(store, "opd_chat")
