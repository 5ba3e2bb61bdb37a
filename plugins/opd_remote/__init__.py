"""A remote teacher: scores come from ``python -m opd_remote.serve`` or a real ``vllm serve``."""

from __future__ import annotations

from opd_core import hookimpl
from opd_core.api import Registry


@hookimpl
def opd_register_components(registry: Registry) -> None:
    registry.add("teacher", "remote", "opd_remote.teacher:RemoteTeacher")
