"""Plugin discovery, registration errors, and every hook called in a real run."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from conftest import TinyModels, tiny_run_overrides
from opd_core import OPDError, Prompt, hookimpl
from opd_core.app import run
from opd_core.config import CONF_DIR, RunConfig
from opd_core.plugin_manager import (
    build_registry,
    check_stage_answers,
    command_line_plugins,
    config_file_plugins,
    make_plugin_manager,
)
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
    assert registry.entry("task", "reverse_digits").provider == "opd_example_task.task"


def test_opd_register_components_fills_every_kind() -> None:
    registry = Registry()
    make_plugin_manager().hook.opd_register_components(registry=registry)
    assert {"hf", "teacher_samples"} <= set(registry.names("sampler"))
    assert {"reverse_kl", "grpo", "mixed"} <= set(registry.names("advantage"))
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


def test_naming_an_installed_plugin_in_plugins_again_is_harmless() -> None:
    pm = make_plugin_manager(["opd_arith.plugin"])  # installed as the entry point arithmetic
    modules = [p for p in pm.get_plugins() if getattr(p, "__name__", "") == "opd_arith.plugin"]
    assert len(modules) == 1 and pm.get_name(modules[0]) == "arithmetic"


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
    # objective=opd: a loss that reads advantages, so that every stage runs
    cfg = compose_config(tiny_run_overrides(tiny_models, out, steps=2) + ["objective=opd"])
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
    make_plugin_manager().hook.opd_register_configs.call_historic(kwargs={"store": store})
    node = store.load("task/reverse_digits.yaml")
    assert node.provider == "opd_example_task"
    assert node.node["name"] == "reverse_digits"
    assert store.load("evaluator/answer_format.yaml").package == "evaluators.answer_format"
    assert store.load("logger/csv.yaml").package == "loggers.csv"


class FixedLoss:
    @hookimpl
    def opd_compute_loss(self, rollouts: Any, policy: Any, advantages: Any) -> None:
        return None


class OverridingLoss:
    @hookimpl(tryfirst=True)
    def opd_compute_loss(self, rollouts: Any, policy: Any, advantages: Any) -> None:
        return None


class LossWrapper:
    @hookimpl(wrapper=True)
    def opd_compute_loss(self, rollouts: Any, policy: Any, advantages: Any) -> Any:
        return (yield)


def test_two_answers_to_one_stage_are_refused_unless_one_says_tryfirst() -> None:
    with pytest.raises(
        OPDError, match=r"^Both plugin FixedLoss and plugin FixedLoss answer opd_co"
    ):
        check_stage_answers(make_plugin_manager([FixedLoss(), FixedLoss()]))
    check_stage_answers(make_plugin_manager([FixedLoss(), OverridingLoss(), LossWrapper()]))
    with pytest.raises(OPDError, match=r"answer opd_compute_loss \(both tryfirst\)"):
        check_stage_answers(make_plugin_manager([OverridingLoss(), OverridingLoss()]))


def test_a_second_sampler_without_tryfirst_stops_the_run_naming_both(
    tiny_models: TinyModels, compose_config: Compose, tmp_path: Path
) -> None:
    class Sampler:
        @hookimpl
        def opd_sample_rollouts(self, prompts: Any, samples_per_prompt: int) -> None:
            return None

    out = tmp_path / "run"
    cfg = compose_config(tiny_run_overrides(tiny_models, out, steps=1))
    with pytest.raises(OPDError, match=r"Both the configured sampler \(HFSampler\) and plugin "):
        run(cfg, out, pm=make_plugin_manager([Sampler()]))


def test_disable_plugins_turns_an_installed_plugin_off_by_name(compose_config: Compose) -> None:
    pm = make_plugin_manager(disabled=["report", "reverse_digits"])
    loaded = {getattr(p, "__name__", "") for p in pm.get_plugins()}
    assert "opd_report" not in loaded and "opd_example_task" not in loaded
    assert "reverse_digits" not in build_registry(pm).names("task")
    with pytest.raises(OPDError, match=r"names 'reprot', which is not an installed plugin; instal"):
        make_plugin_manager(disabled=["reprot"])
    config = RunConfig.from_dict(compose_config(["disable_plugins=[report]"]))
    assert config.disable_plugins == ("report",)


def test_command_line_plugins_are_read_before_composing() -> None:
    args = ["-m", "plugins=[a.b,c]", "--cfg", "job", "disable_plugins=[report]", "seed=1"]
    assert command_line_plugins(args) == (["a.b", "c"], ["report"])
    assert command_line_plugins(["plugins=x", "plugins=[oops"]) == (["x"], [])


def write_echo_plugin(folder: Path, module: str, task: str, words: int) -> None:
    """A plugin module in ``folder`` that registers the task ``task`` and stores its config
    (``words`` tells the stored config from the component's default of 3)."""
    (folder / f"{module}.py").write_text(
        textwrap.dedent(
            f"""
            from omegaconf import OmegaConf
            from opd_core import hookimpl

            class Echo:
                def __init__(self, words: int = 3) -> None:
                    self.words = words

            @hookimpl
            def opd_register_components(registry):
                registry.add("task", "{task}", Echo)

            @hookimpl
            def opd_register_configs(store):
                store.store(group="task", name="{task}", node=OmegaConf.create(
                    {{"name": "{task}", "words": {words}}}))
            """
        )
    )


def run_cli_in(folder: Path, args: list[str]) -> subprocess.CompletedProcess[str]:
    """``python -m opd_core <args>`` from ``folder``, with ``folder`` importable."""
    env = {**os.environ, "PYTHONPATH": f"{folder}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run(
        [sys.executable, "-m", "opd_core", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_plugins_module_contributes_configs_and_components(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_echo_plugin(tmp_path, "my_opd_plugin", "echo_words", words=5)
    result = run_cli_in(
        tmp_path, ["plugins=[my_opd_plugin]", "+task=echo_words", "+teacher=demo", "--cfg", "job"]
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "name: echo_words\n  words: 5" in result.stdout
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "echo_words" in build_registry(make_plugin_manager(["my_opd_plugin"])).names("task")


def test_a_config_files_plugins_store_their_configs_before_composing(tmp_path: Path) -> None:
    """An experiment in --config-dir lists a plugin module and uses the task it stores."""
    write_echo_plugin(tmp_path, "echo_opd_plugin", "echo_task", words=7)
    experiment = tmp_path / "confs" / "experiment" / "echo.yaml"
    experiment.parent.mkdir(parents=True)
    experiment.write_text(
        "# @package _global_\ndefaults:\n  - /task: echo_task\nplugins: [echo_opd_plugin]\n"
    )
    result = run_cli_in(
        tmp_path, ["--config-dir", "confs", "+experiment=echo", "+teacher=demo", "--cfg", "job"]
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "name: echo_task\n  words: 7" in result.stdout
    assert "plugins:\n- echo_opd_plugin" in result.stdout
    sweep = ["-cd", str(tmp_path / "confs"), "+experiment=echo,x"]
    assert config_file_plugins(sweep, CONF_DIR) == ["echo_opd_plugin"]
    assert config_file_plugins(["+experiment=chat_opd", "seed=1"], CONF_DIR) == []


def test_register_configs_reaches_plugins_registered_later() -> None:
    """The registration hook is historic: a plugin registered after the call still stores."""
    stored: list[str] = []

    class Late:
        @hookimpl
        def opd_register_configs(self, store: Any) -> None:
            stored.append("late")

    pm = make_plugin_manager()
    pm.hook.opd_register_configs.call_historic(kwargs={"store": ConfigStore.instance()})
    pm.register(Late())
    assert stored == ["late"]
