"""The fallback model loader: any path no other plugin claims is loaded with transformers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from opd_core import hookimpl

if TYPE_CHECKING:
    import torch

    from opd_core.modeling import LoadedModel, ModelSpec


@hookimpl(trylast=True)
def opd_load_model(spec: ModelSpec, role: str, device: torch.device) -> LoadedModel:
    """Load ``spec.path`` (a local folder, a Hub id or a ``.gguf`` file) with transformers."""
    from opd_core.hf_loading import load_hf_model  # torch and transformers, when a model loads

    return load_hf_model(spec, role, device)
