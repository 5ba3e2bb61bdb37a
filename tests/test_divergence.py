"""A run that goes wrong keeps its best work and says what went wrong: the non-finite guard
(lr=1e30, a teacher that returns NaN, a plugin that writes NaN into the student), the best
checkpoint through rotation and resume, and the divergence stop, on tiny real models."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Generator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from safetensors.torch import load_file, save_file
from test_bad_inputs import ROOT, assert_clean_error, opd
from transformers import AutoModelForCausalLM

from conftest import (
    TINY_TEACHER,
    StopAtStep,
    TinyModels,
    store_plugin_configs,
    tiny_run_overrides,
)
from opd_arith.build import make_model
from opd_arith.problems import make_problems
from opd_arith.sft import sft
from opd_arith.tokenizer import build_tokenizer
from opd_core import OPDError, TeacherScores, hookimpl
from opd_core.app import run
from opd_core.checkpoint import best_checkpoint, latest_checkpoint, load_model_weights
from opd_core.config import CONF_DIR
from opd_core.guard import TrainingDiverged
from opd_core.metrics import read_metrics
from opd_core.plugin_manager import make_plugin_manager
from opd_core.watch import DivergenceStop

Compose = Callable[[list[str]], DictConfig]


def digest(folder: Path) -> str:
    """A hash of every file under ``folder`` (names and bytes)."""
    sha = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        sha.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return sha.hexdigest()


def finite_weights(checkpoint: Path, like: Path) -> bool:
    """Load ``checkpoint`` into a model built like the one in ``like``; all weights finite."""
    model = AutoModelForCausalLM.from_pretrained(like)
    load_model_weights(model, checkpoint)
    return all(bool(p.isfinite().all()) for p in model.parameters())


# -------------------------------------------------- the non-finite guard


def test_a_learning_rate_of_1e30_ends_with_one_sentence_and_keeps_the_last_checkpoint(
    tiny_models: TinyModels, tmp_path: Path
) -> None:
    """The issue's command: the weights overflow in the first update, which is never saved."""
    fresh = tmp_path / "fresh"
    diverging = [
        "eval.teacher=false",
        "checkpoint.every=1",
        "train.lr=1e30",
        "train.max_grad_norm=0",
    ]
    result = opd(*tiny_run_overrides(tiny_models, fresh, steps=3), *diverging)
    line = assert_clean_error(
        result,
        "Training diverged at step 1: the student's weights are no longer finite after its update",
        "so step 1 was not saved; no checkpoint was written before it",
        "likely cause: a learning rate too high (train.lr=1e+30; lower it), with gradient "
        "clipping turned off (train.max_grad_norm=0; set it to 1.0); OPD_DEBUG=1 shows the "
        "details.",
    )
    assert "Plugin" not in line and "bug" not in line
    assert latest_checkpoint(fresh) is None
    debugged = tmp_path / "debugged"
    debug = subprocess.run(  # OPD_DEBUG=1: the traceback, and which weights overflowed
        [
            sys.executable,
            "-m",
            "opd_core",
            *tiny_run_overrides(tiny_models, debugged, 3),
            *diverging,
        ],
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OPD_DEBUG": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "Traceback" in debug.stderr
    assert "Details: non-finite weights: model.embed_tokens.weight (norm inf)" in debug.stderr

    # two good steps, then resumed at lr=1e30: step 3 diverges, step 2 stays as it was
    out = tmp_path / "run"
    good = [*tiny_run_overrides(tiny_models, out, steps=2), "eval.teacher=false"]
    first = opd(*good, "checkpoint.every=1")
    assert first.returncode == 0, first.stderr[-3000:]
    step2 = out / "checkpoints" / "step_000002"
    before = digest(step2)
    result = opd(
        *tiny_run_overrides(tiny_models, out, steps=4),
        "eval.teacher=false",
        "checkpoint.every=1",
        "resume=true",
        "train.lr=1e30",
        "train.max_grad_norm=0",
    )
    assert_clean_error(
        result,
        "Training diverged at step 3: the student's weights are no longer finite",
        f"so step 3 was not saved; the last finite checkpoint, {step2}, is kept",
        "train.lr=1e+30",
    )
    assert (
        "resumed with train.lr=1e+30 (the checkpoint's run had 0.001)"
        in result.stdout + result.stderr
    )
    assert latest_checkpoint(out) == step2 and digest(step2) == before
    assert not (out / "checkpoints" / "step_000003").exists()
    assert finite_weights(step2, tiny_models.student)


class Recorder:
    """Keeps the student (``ctx``) and its weights at every step's end."""

    def __init__(self) -> None:
        self.ctx: Any = None
        self.weights: dict[int, dict[str, torch.Tensor]] = {}

    @hookimpl
    def opd_run_start(self, ctx: Any) -> None:
        self.ctx = ctx

    @hookimpl
    def opd_step_end(self, ctx: Any, step: int, metrics: object) -> None:
        self.weights[step] = copy.deepcopy(ctx.student.model.state_dict())

    def current(self) -> dict[str, torch.Tensor]:
        return dict(self.ctx.student.model.state_dict())


class NaNTeacher:
    """A teacher gone wrong at ``step``: its scores of that step's rollouts are NaN."""

    def __init__(self, step: int) -> None:
        self.step, self.calls = step, 0

    @hookimpl(wrapper=True)
    def opd_score_rollouts(self) -> Generator[None, Any, Any]:
        scores: TeacherScores = yield
        self.calls += 1
        if self.calls != self.step:
            return scores
        nan = float("nan")
        topk = scores.topk_logprobs_BTK
        return replace(
            scores,
            logprobs_BT=torch.full_like(scores.logprobs_BT, nan),
            topk_logprobs_BTK=None if topk is None else torch.full_like(topk, nan),
        )


def test_a_non_finite_loss_is_not_applied_and_its_input_is_named(
    tiny_models: TinyModels, compose_config: Compose, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    overrides = tiny_run_overrides(tiny_models, out, steps=4) + [
        "eval.teacher=false",
        "eval.at_start=false",
        "checkpoint.every=1",
    ]
    recorder = Recorder()
    with pytest.raises(TrainingDiverged) as stopped:
        run(compose_config(overrides), out, pm=make_plugin_manager([recorder, NaNTeacher(3)]))
    step2 = out / "checkpoints" / "step_000002"
    assert str(stopped.value) == (
        "Training stopped at step 3: the loss is nan because the teacher scores it was computed "
        f"from are not finite, so the update was not applied; the last finite checkpoint, "
        f"{step2}, is kept (resume=true continues from it); likely cause: teacher=hf, which "
        "produced them (check that component and its model on these prompts); OPD_DEBUG=1 shows "
        "the details."
    )
    assert stopped.value.step == 3 and stopped.value.quantity == "loss"
    now, after_2 = recorder.current(), recorder.weights[2]
    assert all(torch.equal(now[k], after_2[k]) for k in after_2)  # update 3 never happened
    assert latest_checkpoint(out) == step2 and finite_weights(step2, tiny_models.student)


class WritesNaN:
    """A plugin that writes NaN into one of the student's weights when ``step`` ends."""

    def __init__(self, step: int) -> None:
        self.step = step

    @hookimpl
    def opd_step_end(self, ctx: Any, step: int, metrics: object) -> None:
        if step == self.step:
            with torch.no_grad():
                next(ctx.student.model.parameters()).fill_(float("nan"))


def test_a_plugin_failing_on_non_finite_weights_is_not_blamed_and_they_are_never_saved(
    tiny_models: TinyModels, compose_config: Compose, tmp_path: Path
) -> None:
    base = ["eval.teacher=false", "eval.at_start=false"]
    out = tmp_path / "sampled"
    overrides = tiny_run_overrides(tiny_models, out, steps=4) + base
    with pytest.raises(TrainingDiverged) as failed:
        run(compose_config(overrides), out, pm=make_plugin_manager([WritesNaN(2)]))
    message = str(failed.value)
    assert message.startswith(
        "The student's weights are not finite at step 3 (their squared norm is nan) and plugin "
        "opd_hf.sampler (opd-component-sampler) failed in hook opd_sample_rollouts on them "
        "(RuntimeError: probability tensor contains"
    ), message
    assert "which is not a bug in that plugin" in message
    assert message.endswith(
        "likely cause: they were finite after the last update (step 2), so something else wrote "
        "into them since: a plugin changing the student's weights; OPD_DEBUG=1 shows the details."
    )
    assert isinstance(failed.value.__cause__, RuntimeError)

    saved = tmp_path / "saved"  # with a checkpoint every step: step 2 is refused, not written
    overrides = tiny_run_overrides(tiny_models, saved, steps=4) + [*base, "checkpoint.every=1"]
    with pytest.raises(TrainingDiverged, match="not finite when step 2 is to be saved"):
        run(compose_config(overrides), saved, pm=make_plugin_manager([WritesNaN(2)]))
    step1 = saved / "checkpoints" / "step_000001"
    assert latest_checkpoint(saved) == step1 and finite_weights(step1, tiny_models.student)


def test_a_student_loaded_with_non_finite_weights_is_refused_before_training(
    tiny_models: TinyModels, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_models.student, broken)
    weights = load_file(broken / "model.safetensors")
    weights["model.embed_tokens.weight"][0, 0] = float("inf")
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    out = tmp_path / "run"
    result = opd(
        *tiny_run_overrides(tiny_models, out, steps=1),
        "eval.teacher=false",
        f"student.model.path={broken}",
    )
    assert_clean_error(
        result,
        f"The student's weights loaded from {broken} are not finite "
        "(model.embed_tokens.weight (norm inf)); use a model or checkpoint whose weights are "
        "finite.",
    )


# -------------------------------------------------- the best checkpoint, the divergence stop


@pytest.fixture(scope="module")
def solver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model that solves some one-operation problems (40% of them): distilled into
    itself at lr 3e-2 it collapses within a step or two (at 1e-2 whether it collapsed within 6
    steps depended on the sampler's random stream), so its best evaluation comes early."""
    torch.manual_seed(0)
    problems = make_problems(250, seed=0, num_ops=1)
    tokenizer = build_tokenizer([f"{p.question} {p.solution}" for p in make_problems(400, seed=0)])
    model = make_model(TINY_TEACHER, tokenizer, seed=0)
    sft(
        model,
        tokenizer,
        problems,
        steps=300,
        batch_size=32,
        lr=3e-3,
        seed=0,
        log_every=0,
        progress=False,
    )
    folder = tmp_path_factory.mktemp("solver")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def collapsing(solver: Path, out: Path, steps: int = 6) -> list[str]:
    """A run that evaluates every step and checkpoints every step, keeping 2, best by accuracy."""
    return [
        *tiny_run_overrides(TinyModels(teacher=solver, student=solver), out, steps=steps),
        "++task.num_ops=1",
        "task.eval_size=20",
        "eval.teacher=false",
        "eval.every=1",
        "train.lr=3e-2",
        "checkpoint.every=1",
        "checkpoint.keep=2",
        "++checkpoint.best_metric=accuracy",
    ]


def accuracies(out: Path) -> dict[int, float]:
    """The student's accuracy by step: every evaluation of the run, the final one included."""
    records = read_metrics(out / "metrics.jsonl")
    found = {int(m["step"]): m["eval/accuracy"] for m in records if "eval/accuracy" in m}
    summary = json.loads((out / "summary.json").read_text())
    found[summary["steps"]] = summary["student_after"]["accuracy"]
    return found


@pytest.fixture(scope="module")
def straight(solver: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("straight") / "run"
    store_plugin_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=collapsing(solver, out))
    return out, run(cfg, out)


def test_a_collapsing_run_keeps_its_best_checkpoint_through_rotation(
    solver: Path, straight: tuple[Path, dict[str, Any]]
) -> None:
    out, summary = straight
    scores = accuracies(out)
    best_step = max(scores, key=lambda s: (scores[s], -s))  # the first of the best
    assert best_step <= 3, f"the run did not collapse: {scores}"  # rotation would delete it
    best = out / "checkpoints" / f"step_{best_step:06d}"
    assert summary["best_checkpoint"] == {
        "step": best_step,
        "metric": "accuracy",
        "value": scores[best_step],
        "mode": "max",
        "checkpoint": str(best),
    }
    kept = sorted(p.name for p in (out / "checkpoints").glob("step_*"))
    assert kept == sorted([best.name, "step_000005", "step_000006"])
    assert best_checkpoint(out) == best and finite_weights(best, solver)


def test_a_resumed_run_keeps_its_best_checkpoint(
    solver: Path, straight: tuple[Path, dict[str, Any]], compose_config: Compose, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run(compose_config(collapsing(solver, out)), out, pm=make_plugin_manager([StopAtStep(4)]))
    assert latest_checkpoint(out) == out / "checkpoints" / "step_000003"
    summary = run(compose_config([*collapsing(solver, out), "resume=true"]), out)
    expected = dict(straight[1]["best_checkpoint"])
    best = out / "checkpoints" / f"step_{expected['step']:06d}"
    assert summary["best_checkpoint"] == {**expected, "checkpoint": str(best)}
    assert best_checkpoint(out) == best and (best / "trainer_state.pt").exists()
    assert accuracies(out) == accuracies(straight[0])  # the resume is exact


def test_the_divergence_stop_ends_a_collapsing_run_early(
    solver: Path,
    straight: tuple[Path, dict[str, Any]],
    compose_config: Compose,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    margin, patience = 0.05, 2
    scores = {0: straight[1]["student_before"]["accuracy"], **accuracies(straight[0])}
    best, worse, expected = -1.0, 0, None
    for step in sorted(scores):  # the rule, as docs/reliability.md states it
        if scores[step] > best:
            best, worse = scores[step], 0
        else:
            worse = worse + 1 if scores[step] < best - margin else 0
        if worse == patience:
            expected = step
            break
    assert expected is not None and expected < 6, f"the run did not collapse: {scores}"

    out = tmp_path / "run"
    stopping = [
        "++divergence.metric=accuracy",
        f"++divergence.margin={margin}",
        f"++divergence.patience={patience}",
    ]
    with caplog.at_level(logging.WARNING, logger="opd_core"):
        summary = run(compose_config([*collapsing(solver, out), *stopping]), out)
    assert summary == json.loads((out / "summary.json").read_text())
    assert summary["steps"] == expected
    assert summary["stopped_early"]["step"] == expected
    assert summary["stopped_early"]["reason"].startswith("accuracy was worse than its best")
    assert f"stopping early after step {expected} of 6" in caplog.text
    assert [m["step"] for m in read_metrics(out / "metrics.jsonl")] == list(range(1, expected + 1))
    assert best_checkpoint(out) is not None and latest_checkpoint(out) == out / (
        f"checkpoints/step_{expected:06d}"
    )


def test_the_divergence_stop_reads_the_teacher_kl_every_step_and_lower_is_better() -> None:
    stop = DivergenceStop("teacher_reverse_kl", mode=None, margin=0.1, patience=2)
    assert stop.per_step and stop.record is not None and stop.record.mode == "min"
    assert stop.observe_eval(1, {"accuracy": 0.0}) is None  # evaluations are not its metric
    kls = [1.0, 0.5, 0.55, 0.7, 0.65, 0.8]  # best 0.5; 0.7 and 0.65 are worse by more than 0.1
    reasons = [stop.observe_step(i + 1, {"teacher_reverse_kl": kl}) for i, kl in enumerate(kls)]
    assert reasons[:4] == [None, None, None, None]
    assert reasons[4] is not None and "(0.5 at step 2)" in reasons[4]
    with pytest.raises(OPDError, match=r"divergence\.metric=acc is not a metric the evaluators"):
        DivergenceStop("acc", None, 0.0, 1).observe_eval(0, {"accuracy": 0.5})
