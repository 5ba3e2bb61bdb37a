"""A third-party package's config folder composes like opd-core's own (store_config_dir)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from opd_core.config import RunConfig, package_line, store_config_dir
from opd_core.errors import OPDError
from opd_core.plugin_manager import make_plugin_manager

Compose = Callable[[list[str]], DictConfig]


def write_package(root: Path, name: str) -> None:
    """A real, importable package with a conf/ folder: a list-group option, a nested group."""
    files = {
        "__init__.py": "",
        "conf/evaluator/answer_lengths.yaml": (
            "# @package evaluators.answer_lengths\n"
            "# python -m opd_core evaluator=[task_accuracy,answer_lengths]\n"
            "name: answer_lengths\nmax_examples: 8\n"
        ),
        "conf/extras/deep/option.yaml": "# python -m opd_core +extras/deep=option\nvalue: 7\n",
        "conf/README.txt": "not a group\n",
    }
    for relative, text in files.items():
        path = root / name / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_package_lines_and_nested_groups_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compose_config: Compose
) -> None:
    write_package(tmp_path, "thirdparty_confs")
    monkeypatch.syspath_prepend(str(tmp_path))
    stored = store_config_dir(ConfigStore.instance(), "thirdparty_confs")
    assert stored == ["evaluator/answer_lengths", "extras/deep/option"]

    cfg = compose_config(["evaluator=[task_accuracy,answer_lengths]", "+extras/deep=option"])
    assert cfg.evaluators.answer_lengths == {"name": "answer_lengths", "max_examples": 8}
    assert cfg.evaluators.task_accuracy.name == "task_accuracy"
    assert cfg.extras.deep.value == 7
    assert "answer_lengths" not in cfg  # not at the top level, where it would be refused
    config = RunConfig.from_dict(compose_config(["evaluator=[task_accuracy,answer_lengths]"]))
    assert set(config.evaluators) == {"task_accuracy", "answer_lengths"}


def test_package_line_reads_only_the_header() -> None:
    assert package_line("# @package evaluators.x\nname: x\n") == "evaluators.x"
    assert package_line("# a comment\n#@package _global_\n") == "_global_"
    assert package_line("name: x\n# @package too.late\n") is None
    assert package_line("# no package here\nname: x\n") is None


def test_a_package_without_the_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(OPDError, match="Package 'json' has no config folder 'conf/'"):
        store_config_dir(ConfigStore.instance(), "json")


def test_a_new_task_runs_with_the_demos_teacher_and_student(compose_config: Compose) -> None:
    make_plugin_manager().hook.opd_register_configs.call_historic(
        kwargs={"store": ConfigStore.instance()}
    )
    config = RunConfig.from_dict(compose_config(["+task=reverse_digits", "+teacher=demo"]))
    assert config.task["name"] == "reverse_digits"
    assert config.teacher["model"]["path"] == "demo://arithmetic/teacher"
    assert config.student.model.path == "demo://arithmetic/student"
