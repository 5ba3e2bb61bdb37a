"""The plugin API module: every name it exports resolves, the torch-heavy ones on first use."""

from __future__ import annotations

import subprocess
import sys

import pytest

import opd_core.api


@pytest.mark.parametrize("name", opd_core.api.__all__)
def test_every_api_name_resolves(name: str) -> None:
    assert getattr(opd_core.api, name) is not None


def test_an_unknown_api_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Trainer'"):
        _ = opd_core.api.Trainer  # type: ignore[attr-defined]


def test_importing_the_api_and_every_plugin_imports_no_torch() -> None:
    code = (
        "import sys; from opd_core.plugin_manager import make_plugin_manager; "
        "import opd_core.api; make_plugin_manager(); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
