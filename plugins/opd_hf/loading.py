"""Load causal LMs and tokenizers with ``transformers``: local folders or Hub ids."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from opd_core import OPDError, hookimpl
from opd_core.modeling import LoadedModel, ModelSpec, resolve_dtype


@hookimpl(trylast=True)
def opd_load_model(spec: ModelSpec, role: str, device: torch.device) -> LoadedModel:
    """Load ``spec.path`` (a local folder or a Hub id) with ``AutoModelForCausalLM``."""
    return load_hf_model(spec, role, device)


def load_hf_model(spec: ModelSpec, role: str, device: torch.device) -> LoadedModel:
    """Load model and tokenizer; a missing model is one sentence saying how to point at it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = resolve_dtype(spec.dtype, device)
    local = Path(os.path.expanduser(spec.path))
    if _looks_local(spec.path) and not local.is_dir():
        raise OPDError(f"The {role} model folder {spec.path} does not exist; {_how_to_point(role)}")
    source = str(local) if local.is_dir() else spec.path
    if not local.is_dir() and not _in_hub_cache(spec) and not hub_reachable():
        raise OPDError(_missing_message(spec, role, OSError("the Hub is unreachable")))
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            source,
            revision=spec.revision,
            trust_remote_code=spec.trust_remote_code,
            padding_side="left",
        )
        model: Any = AutoModelForCausalLM.from_pretrained(
            source, revision=spec.revision, trust_remote_code=spec.trust_remote_code, dtype=dtype
        )
    except (OSError, ValueError) as err:
        raise OPDError(_missing_message(spec, role, err)) from err
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model.to(device)
    return LoadedModel(model=model, tokenizer=tokenizer, spec=spec)


def _in_hub_cache(spec: ModelSpec) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(spec.path, "config.json", revision=spec.revision)
    except Exception:  # an id the cache cannot even parse is not cached
        return False
    return isinstance(found, str)


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the Hugging Face Hub answers a TCP connection (fails fast when offline)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname or "", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _looks_local(path: str) -> bool:
    """A filesystem path rather than a Hub id (``org/name`` has exactly one slash)."""
    return path.startswith(("/", "./", "../", "~")) or path.count("/") > 1


def _how_to_point(role: str) -> str:
    key = "student.model.path" if role == "student" else "teacher.model.path"
    return f"point at local weights with {key}=/path/to/model (a save_pretrained folder)."


def _missing_message(spec: ModelSpec, role: str, err: Exception) -> str:
    first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if Path(spec.path).is_dir():
        return (
            f"The {role} model folder {spec.path} could not be loaded ({first_line}); check "
            "that it holds a save_pretrained checkpoint with its tokenizer."
        )
    return (
        f"The {role} model '{spec.path}' is not a local folder and could not be fetched from "
        f"the Hugging Face Hub ({first_line}); download it where the Hub is reachable "
        f"(hf download {spec.path}) or {_how_to_point(role)}"
    )
