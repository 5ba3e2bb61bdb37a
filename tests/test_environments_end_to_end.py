"""Runs with an environment on the tiny models: every objective trains on multi-turn episodes
with the loss on the student's own tokens only, resume is exact, train.overlap samples episodes
ahead, refusals and a broken environment are one sentence, and single-turn runs are unchanged."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import DictConfig
from safetensors.torch import load_file

from conftest import ROOT, StopAtStep, TinyModels, tiny_run_overrides
from opd_core import OPDError, Prompt, hookimpl
from opd_core.app import run
from opd_core.checkpoint import latest_checkpoint, load_trainer_state
from opd_core.metrics import read_metrics
from opd_core.plugin_manager import make_plugin_manager

Compose = Callable[[list[str]], DictConfig]
ENV = ["+environment={name:followups,turns:2}", "plugins=[episode_envs]"]
QUIET = ["eval.teacher=false", "eval.at_start=false", "task.eval_size=4"]


class MaskSpy:
    """Checks, for every micro-batch the loss sees, that its mask is the student's tokens and
    nothing else, and that rewards (when an advantage function reads them) are the episodes'."""

    def __init__(self) -> None:
        self.environment_tokens = 0
        self.calls = 0

    @hookimpl(wrapper=True)
    def opd_compute_loss(
        self, rollouts: Any, policy: Any, advantages: Any, scores: Any, num_loss_tokens: int
    ) -> Any:
        assert rollouts.episodes is not None
        mask_BT = advantages.mask_BT.bool()
        assert torch.equal(mask_BT, rollouts.completion_mask_BT.bool())
        region_BT = rollouts.attention_mask_BT.bool().clone()
        region_BT[:, : rollouts.prompt_len] = False
        self.environment_tokens += int((region_BT & ~mask_BT).sum())
        assert (advantages.advantages_BT[~mask_BT] == 0).all()
        self.calls += 1
        return (yield)

    @hookimpl(wrapper=True)
    def opd_compute_advantages(self, rollouts: Any, scores: Any, rewards_B: Any) -> Any:
        if rewards_B is not None:  # the episode rewards, not the task's grader
            assert rewards_B.tolist() == [e.reward for e in rollouts.episodes]
        return (yield)


def run_with_env(
    compose: Compose, models: TinyModels, out: Path, steps: int, extra: list[str], *plugins: Any
) -> tuple[list[dict[str, float]], dict[str, Any]]:
    cfg = compose(tiny_run_overrides(models, out, steps=steps) + QUIET + ENV + extra)
    summary = run(cfg, out, pm=make_plugin_manager(list(plugins)))
    return read_metrics(out / "metrics.jsonl"), summary


@pytest.mark.parametrize(
    ("objective", "metric"),
    [
        (None, "teacher_reverse_kl"),  # top-k reverse KL, the default
        ("opd", "teacher_reverse_kl"),  # sampled reverse KL, importance sampling
        ("forward_kl", "forward_kl"),
        ("grpo", "solved_groups"),  # GRPO on the episode rewards
        ("sft", "nll"),  # SFT on the teacher's episodes
    ],
)
def test_every_objective_trains_on_episodes(
    objective: str | None,
    metric: str,
    tiny_models: TinyModels,
    compose_config: Compose,
    tmp_path: Path,
) -> None:
    spy = MaskSpy()
    extra = [f"objective={objective}"] if objective else []
    metrics, _ = run_with_env(
        compose_config,
        tiny_models,
        tmp_path / "run",
        2,
        [*extra, "train.samples_per_prompt=2"],
        spy,
    )
    assert spy.calls >= 2 and spy.environment_tokens > 0
    for record in metrics:
        assert metric in record and math.isfinite(record["loss"])
        assert record["episode/turns"] == 2.0 and record["episode/asks"] == 1.0
        assert record["reward"] == pytest.approx(record["episode/reward"])
        assert record["episode/budget_cut"] == 0 and record["episode/env_tokens"] > 0
    writer = "teacher" if objective == "sft" else "student"
    assert metrics[-1][f"flops/{writer}_sampling"] > 0


