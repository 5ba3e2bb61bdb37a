"""The ``context`` teacher: any teacher, shown a per-prompt context the student does not see.

Self-distillation with privileged information (the reference solution in the teacher's
context) and on-policy context distillation (a document or a system prompt) both score the
student's completion tokens after a longer prefix. See docs/teachers.md.
"""

from __future__ import annotations

from typing import Any

from opd_core import hookimpl
from opd_core.api import Registry, store_config_dir


@hookimpl
def opd_register_components(registry: Registry) -> None:
    registry.add("teacher", "context", "opd_context.teacher:ContextTeacher")


@hookimpl
def opd_register_configs(store: Any) -> None:
    """This plugin's options (``conf/<group>/<option>.yaml``), stored as a third-party
    package's are."""
    store_config_dir(store, "opd_context")
