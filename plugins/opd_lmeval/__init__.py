"""The ``lm_eval`` evaluator: lm-evaluation-harness tasks scored on the live student or teacher.

lm-eval is an optional dependency (``pip install 'opd-core[eval]'``), imported only when an
``lm_eval`` evaluator is set up.
"""

from __future__ import annotations

from typing import Any

from opd_core import hookimpl
from opd_core.api import Registry, store_config_dir

__all__ = ["opd_register_components", "opd_register_configs"]


@hookimpl
def opd_register_components(registry: Registry) -> None:
    registry.add("evaluator", "lm_eval", "opd_lmeval.evaluator:LMEvalEvaluator")


@hookimpl
def opd_register_configs(store: Any) -> None:
    """This plugin's options (``conf/<group>/<option>.yaml``), stored as a third-party
    package's are."""
    store_config_dir(store, "opd_lmeval")
