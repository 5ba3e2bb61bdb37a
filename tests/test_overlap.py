"""train.overlap on tiny real runs: step t+1 samples from the weights before update t, prompts
are those of a run without overlap, checkpoints and resume stay consistent, bad set-ups are
refused with the fix."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Generator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from omegaconf import DictConfig

from conftest import StopAtStep, TinyModels, tiny_run_overrides
from opd_core import OPDError, RolloutBatch, hookimpl
from opd_core.app import run
from opd_core.checkpoint import latest_checkpoint
from opd_core.metrics import read_metrics
from opd_core.modeling import ModelSpec, gather_logprobs, next_token_logits
from opd_core.overlap import plan_overlap
from opd_core.plugin_manager import make_plugin_manager
from opd_hf.loading import load_hf_model

Compose = Callable[[list[str]], DictConfig]
QUIET = ["eval.teacher=false", "eval.at_start=false", "train.lr=1e-2"]


class Recorder:
    """Keeps the student's weights at the start and at every step's end, and each step's
    rollouts (as the teacher receives them to score)."""

    def __init__(self) -> None:
        self.weights: list[dict[str, torch.Tensor]] = []
        """``weights[t]``: after update t (``weights[0]``: the start)."""
        self.rollouts: list[RolloutBatch] = []

    def _keep(self, ctx: Any) -> None:
        self.weights.append(copy.deepcopy(ctx.student.model.state_dict()))

    @hookimpl
    def opd_run_start(self, ctx: Any) -> None:
        self._keep(ctx)

    @hookimpl
    def opd_step_end(self, ctx: Any, step: int, metrics: object) -> None:
        self._keep(ctx)

    @hookimpl(wrapper=True)
    def opd_score_rollouts(self, rollouts: RolloutBatch) -> Generator[None, Any, Any]:
        self.rollouts.append(rollouts)
        return (yield)

    def prompt_ids(self) -> list[list[str]]:
        return [[p.id for p in r.prompts] for r in self.rollouts]


def record_run(compose: Compose, overrides: list[str], out: Path) -> Recorder:
    recorder = Recorder()
    run(compose(overrides), out, pm=make_plugin_manager([recorder]))
    assert recorder.rollouts, "the recorder saw no rollouts: its hook is no longer called"
    return recorder


@torch.no_grad()
def max_logprob_error(model: Any, rollouts: RolloutBatch) -> float:
    """Largest gap between the rollouts' sampler log-probabilities and ``model``'s (T=1)."""
    logits_BSV = next_token_logits(model, rollouts.input_ids_BT, rollouts.attention_mask_BT)
    expected_BT = gather_logprobs(logits_BSV, rollouts.input_ids_BT)
    on_BT = rollouts.completion_mask_BT.bool()
    return float((rollouts.sampler_logprobs_BT - expected_BT)[on_BT].abs().max())


def test_step_t_plus_1_samples_from_the_weights_before_update_t(
    tiny_models: TinyModels, compose_config: Compose, tmp_path: Path
) -> None:
    out = tmp_path / "overlap"
    overrides = tiny_run_overrides(tiny_models, out, steps=4) + QUIET
    evaluating = ["eval.every=2", "task.eval_size=4"]  # the evaluation waits for the prefetch
    seen = record_run(compose_config, [*overrides, *evaluating, "train.overlap=true"], out)
    metrics = read_metrics(out / "metrics.jsonl")
    assert [m["overlap/stale_steps"] for m in metrics] == [0, 1, 1, 1]
    assert "eval/accuracy" in metrics[1]
    # the snapshot copy is paid in steps 1-3 (the last step prefetches nothing)
    assert ["time/prefetch_s" in m for m in metrics] == [True, True, True, False]
    model = load_hf_model(ModelSpec(str(tiny_models.student)), "student", torch.device("cpu"))
    model.model.eval()
    for step, rollouts in enumerate(seen.rollouts, start=1):
        sampled_from = seen.weights[max(step - 2, 0)]  # step 1 samples the start's weights
        model.model.load_state_dict(sampled_from)
        assert max_logprob_error(model.model, rollouts) < 1e-5, step
        if step >= 2:  # not the weights after update step - 1, which it trains from
            model.model.load_state_dict(seen.weights[step - 1])
            assert max_logprob_error(model.model, rollouts) > 1e-3, step
    # the same prompts, step by step, as a run without overlap
    plain = tmp_path / "plain"
    without = record_run(compose_config, tiny_run_overrides(tiny_models, plain, 4) + QUIET, plain)
    assert seen.prompt_ids() == without.prompt_ids()
    assert "overlap/stale_steps" not in read_metrics(plain / "metrics.jsonl")[0]


def test_resume_selects_and_samples_the_prefetched_step_again(
    tiny_models: TinyModels, compose_config: Compose, tmp_path: Path
) -> None:
    extra = [*QUIET, "train.overlap=true", "checkpoint.every=2"]
    straight = tmp_path / "straight"
    expected = record_run(
        compose_config, tiny_run_overrides(tiny_models, straight, 5) + extra, straight
    ).prompt_ids()
    out = tmp_path / "resumed"
    overrides = tiny_run_overrides(tiny_models, out, steps=5) + extra
    first = Recorder()
    with pytest.raises(KeyboardInterrupt):
        run(compose_config(overrides), out, pm=make_plugin_manager([first, StopAtStep(3)]))
    checkpoint = latest_checkpoint(out)
    assert checkpoint is not None and checkpoint.name == "step_000002"
    second = record_run(compose_config, [*overrides, "resume=true"], out)
    # step 3 was selected and sampled ahead during step 2, then again after the resume
    assert first.prompt_ids()[:2] + second.prompt_ids() == expected
    stale = {m["step"]: m["overlap/stale_steps"] for m in read_metrics(out / "metrics.jsonl")}
    assert stale == {1: 0, 2: 1, 3: 0, 4: 1, 5: 1}  # resumed at 3: sampled from step 2's weights
    model = load_hf_model(ModelSpec(str(tiny_models.student)), "student", torch.device("cpu"))
    model.model.load_state_dict(second.weights[0])  # the checkpoint's, as the resume loaded them
    assert max_logprob_error(model.model.eval(), second.rollouts[0]) < 1e-5


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["objective=sft"], "sampler=teacher_samples cannot; use sampler=hf or sampler=vllm"),
        (["sampler=dataset"], "sampler=dataset cannot; use sampler=hf or sampler=vllm"),
    ],
)
def test_a_sampler_that_cannot_sample_ahead_is_refused(
    tiny_models: TinyModels,
    compose_config: Compose,
    tmp_path: Path,
    overrides: list[str],
    message: str,
) -> None:
    out = tmp_path / "run"
    cfg = compose_config(
        tiny_run_overrides(tiny_models, out, 1) + QUIET + overrides + ["train.overlap=true"]
    )
    with pytest.raises(OPDError, match=message + ", or set train.overlap=false"):
        run(cfg, out)


def test_several_processes_are_refused() -> None:
    with pytest.raises(OPDError, match=r"runs in one training process \(this run has 2\)"):
        plan_overlap(SimpleNamespace(), {"name": "hf"}, None, "x", processes=2)


@pytest.mark.parametrize(
    ("kind", "level", "says"),
    [
        ("corrected", logging.INFO, "corrects for it"),
        ("per_position", logging.INFO, "only the positions it visits"),
        ("uncorrected", logging.WARNING, "nothing corrects for it"),
        (None, logging.WARNING, "does not say how it treats"),
    ],
)
def test_the_log_says_what_the_loss_makes_of_stale_rollouts(
    caplog: pytest.LogCaptureFixture, kind: str | None, level: int, says: str
) -> None:
    prefetcher = object()
    hook = SimpleNamespace(opd_rollout_prefetcher=lambda: prefetcher)
    loss = SimpleNamespace(stale_rollouts=kind) if kind else object()
    with caplog.at_level(logging.INFO, logger="opd_core"):
        assert plan_overlap(hook, {"name": "hf"}, loss, "mine", processes=1) is prefetcher
    [record] = [r for r in caplog.records if "train.overlap" in r.getMessage()]
    assert record.levelno == level and says in record.getMessage()
    assert "loss=mine" in record.getMessage()
