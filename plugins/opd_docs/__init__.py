"""Company documents: mid-training data from a folder of documents, and a QA evaluator.

``company_docs`` (task) turns ``.md``/``.txt`` files into training texts mixed with chat data;
``qa_accuracy`` (evaluator) asks the questions of a QA file; ``python -m opd_docs.synthetic``
writes a fictional company's documents and questions for benchmarks.
"""

from __future__ import annotations

from typing import Any

from opd_core import hookimpl
from opd_core.api import Registry, store_config_dir


@hookimpl
def opd_register_components(registry: Registry) -> None:
    registry.add("task", "company_docs", "opd_docs.task:CompanyDocsTask")
    registry.add("evaluator", "qa_accuracy", "opd_docs.evaluator:QAAccuracy")


@hookimpl
def opd_register_configs(store: Any) -> None:
    """This plugin's options (``conf/<group>/<option>.yaml``), stored as a third-party
    package's are."""
    store_config_dir(store, "opd_docs")
