"""Competition math: prompts from any ``datasets`` source, answers graded from ``\\boxed{}``."""

from __future__ import annotations

from opd_core import hookimpl
from opd_core.api import Registry


@hookimpl
def opd_register_components(registry: Registry) -> None:
    registry.add("task", "math", "opd_math.task:MathTask")
