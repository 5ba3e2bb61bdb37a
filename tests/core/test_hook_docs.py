"""Every hook is documented in docs/hooks.md, has a docstring, and is exercised by a test."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from opd_core import hookspecs

ROOT = Path(__file__).resolve().parents[2]
HOOKS = sorted(name for name in dir(hookspecs) if name.startswith("opd_"))


def test_there_are_hooks_for_every_stage() -> None:
    assert {
        "opd_task_prompts",
        "opd_grade_completions",
        "opd_score_rollouts",
        "opd_compute_advantages",
        "opd_evaluate",
        "opd_register_configs",
    } <= set(HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_docstring_and_types(hook: str) -> None:
    function = getattr(hookspecs, hook)
    assert inspect.getdoc(function), hook
    signature = inspect.signature(function)
    assert signature.return_annotation is not inspect.Signature.empty
    assert all(p.annotation is not inspect.Parameter.empty for p in signature.parameters.values())


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented(hook: str) -> None:
    docs = (ROOT / "docs" / "hooks.md").read_text()
    assert f"### `{hook}`" in docs, f"add a section for {hook} to docs/hooks.md"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_exercised_by_a_test(hook: str) -> None:
    tests = [p for p in (ROOT / "tests").rglob("test_*.py") if p.name != Path(__file__).name]
    assert any(hook in p.read_text() for p in tests), f"no test mentions {hook}"


def test_reference_section_is_generated_from_the_hookspecs() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "hook_reference.py"), "--check"], check=False
    )
    assert result.returncode == 0, "docs/hooks.md is stale: run python tools/hook_reference.py"


def test_every_public_data_type_has_its_fields_documented() -> None:
    import opd_core

    text = (ROOT / "docs" / "hooks.md").read_text()
    public = [n for n in opd_core.__all__ if n[0].isupper() and n != "OPDError"]
    for name in [*public, "RunContext", "ModelSpec", "LoadedModel"]:
        assert "### `opd_core." in text and f".{name}`\n" in text, f"{name} is not in docs/hooks.md"
    for field in ("completion_mask_BT", "topk_logprobs_BTK", "output_dir", "world_size"):
        assert f"| `{field}` |" in text
