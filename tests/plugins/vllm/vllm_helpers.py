"""Shared set-up of the vLLM tests (a module, not a conftest: a second conftest.py outside a
package would replace the top-level one that every test imports from).

These tests run in their own environment, .venv-vllm (`make setup-vllm`): vLLM's CPU build pins
torch and transformers versions the main environment does not use. `make test` runs them there
with OPD_REQUIRE_VLLM=1, which turns a missing vLLM into an error instead of a skip.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from pathlib import Path

import pytest
import torch

from conftest import (
    TINY_STUDENT,
    TINY_TEACHER,
    TinyModels,
    build_tiny_models,
    schedule_for_tests,
)
from opd_core.config import RunConfig, StudentConfig
from opd_core.context import RunContext
from opd_core.modeling import LoadedModel
from opd_core.plugin_manager import make_plugin_manager

CPU = torch.device("cpu")
# vLLM's CPU attention needs head_dim >= 32; otherwise the shapes of tests/conftest.py's models.
VLLM_TEACHER = dataclasses.replace(TINY_TEACHER, num_attention_heads=2, head_dim=32)
VLLM_STUDENT = dataclasses.replace(TINY_STUDENT, num_attention_heads=1, head_dim=32)
ENGINE = {"max_model_len": 128, "kv_cache_gib": 0.25, "enforce_eager": True, "max_num_seqs": 64}
"""Engine options for the tiny models on CPU (small KV cache, no graph compilation)."""

_models: dict[str, TinyModels] = {}


def require_vllm() -> None:
    """Skip the calling test module where vLLM is absent (the main .venv), unless
    OPD_REQUIRE_VLLM=1 says these tests must run."""
    if importlib.util.find_spec("vllm") is not None:
        return
    if os.environ.get("OPD_REQUIRE_VLLM") == "1":
        raise RuntimeError(
            "OPD_REQUIRE_VLLM=1 but vLLM is not installed in this environment; run these tests "
            "with .venv-vllm/bin/python (make setup-vllm)."
        )
    pytest.skip(
        "vLLM is not installed here; `make test` runs these tests in .venv-vllm",
        allow_module_level=True,
    )


def vllm_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    """A tiny trained teacher and a random student (one tokenizer) that vLLM's CPU build runs,
    built once per test session."""
    if "models" not in _models:
        root = tmp_path_factory.mktemp("vllm_models")
        _models["models"] = build_tiny_models(root, VLLM_TEACHER, VLLM_STUDENT)
    return _models["models"]


def run_context(
    student: LoadedModel, out: Path, temperature: float = 1.0, max_new_tokens: int = 12
) -> RunContext:
    """A run context around ``student`` with the given sampling settings."""
    config = RunConfig(
        student=StudentConfig(model=student.spec),
        task={},
        teacher={},
        sampler={},
        prompts={},
        advantage={},
        loss={},
        evaluators={},
        **schedule_for_tests(max_new_tokens, temperature=temperature),
    )
    return RunContext(config, make_plugin_manager().hook, CPU, out, student, seed=0)
