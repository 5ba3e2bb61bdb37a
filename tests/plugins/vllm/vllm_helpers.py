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
from typing import Any

import pytest
import torch

from conftest import (
    TINY_STUDENT,
    TINY_TEACHER,
    TinyModels,
    build_tiny_models,
    schedule_for_tests,
)
from opd_core import Prompt
from opd_core.config import RunConfig, StudentConfig
from opd_core.context import RunContext
from opd_core.modeling import LoadedModel, ModelSpec
from opd_core.plugin_manager import make_plugin_manager
from opd_hf.loading import load_hf_model

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


def chat_prompts(*questions: str) -> list[Prompt]:
    """One-turn chat prompts asking ``questions`` (ids ``0``, ``1``, ...)."""
    return [
        Prompt(id=str(i), messages=({"role": "user", "content": q},))
        for i, q in enumerate(questions)
    ]


PROMPTS = chat_prompts("1+2", "(3*4)-5", "9")
"""The prompts most vLLM tests sample from."""


@pytest.fixture(scope="module")
def models_fixture(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    """:func:`vllm_models`; a test module binds it as ``models = models_fixture``."""
    return vllm_models(tmp_path_factory)


@pytest.fixture(scope="module")
def student_fixture(models: TinyModels) -> LoadedModel:
    """The trained tiny model as the student: it answers and stops at EOS. A test module binds
    it as ``student = student_fixture``."""
    return load_hf_model(ModelSpec(str(models.teacher)), "student", CPU)


def run_context(
    student: LoadedModel,
    out: Path,
    temperature: float = 1.0,
    max_new_tokens: int = 12,
    hook: Any = None,
    **sections: Any,
) -> RunContext:
    """A run context around ``student`` with the given sampling settings, plugin hook (default:
    the built-in plugins') and further config ``sections`` (``environment``, ``episode``)."""
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
        **sections,
    )
    hook = make_plugin_manager().hook if hook is None else hook
    return RunContext(config, hook, CPU, out, student, seed=0)
