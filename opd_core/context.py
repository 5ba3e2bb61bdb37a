"""What a component sees of the run it is part of."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from opd_core.config import RunConfig

if TYPE_CHECKING:
    import torch

    from opd_core.modeling import LoadedModel


@dataclass
class RunContext:
    """Handed to every component's ``setup`` and to the lifecycle hooks."""

    config: RunConfig
    hook: Any
    """The plugin manager's hook relay: ``ctx.hook.opd_grade_completions(...)``."""
    device: torch.device
    """Where the student and the stage tensors live (``device=auto``: the first GPU, else CPU)."""
    output_dir: Path
    """The run folder (Hydra's output folder): ``metrics.jsonl``, ``summary.json`` and
    checkpoints go here, and so do a plugin's own files (written on rank 0)."""
    student: LoadedModel
    """The policy being trained (its weights change every step)."""
    seed: int
    """The run's ``seed``."""
    rank: int = 0
    """This process's index among the data-parallel training processes (0 when alone)."""
    world_size: int = 1
    """Number of training processes; each samples and scores its share of a step's prompts.
    Rank 0 alone writes outputs: a plugin that writes files checks ``rank == 0``."""
    precision: str = "fp32"
    """``train.precision`` as resolved on ``device``: ``fp32`` or ``bf16``; a component that
    runs the models enters ``opd_core.api.autocast(ctx.precision, device)`` around forwards."""


@runtime_checkable
class Component(Protocol):
    """Optional methods of a configured component (a task, teacher, sampler, ...).

    The loop registers each built component as a plugin, so it answers the stage hooks it
    implements. ``setup`` runs once the student is loaded; ``close`` when the run ends.
    Components with resumable state also define ``state_dict``/``load_state_dict``.
    """

    def setup(self, ctx: RunContext) -> None:
        """Optional: called once the student is loaded, before training starts."""
