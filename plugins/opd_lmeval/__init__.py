"""The ``lm_eval`` evaluator: lm-evaluation-harness tasks scored on the live student or teacher.

lm-eval is an optional dependency (``pip install 'opd-core[eval]'``), imported only when an
``lm_eval`` evaluator is set up.
"""

from __future__ import annotations

from opd_core import hookimpl
from opd_core.api import Registry

__all__ = ["opd_register_components"]


@hookimpl
def opd_register_components(registry: Registry) -> None:
    registry.add("evaluator", "lm_eval", "opd_lmeval.evaluator:LMEvalEvaluator")
