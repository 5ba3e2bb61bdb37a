"""Chat: instruction prompts (local JSONL or any ``datasets`` source) for OPD recovery training."""

from __future__ import annotations

from opd_core import hookimpl
from opd_core.api import Registry


@hookimpl
def opd_register_components(registry: Registry) -> None:
    registry.add("task", "chat", "opd_chat.task:ChatTask")
