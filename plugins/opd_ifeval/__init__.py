"""IFEval: instruction-following prompts as a task, and lm-eval's IFEval scorer as an evaluator.

The prompts default to the 541 of google/IFEval, fetched offline by ``opd_assets``; scoring needs
lm-eval's ifeval extra (``pip install 'opd-core[eval]'``), imported only when scoring starts.
"""

from __future__ import annotations

from opd_core import hookimpl
from opd_core.registry import Registry
from opd_ifeval.evaluator import IFEvalEvaluator
from opd_ifeval.task import IFEvalTask

__all__ = ["IFEvalEvaluator", "IFEvalTask", "opd_register_components"]


@hookimpl
def opd_register_components(registry: Registry) -> None:
    registry.add("task", "ifeval", IFEvalTask)
    registry.add("evaluator", "ifeval", IFEvalEvaluator)
