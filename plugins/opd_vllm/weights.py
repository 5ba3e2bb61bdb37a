"""Keeping a vLLM engine's weights equal to the student being trained.

The engine runs in this process; :class:`WeightSync` hands it the student's tensors through
``LLM.collective_rpc("reload_weights", ...)``, which loads them with the model's own
``load_weights`` (checkpoint names, fused projections) and re-runs vLLM's post-load processing
(e.g. the CPU backend's packed GEMM weights), then drops the prefix cache (KV computed with the
old weights). It syncs only when a parameter changed since the last sync, which it tells from
the tensors' in-place version counters (every optimizer step bumps them) without reading data.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

log = logging.getLogger("opd_core.vllm")


def fingerprint(model: Any) -> tuple[tuple[int, int], ...]:
    """Storage and in-place version of every parameter: changes whenever a weight does."""
    return tuple((p.data_ptr(), p._version) for p in model.parameters())


def student_weights(model: Any) -> dict[str, torch.Tensor]:
    """The student's weights under the base model's checkpoint names. A peft (LoRA) model's
    adapters are added to the weights they adapt (``W + delta``), leaving the model untouched."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    deltas: dict[str, torch.Tensor] = {}
    for name, module in base.named_modules():
        if hasattr(module, "get_delta_weight") and hasattr(module, "base_layer"):
            for adapter in module.active_adapters:
                if adapter in getattr(module, "lora_A", {}):
                    delta = module.get_delta_weight(adapter)
                    key = f"{name}.weight"
                    deltas[key] = deltas[key] + delta if key in deltas else delta
    state = {}
    for name, tensor in base.state_dict().items():
        if "lora_" in name:
            continue
        if hasattr(tensor, "full_tensor"):  # a DTensor shard under FSDP
            tensor = tensor.full_tensor()
        key = name.replace(".base_layer.", ".")
        state[key] = tensor.detach() + deltas[key] if key in deltas else tensor.detach()
    return state


class WeightSync:
    """Pushes the student's weights into a vLLM engine when they changed."""

    def __init__(self, llm: Any) -> None:
        self.llm = llm
        self.synced: tuple[tuple[int, int], ...] | None = None
        self.count = 0
        self.total_s = 0.0
        self.last_s = 0.0

    def __call__(self, model: Any) -> bool:
        """Sync ``model`` into the engine if it changed; return whether it did."""
        current = fingerprint(model)
        if current == self.synced:
            return False
        started = time.perf_counter()
        with torch.no_grad():
            state = student_weights(model)
            self.llm.collective_rpc(
                "reload_weights",
                kwargs={"weights_iterator": list(state.items()), "is_checkpoint_format": True},
            )
        numel = sum(t.numel() for t in state.values())
        self.llm.reset_prefix_cache()
        self.synced = fingerprint(model)
        self.last_s = time.perf_counter() - started
        self.total_s += self.last_s
        self.count += 1
        log.info(
            "vLLM weight sync %d: %d tensors, %.1fM parameters in %.3f s (%.2f s in total)",
            self.count,
            len(state),
            numel / 1e6,
            self.last_s,
            self.total_s,
        )
        return True
