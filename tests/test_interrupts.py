"""Ctrl-C and SIGTERM sent to real runs: one line, a checkpoint of the last finished step, exit
130/143, and a resume that continues exactly where an uninterrupted run would be."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import TinyModels, tiny_run_overrides
from opd_core.interrupts import Interrupts, RunInterrupted
from opd_core.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]
STEPS = 30
EXACT = ("loss", "grad_norm", "teacher_reverse_kl", "tokens", "reward", "lr")


def start(models: TinyModels, out: Path, *extra: str) -> subprocess.Popen[str]:
    overrides = [*tiny_run_overrides(models, out, steps=STEPS), "eval.teacher=false", *extra]
    return subprocess.Popen(
        [sys.executable, "-m", "opd_core", *overrides],
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=300)
    return process.returncode, stderr


def metrics(out: Path) -> list[dict[str, float]]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k in EXACT} for line in lines]


def wait_for_steps(out: Path, count: int, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    path = out / "metrics.jsonl"
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} did not reach {count} steps")


@pytest.fixture(scope="module")
def reference(tiny_models: TinyModels, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    code, stderr = finish(start(tiny_models, out))
    assert code == 0, stderr[-3000:]
    return out


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_checkpoints_the_last_step_and_resume_is_exact(
    tiny_models: TinyModels, tmp_path: Path, reference: Path, signum: int, status: int
) -> None:
    out = tmp_path / "run"
    process = start(tiny_models, out)
    wait_for_steps(out, 3)
    process.send_signal(signum)
    code, stderr = finish(process)
    assert code == status, stderr[-3000:]
    assert "Traceback" not in stderr
    lines = [ln for ln in stderr.splitlines() if ln.startswith("opd_core: interrupted")]
    assert len(lines) == 1, stderr[-3000:]
    done = len(metrics(out))
    assert 3 <= done < STEPS
    checkpoint = out / "checkpoints" / f"step_{done:06d}"
    assert lines[0].startswith(f"opd_core: interrupted at step {done}; checkpoint written to ")
    assert str(checkpoint) in lines[0] and lines[0].endswith("resume=true")
    assert (checkpoint / "trainer_state.pt").exists()

    code, stderr = finish(start(tiny_models, out, "resume=true"))
    assert code == 0, stderr[-3000:]
    assert metrics(out) == metrics(reference)  # every step once, bit-identical
    assert not list((out / "checkpoints").glob(".*.tmp"))


def test_a_signal_with_rollouts_sampled_ahead_checkpoints_and_resume_samples_them_again(
    tiny_models: TinyModels, tmp_path: Path
) -> None:
    """train.overlap: the interrupted step's successor was being sampled in the background;
    the checkpoint is the last finished step's and the resumed run samples the next one anew."""
    out = tmp_path / "run"
    process = start(tiny_models, out, "train.overlap=true")
    wait_for_steps(out, 3)
    process.send_signal(signal.SIGINT)
    code, stderr = finish(process)
    assert code == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    lines = [ln for ln in stderr.splitlines() if ln.startswith("opd_core: interrupted")]
    assert len(lines) == 1, stderr[-3000:]
    done = len(metrics(out))
    assert 3 <= done < STEPS
    assert (out / "checkpoints" / f"step_{done:06d}" / "trainer_state.pt").exists()

    code, stderr = finish(start(tiny_models, out, "train.overlap=true", "resume=true"))
    assert code == 0, stderr[-3000:]
    records = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    stale = [r["overlap/stale_steps"] for r in records]
    assert stale[0] == stale[done] == 0 and sum(stale) == STEPS - 2


def test_a_signal_waits_while_held_and_a_second_one_forces() -> None:
    with Interrupts() as interrupts:
        interrupts.hold()
        os.kill(os.getpid(), signal.SIGTERM)  # waits: the state is being changed
        with pytest.raises(RunInterrupted) as raised:
            interrupts.release()
        assert raised.value.exit_status == 143 and not raised.value.forced
        interrupts.hold()
        os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(RunInterrupted) as forced:
            os.kill(os.getpid(), signal.SIGINT)
        assert forced.value.forced and forced.value.exit_status == 130
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
