"""Checkpoints appear only when complete; a failed save leaves the previous one intact."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import TinyModels
from opd_core.checkpoint import (
    CheckpointNotWritten,
    TrainerState,
    best_checkpoint,
    capture_rng,
    latest_checkpoint,
    load_model_weights,
    remove_partial_checkpoints,
    save_checkpoint,
)
from opd_core.errors import OPDError


def _state(step: int) -> TrainerState:
    return TrainerState(step=step, optimizer={}, scheduler={}, rng=capture_rng(), components={})


def test_save_prune_and_reload(tiny_models: TinyModels, tmp_path: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_models.student)
    tok = AutoTokenizer.from_pretrained(tiny_models.student)
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, model, tok, _state(step), keep=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*"))
    assert names == ["step_000002", "step_000003"]
    latest = latest_checkpoint(tmp_path)
    assert latest is not None and latest.name == "step_000003"

    fresh = AutoModelForCausalLM.from_pretrained(tiny_models.student)
    with torch.no_grad():
        for p in fresh.parameters():
            p.zero_()
    load_model_weights(fresh, latest)
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


class ExplodingModel:
    """Fails halfway through writing its weights."""

    def save_pretrained(self, folder: Path) -> None:
        Path(folder).mkdir(parents=True)
        (Path(folder) / "model.safetensors").write_bytes(b"half a file")
        raise OSError(errno.ENOSPC, "No space left on device", str(folder))


def test_a_failed_save_keeps_the_previous_checkpoint(
    tiny_models: TinyModels, tmp_path: Path
) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_models.student)
    tok = AutoTokenizer.from_pretrained(tiny_models.student)
    save_checkpoint(tmp_path, model, tok, _state(1), keep=2)
    with pytest.raises(CheckpointNotWritten) as failed:
        save_checkpoint(tmp_path, ExplodingModel(), tok, _state(2), keep=2)
    assert str(failed.value) == (
        "Could not write checkpoint step_000002 (the disk is full); the previous checkpoint "
        f"{tmp_path / 'checkpoints' / 'step_000001'} is intact and loadable; free space, then "
        "continue with resume=true."
    )
    latest = latest_checkpoint(tmp_path)
    assert latest is not None and latest.name == "step_000001"
    assert not (tmp_path / "checkpoints" / "step_000002").exists()
    assert [p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")] == []


def test_rotation_keeps_the_last_ones_and_the_best(tiny_models: TinyModels, tmp_path: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_models.student)
    tok = AutoTokenizer.from_pretrained(tiny_models.student)
    for step, best in [(1, 1), (2, 2), (3, 2), (4, 2), (5, 5), (6, 5)]:
        save_checkpoint(tmp_path, model, tok, _state(step), keep=2, best_step=best)
        kept = sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*"))
        if step == 4:  # step 2 outlived rotation while it was the best
            assert kept == ["step_000002", "step_000003", "step_000004"]
    assert kept == ["step_000005", "step_000006"]  # step 2 went once step 5 beat it
    assert best_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step_000005"
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step_000006"


def test_weights_of_another_model_are_refused(tiny_models: TinyModels, tmp_path: Path) -> None:
    student = AutoModelForCausalLM.from_pretrained(tiny_models.student)
    teacher = AutoModelForCausalLM.from_pretrained(tiny_models.teacher)
    tok = AutoTokenizer.from_pretrained(tiny_models.student)
    checkpoint = save_checkpoint(tmp_path, teacher, tok, _state(1), keep=1)
    with pytest.raises(OPDError, match="does not match the student model"):
        load_model_weights(student, checkpoint)


def test_leftovers_of_interrupted_writes_are_removed(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    (root / "step_000002").mkdir(parents=True)
    (root / ".step_000004.abc123.tmp" / "model").mkdir(parents=True)
    (root / ".step_000002.old").mkdir()
    (root / ".latest.x1.tmp").write_text("step_000004")
    removed = remove_partial_checkpoints(tmp_path)
    assert len(removed) == 3
    assert [p.name for p in root.iterdir()] == ["step_000002"]


@pytest.mark.parametrize("content", [b"", b"not a safetensors file at all"])
def test_a_damaged_checkpoint_is_named(
    tiny_models: TinyModels, tmp_path: Path, content: bytes
) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_models.student)
    tokenizer = AutoTokenizer.from_pretrained(tiny_models.student)
    saved = save_checkpoint(tmp_path, model, tokenizer, _state(1), keep=2)
    (saved / "model" / "model.safetensors").write_bytes(content)
    with pytest.raises(OPDError, match=r"step_000001 is unreadable \(model.safetensors: "):
        load_model_weights(model, saved)
