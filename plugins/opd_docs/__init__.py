"""Company documents: mid-training data from a folder of documents, and a QA evaluator.

``company_docs`` (task) turns ``.md``/``.txt`` files into training texts mixed with chat data;
``qa_accuracy`` (evaluator) asks the questions of a QA file; ``python -m opd_docs.synthetic``
writes a fictional company's documents and questions for benchmarks.
"""

from __future__ import annotations

from opd_core import hookimpl
from opd_core.api import Registry


@hookimpl
def opd_register_components(registry: Registry) -> None:
    registry.add("task", "company_docs", "opd_docs.task:CompanyDocsTask")
    registry.add("evaluator", "qa_accuracy", "opd_docs.evaluator:QAAccuracy")
