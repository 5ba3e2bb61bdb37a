"""What ran, in a line: the task, the objective (the loss) and the student, for the learning
curve's title. Read from the run's context, or afterwards from ``<run>/.hydra/config.yaml``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opd_core.api import RunContext

LONGEST_STUDENT = 48
"""A longer student path keeps its last two parts (``.../step_000600/model``)."""


@dataclass(frozen=True)
class RunLabel:
    """What ran: the task's name, the loss's name and the student's model path."""

    task: str
    objective: str
    student: str

    @classmethod
    def of_run(cls, ctx: RunContext) -> RunLabel:
        """The running config's task, loss and student."""
        config = ctx.config
        return cls(
            str(config.task.get("name", "?")),
            str(config.loss.get("name", "?")),
            config.student.model.path,
        )

    @classmethod
    def of_config(cls, config: Mapping[str, Any]) -> RunLabel:
        """A composed config as Hydra saved it (the demo's task is under ``demo`` when no
        ``+task`` was given)."""

        def name(node: Any) -> str:
            return str(node.get("name", "?")) if isinstance(node, Mapping) else "?"

        task = config.get("task") or (config.get("demo") or {}).get("task")
        student = ((config.get("student") or {}).get("model") or {}).get("path", "?")
        return cls(name(task), name(config.get("loss")), str(student))

    @classmethod
    def read(cls, run_dir: Path) -> RunLabel | None:
        """The label of the run in ``run_dir`` from ``.hydra/config.yaml``; None without it."""
        import yaml

        path = run_dir / ".hydra" / "config.yaml"
        if not path.is_file():
            return None
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
        return cls.of_config(config) if isinstance(config, Mapping) else None

    def title(self) -> str:
        """``task <task> · loss <objective> · student <student>``."""
        student = self.student
        if len(student) > LONGEST_STUDENT:
            student = ".../" + "/".join(student.rstrip("/").split("/")[-2:])
        return f"task {self.task} · loss {self.objective} · student {student}"
