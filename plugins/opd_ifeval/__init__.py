"""IFEval: instruction-following prompts as a task, lm-eval's IFEval scorer as an evaluator, and
a two-turn chat environment whose scripted user adds an IFEval instruction (``ifeval_followup``).

The prompts default to the 541 of google/IFEval, fetched offline by ``opd_assets``; scoring needs
lm-eval's ifeval extra (``pip install 'opd-core[eval]'``), imported only when scoring starts.
"""

from __future__ import annotations

from typing import Any

from opd_core import hookimpl
from opd_core.api import Registry, store_config_dir

DEPENDS_ON = ("opd_assets",)
"""Plugins this one imports: the IF-eval prompts and NLTK punkt data are offline assets."""

__all__ = ["opd_register_components", "opd_register_configs"]


@hookimpl
def opd_register_components(registry: Registry) -> None:
    registry.add("task", "ifeval", "opd_ifeval.task:IFEvalTask")
    registry.add("evaluator", "ifeval", "opd_ifeval.evaluator:IFEvalEvaluator")
    registry.add("environment", "ifeval_followup", "opd_ifeval.environment:IFEvalFollowup")


@hookimpl
def opd_register_configs(store: Any) -> None:
    """This plugin's options (``conf/<group>/<option>.yaml``), stored as a third-party
    package's are."""
    store_config_dir(store, "opd_ifeval")
