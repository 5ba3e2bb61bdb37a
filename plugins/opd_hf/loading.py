"""Load causal LMs and tokenizers with ``transformers``: local folders, Hub ids or GGUF files."""

from __future__ import annotations

import os
import socket
import struct
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from opd_core.api import LoadedModel, ModelSpec, OPDError, resolve_dtype

GGUF_SUFFIX = ".gguf"
GGUF_MAGIC = b"GGUF"
GGUF_PARSE_ERRORS = (ValueError, KeyError, IndexError, EOFError, OSError, struct.error)
"""What reading a damaged or unsupported GGUF file raises (besides what transformers adds)."""


def load_hf_model(spec: ModelSpec, role: str, device: torch.device) -> LoadedModel:
    """Load model and tokenizer; a missing model is one sentence saying how to point at it."""
    if is_gguf_path(spec.path):
        return load_gguf_model(spec, role, device)
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
    except Exception as err:  # missing, damaged or empty files; safetensors has its own error
        raise OPDError(_missing_message(spec, role, err)) from err
    return _finish(model, tokenizer, spec, device)


def is_gguf_path(path: str) -> bool:
    """Whether a model path names a GGUF file (by its ``.gguf`` suffix)."""
    return path.lower().endswith(GGUF_SUFFIX)


def load_gguf_model(spec: ModelSpec, role: str, device: torch.device) -> LoadedModel:
    """Load a local ``.gguf`` file: quantized weights are dequantized to ``spec.dtype``.

    The result saves and reloads like any ``save_pretrained`` checkpoint (see
    :func:`drop_gguf_quantizer`).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(os.path.expanduser(spec.path))
    _check_gguf_file(path, role)
    dtype = resolve_dtype(spec.dtype, device)
    folder, name = str(path.parent), path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, padding_side="left")
        model: Any = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=name, dtype=dtype, **_dequantize_gguf()
        )
    except ImportError as err:
        raise OPDError(
            f"Loading the {role} model {path} (GGUF) needs the gguf package ({err}); fix: "
            "pip install 'opd-core[gguf]'."
        ) from err
    except (*GGUF_PARSE_ERRORS, RuntimeError, NotImplementedError) as err:
        raise OPDError(_gguf_failure(path, role, err)) from err
    drop_gguf_quantizer(model)
    return _finish(model, tokenizer, spec, device)


def drop_gguf_quantizer(model: Any) -> None:
    """Make a GGUF-loaded model an ordinary one, so ``save_pretrained`` writes a normal checkpoint.

    The weights are already dequantized; what remains of the GGUF origin is a quantizer handle and
    the config's ``quantization_config``, which make some transformers versions refuse to save.
    """
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def _dequantize_gguf() -> dict[str, Any]:
    """``from_pretrained`` options that unpack GGUF blocks into dense trainable weights.

    Recent transformers can keep the blocks packed (not trainable); older ones always unpack.
    """
    try:
        from transformers import GgufConfig
    except ImportError:
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


def _check_gguf_file(path: Path, role: str) -> None:
    """A missing file or one without the GGUF magic bytes is one sentence naming the fix."""
    key = "student.model.path" if role == "student" else "teacher.model.path"
    if not path.is_file():
        raise OPDError(
            f"The {role} model file {path} does not exist; fix: point {key} at a .gguf file "
            "(python -m opd_assets smollm2 fetches SmolLM2-135M-Instruct) or a model folder."
        )
    with path.open("rb") as handle:
        magic = handle.read(len(GGUF_MAGIC))
    if magic != GGUF_MAGIC:
        raise OPDError(
            f"The {role} model file {path} is not a GGUF file (it does not start with the GGUF "
            f"magic bytes); fix: point {key} at a real .gguf file or a save_pretrained folder."
        )


def _gguf_failure(path: Path, role: str, err: Exception) -> str:
    """Why transformers could not load a GGUF file: an unsupported architecture, or damage."""
    first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    architecture = _gguf_architecture(path)
    if architecture is None:
        return (
            f"The {role} model file {path} is a damaged GGUF file ({first_line}); fix: download "
            "it again (python -m opd_assets smollm2 fetches SmolLM2-135M-Instruct)."
        )
    return (
        f"The {role} model file {path} holds a GGUF '{architecture}' model that transformers "
        f"cannot load ({first_line}); fix: use a GGUF of an architecture transformers supports "
        "(llama, qwen2, qwen3, gemma3, ...) or a save_pretrained folder."
    )


def _gguf_architecture(path: Path) -> str | None:
    """The ``general.architecture`` a GGUF file declares; ``None`` if the file is unreadable."""
    try:
        from gguf import GGUFReader

        field = GGUFReader(path).get_field("general.architecture")
        return str(field.contents()) if field is not None else None
    except Exception:  # a file gguf cannot parse is damaged, whatever the parser raised
        return None


def _finish(model: Any, tokenizer: Any, spec: ModelSpec, device: torch.device) -> LoadedModel:
    """Left padding with a pad token (EOS when the tokenizer has none), the model on ``device``."""
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
