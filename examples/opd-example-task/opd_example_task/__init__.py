"""An example third-party plugin package for opd-core: one of every component kind.

- a task (``+task=reverse_digits``, :mod:`opd_example_task.task`),
- an environment (``+environment=retry``, :mod:`opd_example_task.environment`),
- an advantage function (``objective=opd advantage=clipped_reverse_kl``,
  :mod:`opd_example_task.advantage`),
- an evaluator (``evaluator=[task_accuracy,answer_format]``, :mod:`opd_example_task.evaluator`),
- a logger (``logger=[csv]``, :mod:`opd_example_task.csv_logger`),
- a ``wrapper=True`` hook (``plugins=[opd_example_task.stage_times]``,
  :mod:`opd_example_task.stage_times`).

This module is the entry point (``[project.entry-points.opd_core]``), imported at every start-up,
so it imports nothing heavy: components are registered by ``"module:attr"`` path and imported only
when a config chooses them.
"""

from __future__ import annotations

from typing import Any

from opd_core import hookimpl
from opd_core.api import Registry, store_config_dir


@hookimpl
def opd_register_components(registry: Registry) -> None:
    """The names configs use; the registry kind is singular (``evaluator``, ``logger``)."""
    registry.add("task", "reverse_digits", "opd_example_task.task:ReverseDigits")
    registry.add("environment", "retry", "opd_example_task.environment:Retry")
    registry.add("advantage", "clipped_reverse_kl", "opd_example_task.advantage:ClippedReverseKL")
    registry.add("evaluator", "answer_format", "opd_example_task.evaluator:AnswerFormat")
    registry.add("logger", "csv", "opd_example_task.csv_logger:CsvLogger")


@hookimpl
def opd_register_configs(store: Any) -> None:
    """``conf/<group>/<option>.yaml``, each file's ``# @package`` line kept."""
    store_config_dir(store, "opd_example_task")