def weights(out: Path) -> dict[str, torch.Tensor]:
    checkpoint = latest_checkpoint(out)
    assert checkpoint is not None
    return load_file(checkpoint / "model" / "model.safetensors")


def test_resume_with_an_environment_is_exact(
    tiny_models: TinyModels, compose_config: Compose, tmp_path: Path
) -> None:
    extra = ["checkpoint.every=2"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    reference, _ = run_with_env(compose_config, tiny_models, straight, 4, extra)
    with pytest.raises(KeyboardInterrupt):
        run_with_env(compose_config, tiny_models, resumed, 4, extra, StopAtStep(3))
    checkpoint = latest_checkpoint(resumed)
    assert checkpoint is not None and checkpoint.name == "step_000002"
    # the environment's own state is part of the checkpoint (8 prompts x 2 samples x 2 steps)
    state = load_trainer_state(checkpoint)
    assert state.components["environment"] == {"opened": 32}
    again, _ = run_with_env(compose_config, tiny_models, resumed, 4, [*extra, "resume=true"])
    a, b = weights(straight), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    keys = ("loss", "teacher_reverse_kl", "tokens", "episode/reward", "episode/env_tokens")
    assert [{k: r[k] for k in keys} for r in again] == [{k: r[k] for k in keys} for r in reference]


def test_overlap_samples_episodes_ahead(
    tiny_models: TinyModels, compose_config: Compose, tmp_path: Path
) -> None:
    metrics, _ = run_with_env(
        compose_config, tiny_models, tmp_path / "run", 3, ["train.overlap=true"], MaskSpy()
    )
    assert [m["overlap/stale_steps"] for m in metrics] == [0, 1, 1]
    assert all(m["episode/turns"] == 2.0 and m["episode/env_tokens"] > 0 for m in metrics)


def test_the_episode_success_evaluator_runs_held_out_episodes(
    tiny_models: TinyModels, compose_config: Compose, tmp_path: Path
) -> None:
    _, summary = run_with_env(
        compose_config,
        tiny_models,
        tmp_path / "run",
        1,
        ["evaluator=[episode_success]", "eval.teacher=true", "eval.max_new_tokens=24"],
    )
    teacher = summary["teacher"]
    assert teacher["episodes"] == 4 and teacher["turns"] == 2.0 and teacher["asks"] == 1.0
    assert 0 <= teacher["success"] <= 1 and "success" in summary["student_after"]


@pytest.mark.parametrize(
    ("swap", "message"),
    [
        (("sampler=", "sampler=dataset"), "sampler=dataset trains on fixed reference texts"),
        (
            ("+teacher=", "+teacher=cross_tokenizer"),
            "teacher=cross_tokenizer re-tokenizes the student's text, so it cannot score",
        ),
    ],
)
def test_components_that_cannot_run_episodes_refuse(
    swap: tuple[str, str],
    message: str,
    tiny_models: TinyModels,
    compose_config: Compose,
    tmp_path: Path,
) -> None:
    prefix, override = swap
    out = tmp_path / "run"
    overrides = [o for o in tiny_run_overrides(tiny_models, out) if not o.startswith(prefix)]
    cfg = compose_config([*overrides, override, *QUIET, *ENV])
    with pytest.raises(OPDError, match=message):
        run(cfg, out)


def test_a_sampler_that_ignores_the_environment_is_refused(
    tiny_models: TinyModels, compose_config: Compose, tmp_path: Path
) -> None:
    class Ignoring:
        @hookimpl(tryfirst=True)
        def opd_sample_rollouts(self, prompts: Any, samples_per_prompt: int) -> Any:
            from opd_core.rollouts import sampled_rollout_batch
            from opd_hf.generation import generate

            return sampled_rollout_batch(
                prompts,
                samples_per_prompt,
                generate(*self.args(prompts, samples_per_prompt)),
                self.tokenizer,
            )

        @hookimpl
        def opd_run_start(self, ctx: Any) -> None:
            self.model, self.tokenizer = ctx.student.model, ctx.student.tokenizer

        def args(self, prompts: Any, n: int) -> tuple[Any, ...]:
            from opd_core import GenerationParams

            expanded = [p for p in prompts for _ in range(n)]
            return self.model, self.tokenizer, expanded, GenerationParams(max_new_tokens=4), 8

    with pytest.raises(
        OPDError, match="wrote single-turn rollouts although environment 'followups' is configured"
    ):
        run_with_env(compose_config, tiny_models, tmp_path / "run", 1, [], Ignoring())


def test_a_broken_environment_ends_the_run_with_one_sentence_and_keeps_checkpoints(
    tiny_models: TinyModels, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    overrides = [
        *tiny_run_overrides(tiny_models, out, steps=1),
        *QUIET,
        "+environment={name:broken,how:raise,on_turn:2}",
        "plugins=[episode_envs]",
    ]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, "-m", "opd_core", *overrides],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("opd_core: error:")]
    assert lines == [
        "opd_core: error: Environment 'broken' failed answering turn 2 for prompt "
        f"'{lines[0].split(chr(39))[3]}' (ZeroDivisionError: division by zero); fix the "
        "environment (OPD_DEBUG=1 shows the traceback)."
    ], result.stderr[-3000:]
    assert "Traceback" not in result.stderr


