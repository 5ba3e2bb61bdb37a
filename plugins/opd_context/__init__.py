"""The ``context`` teacher: any teacher, shown a per-prompt context the student does not see.

Self-distillation with privileged information (the reference solution in the teacher's
context) and on-policy context distillation (a document or a system prompt) both score the
student's completion tokens after a longer prefix. See docs/teachers.md.
"""

from __future__ import annotations

from opd_core import hookimpl
from opd_core.api import Registry


@hookimpl
def opd_register_components(registry: Registry) -> None:
    registry.add("teacher", "context", "opd_context.teacher:ContextTeacher")
