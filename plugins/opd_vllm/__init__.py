"""The vLLM backend: ``sampler=vllm`` (the student samples with a vLLM engine that follows its
weights) and ``teacher=vllm`` (the teacher scores with vLLM's ``prompt_logprobs``).

Registering the components imports no vLLM; the engines start (and vLLM is imported) when a run
sets them up. docs/vllm.md
"""

from __future__ import annotations

from typing import Any

from opd_core import hookimpl
from opd_core.api import Registry, store_config_dir

__all__ = ["opd_register_components", "opd_register_configs"]


@hookimpl
def opd_register_components(registry: Registry) -> None:
    registry.add("sampler", "vllm", "opd_vllm.sampler:VLLMSampler")
    registry.add("teacher", "vllm", "opd_vllm.teacher:VLLMTeacher")


@hookimpl
def opd_register_configs(store: Any) -> None:
    """This plugin's options (``conf/<group>/<option>.yaml``), stored as a third-party
    package's are."""
    store_config_dir(store, "opd_vllm")
