"""IFEval: instruction-following prompts as a task, and lm-eval's IFEval scorer as an evaluator.

The prompts default to the 541 of google/IFEval, fetched offline by ``opd_assets``; scoring needs
lm-eval's ifeval extra (``pip install 'opd-core[eval]'``), imported only when scoring starts.
"""

from __future__ import annotations

from opd_core import hookimpl
from opd_core.api import Registry

DEPENDS_ON = ("opd_assets",)
"""Plugins this one imports: the IF-eval prompts and NLTK punkt data are offline assets."""

__all__ = ["opd_register_components"]


@hookimpl
def opd_register_components(registry: Registry) -> None:
    registry.add("task", "ifeval", "opd_ifeval.task:IFEvalTask")
    registry.add("evaluator", "ifeval", "opd_ifeval.evaluator:IFEvalEvaluator")
