"""Which lm-eval tasks to run: built-in names, a folder of task YAMLs, tasks given inline.

:class:`TaskSelection` checks a config without importing lm-eval; :func:`load_task_manager`
builds lm-eval's ``TaskManager`` and checks every name and inline task against it.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opd_core import OPDError

INLINE_NAME = "inline"
"""The task name an inline task without a ``task`` key gets."""


@dataclass(frozen=True)
class TaskSelection:
    """The tasks an ``lm_eval`` evaluator runs."""

    names: tuple[str, ...]
    """Task, group or tag names: lm-eval's built-in ones or those of ``include_path``."""
    include_path: Path | None
    """A folder of task YAML files; with no ``names``, every task in it runs."""
    inline: tuple[dict[str, Any], ...]
    """Task configs as lm-eval's YAML would hold them, each with a ``task`` name."""

    @staticmethod
    def from_config(
        tasks: Sequence[str] | str | None,
        include_path: str | None,
        inline: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None,
    ) -> TaskSelection:
        """Check the evaluator's ``tasks``, ``include_path`` and ``inline`` keys."""
        names = (tasks,) if isinstance(tasks, str) else tuple(tasks or ())
        if not all(isinstance(n, str) and n for n in names):
            raise OPDError(
                f"evaluators.lm_eval.tasks must be a list of task names, got {tasks!r}; "
                "fix: e.g. evaluators.lm_eval.tasks=[arc_easy,hellaswag]."
            )
        folder = Path(include_path).expanduser() if include_path else None
        if folder is not None and not folder.is_dir():
            raise OPDError(
                f"evaluators.lm_eval.include_path={include_path} is not a folder; fix: point it "
                "at a folder of lm-eval task YAML files."
            )
        selection = TaskSelection(names, folder, inline_tasks(inline))
        if not (selection.names or selection.include_path or selection.inline):
            raise OPDError(
                "The lm_eval evaluator has no task to run; fix: set evaluators.lm_eval.tasks, "
                "evaluators.lm_eval.include_path or evaluators.lm_eval.inline."
            )
        return selection

    def specs(self, manager: Any) -> list[str | dict[str, Any]]:
        """What to hand ``simple_evaluate``: the task names, then the inline configs."""
        names = list(self.names) or list(manager.all_subtasks)
        return [*names, *self.inline]


def inline_tasks(
    inline: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None,
) -> tuple[dict[str, Any], ...]:
    """Inline task configs, each checked for the keys lm-eval cannot run without."""
    if inline is None:
        return ()
    configs = [inline] if isinstance(inline, Mapping) else list(inline)
    named = []
    for index, config in enumerate(configs):
        where = "evaluators.lm_eval.inline" + (f"[{index}]" if len(configs) > 1 else "")
        if not isinstance(config, Mapping):
            raise OPDError(
                f"{where} must be a task config (a mapping such as lm-eval's task YAML holds), "
                f"got {config!r}; fix: see docs/evaluation.md for an example."
            )
        config = dict(config)
        config.setdefault("task", INLINE_NAME if len(configs) == 1 else f"{INLINE_NAME}_{index}")
        lacking = [
            key
            for key, present in (
                ("dataset_path", "dataset_path" in config or "custom_dataset" in config),
                ("doc_to_text", "doc_to_text" in config),
                ("doc_to_target", "doc_to_target" in config),
            )
            if not present
        ]
        if lacking:
            raise OPDError(
                f"{where} (task '{config['task']}') has no {', '.join(lacking)}; fix: give the "
                "keys an lm-eval task YAML would (dataset_path with dataset_kwargs.data_files, "
                "output_type, doc_to_text, doc_to_target, doc_to_choice for multiple choice)."
            )
        named.append(config)
    tasks = [c["task"] for c in named]
    if len(set(tasks)) != len(tasks):
        raise OPDError(
            f"evaluators.lm_eval.inline names a task twice ({', '.join(tasks)}); fix: give each "
            "inline task its own 'task' name."
        )
    return tuple(named)


def load_task_manager(selection: TaskSelection) -> Any:
    """lm-eval's ``TaskManager`` for ``selection``, with every task checked to load.

    The built-in index (thousands of YAML files, ~10 s to scan) is read only when a name is not
    in ``include_path``. Raises :class:`OPDError` for an unknown name (with close matches), an
    empty folder, and a task whose config or data lm-eval cannot load.
    """
    from lm_eval.tasks import TaskManager

    folder = str(selection.include_path) if selection.include_path else None
    manager = TaskManager(include_path=folder, include_defaults=False)
    if selection.include_path and not manager.all_tasks:
        raise OPDError(
            f"evaluators.lm_eval.include_path={selection.include_path} holds no lm-eval task "
            "(no YAML file with a 'task' key); fix: point it at a folder of task YAML files."
        )
    if any(name not in manager.all_tasks for name in selection.names):
        manager = TaskManager(include_path=folder, include_defaults=True)
    for name in selection.names:
        if name not in manager.all_tasks:
            raise OPDError(unknown_task_message(name, manager.all_tasks))
    for spec in selection.specs(manager):
        check_loads(manager, spec)
    return manager


def unknown_task_message(name: str, known: Sequence[str]) -> str:
    """One sentence naming an unknown task and the closest known names."""
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
    hint = f" Close names: {', '.join(close)}." if close else ""
    return (
        f"lm-eval has no task, group or tag named '{name}'.{hint} Fix: correct "
        "evaluators.lm_eval.tasks (python -m lm_eval ls tasks lists them), or add the folder "
        "holding its YAML with evaluators.lm_eval.include_path."
    )


def check_loads(manager: Any, spec: str | dict[str, Any]) -> None:
    """Build one task (config and data) as ``simple_evaluate`` will; name it if it fails."""
    name = spec if isinstance(spec, str) else spec["task"]
    origin = "an inline task" if isinstance(spec, dict) else "a task"
    try:
        manager.load([spec])
    except Exception as err:  # lm-eval raises many kinds; the user needs the task and the cause
        first_line = str(err).splitlines()[0] if str(err) else ""
        raise OPDError(
            f"lm-eval cannot load {origin} '{name}' ({type(err).__name__}: {first_line}); "
            "fix: check the task's config keys and that its data files exist (or that its "
            "dataset can be downloaded)."
        ) from err
