"""The plugin API: everything a plugin imports from opd-core, in one module.

A plugin (built-in or third-party) imports from :mod:`opd_core` (``hookimpl``, the data types,
``OPDError``) and from here, never from another core module: the loop, the plugin manager and
the overlap machinery are the kernel's own and may change without notice
(``tests/core/test_plugin_api.py`` enforces it). The hooks themselves are documented in
:mod:`opd_core.hookspecs`.

What is here, by kind:

- the run a component lives in: :class:`RunContext`, :class:`Registry`, :class:`ModelSpec`,
  :class:`LoadedModel`, :func:`store_config_dir`;
- tensor helpers for models and rollouts (``*_BT`` shapes as in :mod:`opd_core.types`):
  :func:`next_token_logits`, :func:`gather_logprobs`, :func:`topk_logprobs`, padding and prompt
  encoding, the rollout layout of a sampling call (:class:`Generated`, :func:`rollout_batch`),
  micro-batches grouped by length (:func:`plan_micro_batches`, :func:`padding_share`), mixed
  precision (:func:`autocast`, :func:`probe_bf16`);
- multi-turn episodes (:mod:`opd_core.episodes`): :class:`EpisodeRunner`, the loop a sampler
  drives with its ``generate_turn`` (:class:`TurnRequest` in, :class:`SampledTurn` out),
  :class:`EnvironmentCalls` and :func:`run_text_episodes` for evaluators;
- accounting: :class:`ModelShape` (FLOPs), the metric reducers :class:`Sum`, :class:`Max`,
  :class:`Min`, :func:`read_metrics`, RNG capture for components that sample;
- the library (:mod:`opd_core.lib`): cache folders and locks, JSONL and chat data readers,
  tabular rows, evaluator roles.

Names that need torch are imported on first use, so that importing a plugin module (which every
run and ``opd-core --help`` does) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from opd_core.config import ModelSpec, store_config_dir
from opd_core.context import RunContext
from opd_core.errors import OPDError
from opd_core.hookspecs import hookimpl
from opd_core.lib.cache import cache_root
from opd_core.lib.chat_data import ChatExample, ChatFields, parse_chat_record, read_chat_jsonl
from opd_core.lib.eval_roles import EVAL_ROLES, parse_eval_roles
from opd_core.lib.jsonl import read_jsonl
from opd_core.lib.locks import cache_lock
from opd_core.lib.rows import load_rows, require_columns
from opd_core.metrics import read_metrics
from opd_core.reduction import Max, Min, Sum
from opd_core.registry import Registry
from opd_core.types import (
    Advantages,
    ChatMessage,
    EnvReply,
    EpisodeStart,
    EpisodeSummary,
    EvalResult,
    GenerationParams,
    Generator,
    LossOutput,
    PolicyOutput,
    Prompt,
    RolloutBatch,
    RolloutPrefetcher,
    ScoreRequest,
    TeacherScores,
)

if TYPE_CHECKING:
    import torch

    from opd_core.checkpoint import capture_rng, restore_rng
    from opd_core.devices import on_side_stream, pick_device
    from opd_core.episodes import (
        EnvironmentCalls,
        EpisodeRunner,
        GenerateTurn,
        SampledTurn,
        TextEpisode,
        TurnRequest,
        episode_success,
        run_text_episodes,
    )
    from opd_core.flops import ModelShape
    from opd_core.micro_batches import MicroBatch, padding_share, plan_micro_batches
    from opd_core.modeling import (
        TEMPLATE_PROBE,
        LoadedModel,
        check_same_rendering,
        check_same_vocabulary,
        encode_prompts,
        entropy,
        forward_accepts,
        gather_logprobs,
        load_model,
        next_token_logits,
        pad_left,
        pad_right,
        position_ids_from_mask,
        render_prompt,
        resolve_dtype,
        topk_logprobs,
    )
    from opd_core.precision import autocast, probe_bf16
    from opd_core.rollouts import (
        Generated,
        completion_mask,
        completion_pad_id,
        decode_completions,
        eos_ids,
        rollout_batch,
        sampled_rollout_batch,
    )

_LAZY: dict[str, tuple[str, ...]] = {
    "opd_core.checkpoint": ("capture_rng", "restore_rng"),
    "opd_core.devices": ("on_side_stream", "pick_device"),
    "opd_core.episodes": (
        "EnvironmentCalls",
        "EpisodeRunner",
        "GenerateTurn",
        "SampledTurn",
        "TextEpisode",
        "TurnRequest",
        "run_text_episodes",
        "episode_success",
    ),
    "opd_core.flops": ("ModelShape",),
    "opd_core.micro_batches": ("MicroBatch", "padding_share", "plan_micro_batches"),
    "opd_core.precision": ("autocast", "probe_bf16"),
    "opd_core.modeling": (
        "TEMPLATE_PROBE",
        "LoadedModel",
        "check_same_rendering",
        "check_same_vocabulary",
        "encode_prompts",
        "entropy",
        "forward_accepts",
        "gather_logprobs",
        "load_model",
        "next_token_logits",
        "pad_left",
        "pad_right",
        "position_ids_from_mask",
        "render_prompt",
        "resolve_dtype",
        "topk_logprobs",
    ),
    "opd_core.rollouts": (
        "Generated",
        "completion_mask",
        "completion_pad_id",
        "decode_completions",
        "eos_ids",
        "rollout_batch",
        "sampled_rollout_batch",
    ),
}
"""Names imported on first use, by the module that defines them (they import torch)."""
_LAZY_HOME = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _LAZY_HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'opd_core.api' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def load_model_outside_a_run(spec: ModelSpec, role: str, device: torch.device) -> LoadedModel:
    """Load ``spec`` the way a run would (every installed plugin's ``opd_load_model``), for a
    program that serves or inspects a model without running the loop (``opd-teacher-server``)."""
    from opd_core.modeling import load_model
    from opd_core.plugin_manager import make_plugin_manager

    return load_model(make_plugin_manager().hook, spec, role, device)


__all__ = [
    "EVAL_ROLES",
    "TEMPLATE_PROBE",
    "Advantages",
    "ChatExample",
    "ChatFields",
    "ChatMessage",
    "EnvReply",
    "EnvironmentCalls",
    "EpisodeRunner",
    "EpisodeStart",
    "EpisodeSummary",
    "EvalResult",
    "GenerateTurn",
    "Generated",
    "GenerationParams",
    "Generator",
    "LoadedModel",
    "LossOutput",
    "Max",
    "MicroBatch",
    "Min",
    "ModelShape",
    "ModelSpec",
    "OPDError",
    "PolicyOutput",
    "Prompt",
    "Registry",
    "RolloutBatch",
    "RolloutPrefetcher",
    "RunContext",
    "SampledTurn",
    "ScoreRequest",
    "Sum",
    "TeacherScores",
    "TextEpisode",
    "TurnRequest",
    "autocast",
    "cache_lock",
    "cache_root",
    "capture_rng",
    "check_same_rendering",
    "check_same_vocabulary",
    "completion_mask",
    "completion_pad_id",
    "decode_completions",
    "encode_prompts",
    "entropy",
    "eos_ids",
    "episode_success",
    "forward_accepts",
    "gather_logprobs",
    "hookimpl",
    "load_model",
    "load_model_outside_a_run",
    "load_rows",
    "next_token_logits",
    "on_side_stream",
    "pad_left",
    "pad_right",
    "padding_share",
    "parse_chat_record",
    "parse_eval_roles",
    "pick_device",
    "plan_micro_batches",
    "position_ids_from_mask",
    "probe_bf16",
    "read_chat_jsonl",
    "read_jsonl",
    "read_metrics",
    "render_prompt",
    "require_columns",
    "resolve_dtype",
    "restore_rng",
    "rollout_batch",
    "run_text_episodes",
    "sampled_rollout_batch",
    "store_config_dir",
    "topk_logprobs",
]
