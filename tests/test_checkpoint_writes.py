"""A checkpoint that cannot be written (a full disk, a run folder that became read-only mid-run)
ends the run with one sentence and exit status 2; the previous checkpoint stays intact, loadable
and resumable. The failure is injected (an ``OSError`` at the write) and, where this process may
mount file systems (root), real: a tmpfs too small for the next checkpoint, and the checkpoint
folder bind-mounted read-only (root writes through ``chmod``; not through a read-only mount)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from test_bad_inputs import assert_clean_error, opd
from transformers import AutoModelForCausalLM

from conftest import TinyModels, tiny_run_overrides
from opd_core.checkpoint import latest_checkpoint, load_model_weights
from opd_core.metrics import read_metrics

FULL_DISK = """\
import errno

import torch

from opd_core import hookimpl


@hookimpl
def opd_step_end(ctx, step, metrics):
    if step == 3:  # the checkpoint of step 3 finds the disk full
        def full(obj, f, *args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device", str(f))

        torch.save = full
"""

READ_ONLY = """\
import os
import subprocess

from opd_core import hookimpl


@hookimpl
def opd_step_end(ctx, step, metrics):
    if step == 2:  # the run folder's checkpoints become read-only before step 2 is saved
        folder = ctx.output_dir / "checkpoints"
        if os.geteuid() != 0:
            folder.chmod(0o555)
            return
        subprocess.run(["mount", "--bind", str(folder), str(folder)], check=True)
        subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], check=True)
"""


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("plugins")
    (folder / "opd_full_disk.py").write_text(FULL_DISK)
    (folder / "opd_read_only.py").write_text(READ_ONLY)
    return folder


def can_mount(where: Path) -> bool:
    """Whether this process may mount file systems (root with CAP_SYS_ADMIN)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    where.mkdir(parents=True, exist_ok=True)
    probe = subprocess.run(["mount", "--bind", str(where), str(where)], capture_output=True)
    if probe.returncode != 0:
        return False
    subprocess.run(["umount", str(where)], check=True)
    return True


def run_args(models: TinyModels, out: Path, steps: int = 4) -> list[str]:
    return [
        *tiny_run_overrides(models, out, steps=steps),
        "eval.teacher=false",
        "checkpoint.every=1",
    ]


def loadable(checkpoint: Path, like: Path) -> bool:
    model = AutoModelForCausalLM.from_pretrained(like)
    load_model_weights(model, checkpoint)
    return all(bool(p.isfinite().all()) for p in model.parameters())


def test_a_full_disk_keeps_the_previous_checkpoint_and_the_run_resumes(
    tiny_models: TinyModels, tmp_path: Path, plugin_dir: Path
) -> None:
    out = tmp_path / "run"
    result = opd(*run_args(tiny_models, out), "plugins=[opd_full_disk]", extra_path=plugin_dir)
    step2 = out / "checkpoints" / "step_000002"
    assert_clean_error(
        result,
        f"Could not write checkpoint step_000003 (the disk is full); the previous checkpoint "
        f"{step2} is intact and loadable; free space, then continue with resume=true.",
    )
    assert latest_checkpoint(out) == step2 and loadable(step2, tiny_models.student)
    assert not (out / "checkpoints" / "step_000003").exists()
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]
    resumed = opd(*run_args(tiny_models, out), "resume=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [m["step"] for m in read_metrics(out / "metrics.jsonl")] == [1, 2, 3, 4]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 700 kB tmpfs: room for the run's logs and two checkpoints of the tiny student
    (270 kB each), not for a third."""
    where = tmp_path / "disk"
    if not can_mount(where):
        pytest.skip("mounting a tmpfs needs root (CAP_SYS_ADMIN); the injected test covers it")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=700k", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def test_a_real_full_disk_keeps_the_previous_checkpoint(
    tiny_models: TinyModels, small_disk: Path
) -> None:
    out = small_disk / "run"
    result = opd(*run_args(tiny_models, out, steps=6))
    line = assert_clean_error(result, "Could not write checkpoint step_", "(the disk is full")
    latest = latest_checkpoint(out)
    assert latest is not None and f"the previous checkpoint {latest} is intact" in line
    assert loadable(latest, tiny_models.student)
    written = sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.startswith("step"))
    assert written[-1] == latest.name  # nothing after it, not even a partial folder
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]


@pytest.fixture
def unmount_after(tmp_path: Path) -> Iterator[Path]:
    out = tmp_path / "run"
    yield out
    folder = out / "checkpoints"
    if os.geteuid() == 0:
        subprocess.run(["umount", str(folder)], capture_output=True)
    elif folder.exists():
        folder.chmod(0o755)


def test_a_run_folder_that_becomes_read_only_keeps_the_previous_checkpoint(
    tiny_models: TinyModels, plugin_dir: Path, unmount_after: Path, tmp_path: Path
) -> None:
    if os.geteuid() == 0 and not can_mount(tmp_path / "probe"):
        pytest.skip("root writes through chmod, and a read-only bind mount needs CAP_SYS_ADMIN")
    out = unmount_after
    result = opd(*run_args(tiny_models, out), "plugins=[opd_read_only]", extra_path=plugin_dir)
    step1 = out / "checkpoints" / "step_000001"
    assert_clean_error(
        result,
        f"Could not write checkpoint step_000002 ({out / 'checkpoints'} is not writable: ",
        f"the previous checkpoint {step1} is intact and loadable; make the run folder "
        "writable, then continue with resume=true.",
    )
    assert latest_checkpoint(out) == step1 and loadable(step1, tiny_models.student)
    assert torch.load(step1 / "trainer_state.pt", weights_only=False)["step"] == 1