def test_single_turn_runs_never_open_an_episode(
    tiny_models: TinyModels, compose_config: Compose, tmp_path: Path
) -> None:
    class NoEpisodes:
        @hookimpl
        def opd_start_episode(self, prompt: Any) -> Any:
            raise AssertionError("a run without an environment opened an episode")

    out = tmp_path / "run"
    cfg = compose_config(tiny_run_overrides(tiny_models, out, steps=1) + QUIET)
    run(cfg, out, pm=make_plugin_manager([NoEpisodes()]))
    record = read_metrics(out / "metrics.jsonl")[0]
    assert not any(k.startswith("episode/") for k in record)


def test_the_example_packages_environment_trains_and_is_evaluated(
    tiny_models: TinyModels, compose_config: Compose, tmp_path: Path
) -> None:
    """A third-party environment (examples/opd-example-task: a wrong answer gets another try)
    found through its package's entry point and config, with the episode_success evaluator."""
    from opd_example_task.environment import Retry

    retry, prompt = Retry(tries=2), Prompt(id="r", messages=(), answer="91")
    assert retry.opd_step_episode(prompt, None, "so #91", 1).done
    again = retry.opd_step_episode(prompt, None, "#19", 1)
    assert not again.done and again.messages[0]["content"] == "Not quite. Try again."
    assert retry.opd_step_episode(prompt, None, "#19", 2).done

    out = tmp_path / "run"
    overrides = [
        o.replace("+task=arithmetic", "+task=reverse_digits")
        for o in tiny_run_overrides(tiny_models, out, steps=2)
        if not o.startswith("task.")
    ]
    cfg = compose_config(
        [
            *overrides,
            "+environment=retry",
            "evaluator=[episode_success]",
            "evaluators.episode_success.max_examples=4",
            "eval.at_start=false",
        ]
    )
    summary = run(cfg, out)
    for record in read_metrics(out / "metrics.jsonl"):
        assert 1 <= record["episode/turns"] <= 3 and 0 <= record["episode/success"] <= 1
    assert summary["teacher"]["episodes"] == 4 and 1 <= summary["teacher"]["turns"] <= 3


def test_ctrl_c_between_episodes_checkpoints_and_resume_finishes(
    tiny_models: TinyModels, tmp_path: Path
) -> None:
    """SIGINT to a CLI run with an environment: one line, exit 130, the last finished step's
    checkpoint; resume=true runs the remaining steps once each."""
    out, steps = tmp_path / "run", 12
    command = [
        sys.executable,
        "-m",
        "opd_core",
        *tiny_run_overrides(tiny_models, out, steps=steps),
        *QUIET,
        *ENV,
    ]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]),
    }
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        assert time.monotonic() < deadline and process.poll() is None, "the run did not start"
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    assert len([ln for ln in stderr.splitlines() if ln.startswith("opd_core: interrupted")]) == 1
    done = len(read_metrics(metrics))
    assert (out / "checkpoints" / f"step_{done:06d}" / "trainer_state.pt").exists()
    result = subprocess.run(
        [*command, "resume=true"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert [r["step"] for r in read_metrics(metrics)] == list(range(1, steps + 1))
