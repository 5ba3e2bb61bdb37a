"""Short real runs on tiny models: OPD lowers the teacher KL, resume is exact, outputs are whole."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig
from safetensors.torch import load_file

from conftest import StopAtStep, TinyModels, tiny_run_overrides
from opd_core.app import run
from opd_core.checkpoint import latest_checkpoint
from opd_core.metrics import read_metrics
from opd_core.plugin_manager import make_plugin_manager

Compose = Callable[[list[str]], DictConfig]


@pytest.mark.parametrize("overlap", [False, True], ids=["sequential", "overlap"])
def test_on_policy_distillation_lowers_teacher_kl(
    tiny_models: TinyModels, compose_config: Compose, tmp_path: Path, overlap: bool
) -> None:
    """With train.overlap (rollouts one update old) as well as without."""
    out = tmp_path / "run"
    cfg = compose_config(
        tiny_run_overrides(tiny_models, out, steps=14)
        + [
            "train.lr=1e-2",
            "train.prompts_per_step=16",
            "eval.teacher=false",
            f"train.overlap={str(overlap).lower()}",
        ]
    )
    summary = run(cfg, out)
    kls = [m["teacher_reverse_kl"] for m in read_metrics(out / "metrics.jsonl")]
    assert len(kls) == 14
    first, last = sum(kls[:3]) / 3, sum(kls[-3:]) / 3
    assert last < 0.5 * first, f"KL went from {first:.3f} to {last:.3f}"
    assert "accuracy" in summary["student_before"] and "accuracy" in summary["student_after"]
    saved = json.loads((out / "summary.json").read_text())
    assert saved["steps"] == 14
    record = read_metrics(out / "metrics.jsonl")[-1]
    for key in (
        "teacher_reverse_kl",
        "entropy",
        "tokens",
        "time/sample_s",
        "time/score_s",
        "time/update_s",
        "loss",
        "grad_norm",
        "time/step_s",
        *(["overlap/stale_steps", "overlap/hidden_s", "overlap/wait_s"] if overlap else []),
    ):
        assert key in record, key
    assert "advantage/mean" not in record  # the default objective has no advantage function


def _weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return load_file(checkpoint / "model" / "model.safetensors")


def test_resume_ends_with_the_same_weights_as_an_uninterrupted_run(
    tiny_models: TinyModels, compose_config: Compose, tmp_path: Path
) -> None:
    extra = ["checkpoint.every=2", "eval.teacher=false", "eval.at_start=false"]
    straight = tmp_path / "straight"
    run(compose_config(tiny_run_overrides(tiny_models, straight, steps=4) + extra), straight)

    resumed = tmp_path / "resumed"
    cfg = compose_config(tiny_run_overrides(tiny_models, resumed, steps=4) + extra)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, resumed, pm=make_plugin_manager([StopAtStep(3)]))
    interrupted_at = latest_checkpoint(resumed)
    assert interrupted_at is not None and interrupted_at.name == "step_000002"
    cfg = compose_config(
        tiny_run_overrides(tiny_models, resumed, steps=4) + extra + ["resume=true"]
    )
    run(cfg, resumed)

    a, b = _weights(latest_checkpoint(straight)), _weights(latest_checkpoint(resumed))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name
    steps = [m["step"] for m in read_metrics(resumed / "metrics.jsonl")]
    assert steps == [1, 2, 3, 4]
    # the FLOPs ledger is part of the checkpoint: the resumed run reports the same totals
    straight_flops = json.loads((straight / "summary.json").read_text())["flops"]
    resumed_flops = json.loads((resumed / "summary.json").read_text())["flops"]
    assert resumed_flops == straight_flops and straight_flops["flops/student"] > 0


def test_a_finished_run_is_never_overwritten(
    tiny_models: TinyModels, compose_config: Compose, tmp_path: Path
) -> None:
    from opd_core import OPDError

    out = tmp_path / "run"
    overrides = tiny_run_overrides(tiny_models, out, steps=1) + ["eval.teacher=false"]
    run(compose_config(overrides), out)
    before = _weights(latest_checkpoint(out))
    with pytest.raises(OPDError, match="already holds checkpoints; set resume=true"):
        run(compose_config(overrides), out)
    after = _weights(latest_checkpoint(out))
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_lora_student_trains_only_the_adapter(
    tiny_models: TinyModels, compose_config: Compose, tmp_path: Path
) -> None:
    out = tmp_path / "lora"
    cfg = compose_config(
        tiny_run_overrides(tiny_models, out, steps=2)
        + [
            "+student.lora.r=4",
            "eval.teacher=false",
            "eval.at_start=false",
        ]
    )
    run(cfg, out)
    model_dir = latest_checkpoint(out) / "model"  # type: ignore[operator]
    assert (model_dir / "adapter_model.safetensors").exists()
    assert not (model_dir / "model.safetensors").exists()
