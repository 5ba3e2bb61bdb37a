"""Plugin discovery, registration errors, and every hook called in a real run."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from omegaconf import DictConfig

from conftest import TinyModels, tiny_run_overrides
from opd_core import OPDError, Prompt, hookimpl
from opd_core.app import run
from opd_core.plugin_manager import build_registry, make_plugin_manager
from opd_core.registry import Registry

Compose = Callable[[list[str]], DictConfig]
BUILT_INS = {
    "opd_hf",
    "opd_objectives",
    "opd_prompts",
    "opd_evaluators",
    "opd_arith.plugin",
    "opd_math",
}


def test_built_ins_and_the_example_package_come_from_the_entry_point_group() -> None:
    modules = {ep.value for ep in entry_points(group="opd_core")}
    assert modules >= BUILT_INS | {"opd_example_task"}
    pm = make_plugin_manager()
    loaded = {getattr(p, "__name__", "") for p in pm.get_plugins()}
    assert loaded >= BUILT_INS | {"opd_example_task"}
    registry = build_registry(pm)
    assert "reverse_digits" in registry.names("task")
    assert registry.entry("task", "reverse_digits").provider == "opd_example_task"


def test_opd_register_components_fills_every_kind() -> None:
    registry = Registry()
    make_plugin_manager().hook.opd_register_components(registry=registry)
    assert {"hf", "teacher_samples"} <= set(registry.names("sampler"))
    assert {"reverse_kl", "grpo", "mixed", "uniform"} <= set(registry.names("advantage"))
    assert {"importance_sampling", "forward_kl", "jsd", "cross_entropy"} <= set(
        registry.names("loss")
    )
    assert "task_accuracy" in registry.names("evaluator")
    assert "shuffle" in registry.names("prompts")
    assert {"arithmetic", "math", "reverse_digits"} <= set(registry.names("task"))


def test_a_misspelled_hook_fails_loudly() -> None:
    class Typo:
        @hookimpl
        def opd_score_rollout(self, rollouts: object) -> None:  # missing "s"
            return None

    with pytest.raises(OPDError, match="unknown hook"):
        make_plugin_manager([Typo()])


def test_two_plugins_cannot_claim_one_name() -> None:
    registry = Registry()

    class A: ...

    class B: ...

    registry.add("task", "same", A)
    with pytest.raises(OPDError, match="Two plugins register task 'same'"):
        registry.add("task", "same", B)
    with pytest.raises(OPDError, match="unknown component kind 'tasks'"):
        registry.add("tasks", "x", A)


class Recorder:
    """Implements the lifecycle hooks and overrides prompt selection (tryfirst)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.step_metrics: list[Mapping[str, float]] = []

    @hookimpl
    def opd_run_start(self, ctx: Any) -> None:
        self.calls.append("opd_run_start")

    @hookimpl(tryfirst=True)
    def opd_select_prompts(self, step: int, pool: Sequence[Prompt], count: int) -> list[Prompt]:
        self.calls.append("opd_select_prompts")
        return [pool[0]] * count  # single-prompt mode, overriding the configured source

    @hookimpl
    def opd_step_end(self, ctx: Any, step: int, metrics: Mapping[str, float]) -> None:
        self.calls.append("opd_step_end")
        self.step_metrics.append(metrics)

    @hookimpl
    def opd_run_end(self, ctx: Any, summary: Mapping[str, Any]) -> None:
        self.calls.append("opd_run_end")


def test_every_stage_and_lifecycle_hook_is_called_in_order(
    tiny_models: TinyModels, compose_config: Compose, tmp_path: Path
) -> None:
    recorder = Recorder()
    stages: list[str] = []

    class StageSpy:
        """A hook wrapper around every stage: how cross-cutting concerns plug in."""

        def _wrap(name: str) -> Callable[..., Any]:  # type: ignore[misc]
            @hookimpl(wrapper=True, specname=name)
            def spy(self: Any, **kwargs: Any) -> Any:
                stages.append(name)
                return (yield)

            spy.__name__ = f"spy_{name}"
            return spy

        for _name in (
            "opd_sample_rollouts",
            "opd_grade_completions",
            "opd_score_rollouts",
            "opd_compute_advantages",
            "opd_compute_loss",
            "opd_task_prompts",
            "opd_load_model",
            "opd_eval_generator",
            "opd_evaluate",
        ):
            locals()[f"spy_{_name}"] = _wrap(_name)

    out = tmp_path / "run"
    cfg = compose_config(tiny_run_overrides(tiny_models, out, steps=2))
    run(cfg, out, pm=make_plugin_manager([recorder, StageSpy()]))
    assert recorder.calls[0] == "opd_run_start" and recorder.calls[-1] == "opd_run_end"
    assert recorder.calls.count("opd_step_end") == 2
    assert recorder.calls.count("opd_select_prompts") == 2
    step = [
        "opd_sample_rollouts",
        "opd_score_rollouts",
        "opd_compute_advantages",
        "opd_compute_loss",
    ]
    training = [s for s in stages if s in step]
    # two steps; the loss is called once per micro-batch (16 sequences, micro-batches of 8)
    one_step = [*step[:3], "opd_compute_loss", "opd_compute_loss"]
    assert training == one_step * 2
    after_sampling = stages[stages.index("opd_sample_rollouts") :]
    assert after_sampling.index("opd_grade_completions") < after_sampling.index(
        "opd_score_rollouts"
    )
    assert stages.count("opd_load_model") == 2  # student and teacher
    assert {"opd_task_prompts", "opd_eval_generator", "opd_evaluate"} <= set(stages)
    assert recorder.step_metrics[0]["step"] == 1


def test_opd_register_configs_stores_a_packages_yaml_options() -> None:
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    make_plugin_manager().hook.opd_register_configs(store=store)
    node = store.load("task/reverse_digits.yaml")
    assert node.provider == "opd_example_task"
    assert node.node["name"] == "reverse_digits"
