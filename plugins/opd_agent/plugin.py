"""The tool-use demo as plugins: the ``calculator`` task and environment, and the
``demo://agent/...`` models (built on first use and cached)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opd_agent.environment import CalculatorEnvironment
from opd_agent.problems import ToolTaskSpec, to_prompt
from opd_arith.plugin import ProblemSetTask
from opd_core import OPDError, hookimpl
from opd_core.api import cache_root, store_config_dir

if TYPE_CHECKING:
    import torch

    from opd_core.api import LoadedModel, ModelSpec, Registry

AGENT_SCHEME = "demo://agent/"
MODELS = ("teacher", "student", "student_notool")
"""``demo://agent/<name>``: the tool-using teacher, the mid-climb tool-using student, and the
student's shape trained to compute in its head (no tool)."""


def cache_dir() -> Path:
    """Where built tool-use demo models live: ``<cache_root()>/demo_agent``."""
    return cache_root() / "demo_agent"


class Calculator(CalculatorEnvironment):
    """``environment=calculator``: the calculator environment, whose ``replay_from: demo`` is the
    cached greedy episodes of the demo's tool-use teacher on the task's training questions."""

    def _replay_path(self) -> Path:
        if self.replay_from != "demo":
            return super()._replay_path()
        from opd_agent.build import AgentSpec, build_agent_models

        return build_agent_models(AgentSpec(), cache_dir()).trajectories


class CalculatorTask(ProblemSetTask):
    """Expressions like ``(37*58)+64`` over two-digit numbers, solved with a calculator."""

    def __init__(self, train_size: int = 4000, eval_size: int = 500, seed: int = 0) -> None:
        """The difficulty is the demo models' (``ToolTaskSpec``); ``seed`` picks the problems."""
        super().__init__(ToolTaskSpec(), to_prompt, train_size, eval_size, seed)


@hookimpl
def opd_load_model(spec: ModelSpec, role: str, device: torch.device) -> LoadedModel | None:
    """Build (first use) or reuse a tool-use demo model and load it."""
    if not spec.path.startswith(AGENT_SCHEME):
        return None
    which = spec.path[len(AGENT_SCHEME) :]
    if which not in MODELS:
        raise OPDError(
            f"Unknown tool-use demo model '{spec.path}'; use one of "
            f"{', '.join(AGENT_SCHEME + m for m in MODELS)}."
        )
    from opd_agent.build import AgentSpec, build_agent_models
    from opd_hf.loading import load_hf_model

    paths = build_agent_models(AgentSpec(), cache_dir())
    folder = {"teacher": paths.teacher_dir, "student": paths.student_dir}.get(
        which, paths.notool_dir
    )
    return load_hf_model(replace(spec, path=str(folder)), role, device)


@hookimpl
def opd_register_components(registry: Registry) -> None:
    registry.add("task", "calculator", CalculatorTask)
    registry.add("environment", "calculator", Calculator)


@hookimpl
def opd_register_configs(store: Any) -> None:
    """This plugin's options (``conf/<group>/<option>.yaml``), stored as a third-party
    package's are."""
    store_config_dir(store, "opd_agent")
