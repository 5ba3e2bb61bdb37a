"""Components registered by ``"module:attr"`` path: imported only when a config chooses them."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from opd_core.config import CONF_DIR, RunConfig
from opd_core.errors import OPDError
from opd_core.registry import COMPONENT_KINDS, KINDS, Registry

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("transformers", "datasets", "peft", "accelerate", "lm_eval", "vllm", "math_verify")
"""Dependencies a plugin may need at run time but start-up must not import."""


def test_a_path_is_imported_when_the_component_is_built(tmp_path: Path) -> None:
    (tmp_path / "opd_lazy_probe.py").write_text(
        "class Thing:\n    def __init__(self, size: int = 1) -> None:\n        self.size = size\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        registry = Registry()
        registry.add("task", "thing", "opd_lazy_probe:Thing")
        assert "opd_lazy_probe" not in sys.modules
        assert registry.entry("task", "thing").provider == "opd_lazy_probe"
        assert registry.build("task", {"name": "thing", "size": 3}).size == 3
        with pytest.raises(OPDError, match="has no option colour"):
            registry.bind("task", {"name": "thing", "colour": "red"})
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("opd_lazy_probe", None)


def test_a_bad_path_is_one_sentence_naming_it() -> None:
    registry = Registry()
    registry.add("task", "missing", "opd_no_such_module:Task")
    with pytest.raises(
        OPDError, match=r"task 'missing' is registered as 'opd_no_such_module:Task'"
    ):
        registry.build("task", {"name": "missing"})
    with pytest.raises(OPDError, match="a factory path is 'module:attr'"):
        registry.add("task", "bare", "opd_no_such_module")


def test_the_same_path_twice_is_one_component_and_another_is_a_clash() -> None:
    registry = Registry()
    registry.add("task", "t", "a.b:C")
    registry.add("task", "t", "a.b:C")
    with pytest.raises(OPDError, match="Two plugins register task 't'"):
        registry.add("task", "t", "a.b:D")


@pytest.mark.parametrize("args", [["--cfg", "job"], ["--help"]])
def test_start_up_imports_no_heavy_dependency(args: list[str], tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "opd_core", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    imported = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "opd_core" in imported
    assert imported & set(HEAVY) == set()


def test_one_list_of_component_kinds_names_groups_and_config_nodes() -> None:
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    groups = {p.name for p in (CONF_DIR.parent / "plugins").glob("*/conf/*") if p.is_dir()}
    for kind in COMPONENT_KINDS:
        assert kind.name in groups, f"no plugin ships a config group for kind {kind.name}"
        assert kind.node in fields, f"RunConfig has no {kind.node}"
        assert kind.many == (kind.node != kind.name)
    assert tuple(kind.name for kind in COMPONENT_KINDS) == KINDS
    with pytest.raises(OPDError, match=r"unknown component kind 'evaluators'\. Kinds are: task, "):
        Registry().add("evaluators", "x", "m:x")
