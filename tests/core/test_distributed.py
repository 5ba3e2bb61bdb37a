"""Data-parallel training: two real processes (torchrun, gloo) end where one process ends."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file

from conftest import TinyModels, tiny_run_overrides
from opd_core import Advantages, OPDError
from opd_core.config import DistributedConfig
from opd_core.distributed import (
    Distributed,
    combine_rank_metrics,
    launched_world_size,
)
from opd_core.flops import FlopsLedger
from opd_core.metrics import StageTimer, read_metrics
from opd_core.reduction import Max, Min, Sum, plain
from opd_core.step_metrics import advantage_metrics

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def greedy_run_overrides(models: TinyModels, out: Path) -> list[str]:
    """Two steps of 8 prompts x 2 greedy samples: the data do not depend on the process count."""
    return [
        *tiny_run_overrides(models, out, steps=2),
        "train.micro_batch_size=4",
        "train.lr=1e-2",
        "eval.teacher=false",
        "eval.at_start=false",
        "task.eval_size=8",
        "sampler.name=greedy_test",
        "plugins=[opd_test_greedy_sampler]",
    ]


def launch(nproc: int, overrides: list[str]) -> subprocess.CompletedProcess[str]:
    """``torchrun --nproc_per_node nproc -m opd_core ...`` on this machine's CPUs."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc)]
    command = [*torchrun, "--master_port", str(free_port()), "-m", "opd_core", *overrides]
    with subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            for child in psutil.Process(proc.pid).children(recursive=True):
                child.kill()  # torchrun's workers, which it starts in sessions of their own
            proc.kill()
            raise
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "checkpoints" / "step_000002" / "model" / "model.safetensors")


@pytest.fixture(scope="module")
def one_process(tiny_models: TinyModels, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist") / "one"
    result = launch(1, greedy_run_overrides(tiny_models, out))
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_end_with_the_weights_of_one(
    one_process: Path, tiny_models: TinyModels, tmp_path: Path, strategy: str
) -> None:
    out = tmp_path / strategy
    result = launch(2, [*greedy_run_overrides(tiny_models, out), f"distributed={strategy}"])
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = final_weights(one_process), final_weights(out)
    start = load_file(tiny_models.student / "model.safetensors")
    for name in one:  # (an FSDP checkpoint also writes the tied lm_head copy)
        assert torch.allclose(one[name], two[name], atol=1e-6), name
    assert any(not torch.allclose(one[k], start[k], atol=1e-4) for k in start)  # it trained
    # rank 0 alone wrote one metrics line per step, over the whole global batch
    metrics_one, metrics_two = (
        read_metrics(one_process / "metrics.jsonl"),
        read_metrics(out / "metrics.jsonl"),
    )
    assert [m["step"] for m in metrics_two] == [1, 2]
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    for a, b in zip(metrics_one, metrics_two, strict=True):
        assert b["sequences"] == a["sequences"] == 16
        assert b["tokens"] == a["tokens"]
        for key in ("loss", "teacher_reverse_kl", "grad_norm", "entropy"):
            assert b[key] == pytest.approx(a[key], rel=1e-4), key
    assert json.loads((out / "summary.json").read_text())["steps"] == 2


def test_an_fsdp_run_resumes_from_its_gathered_checkpoint(
    one_process: Path, tiny_models: TinyModels, tmp_path: Path
) -> None:
    out = tmp_path / "fsdp"
    first = [*greedy_run_overrides(tiny_models, out), "distributed=fsdp", "train.steps=1"]
    assert launch(2, first).returncode == 0
    again = [*first[:-1], "train.steps=2", "resume=true"]
    result = launch(2, again)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from" in result.stdout + result.stderr
    one, resumed = final_weights(one_process), final_weights(out)
    for name in one:  # Adam's moments came back too: without them step 2 would differ
        assert torch.allclose(one[name], resumed[name], atol=1e-6), name
    as_ddp = launch(2, [*again[:-2], "train.steps=3", "resume=true", "distributed=ddp"])
    assert "was written with distributed=fsdp; resume it the same way" in as_ddp.stderr


def test_rank_metrics_combine_as_their_producer_declared() -> None:
    per_rank = [
        {"step": 3, "tokens": Sum(10), "loss": 1.0, "advantage/min": Min(-2), "time/x_s": Max(1)},
        {"step": 3, "tokens": Sum(30), "loss": 3.0, "advantage/min": Min(-5), "time/x_s": Max(4)},
    ]
    for rank, flops in enumerate((5.0, 5.0)):  # counts add up even when the ranks agree
        per_rank[rank]["flops/student"] = Sum(flops)
    per_rank[0]["sequences"] = 4.0  # undeclared: averaged, whatever its name
    per_rank[1]["sequences"] = 8.0
    combined = combine_rank_metrics(per_rank)
    assert combined == {
        "step": 3,
        "flops/student": 10.0,
        "tokens": 40.0,
        "loss": 2.0,
        "advantage/min": -5.0,
        "time/x_s": 4.0,
        "sequences": 6.0,
    }
    assert isinstance(combined["step"], int)
    assert all(type(v) in (int, float) for v in combined.values())  # plain numbers again


def test_the_loop_declares_counts_extremes_and_durations() -> None:
    timer = StageTimer()
    with timer.stage("sample"):
        pass
    assert type(timer.pop()["time/sample_s"]) is Max
    assert all(type(v) is Sum for v in FlopsLedger().metrics("flops").values())
    advantages = Advantages(advantages_BT=torch.tensor([[1.0, -2.0]]), mask_BT=torch.ones(1, 2))
    declared = advantage_metrics(advantages)
    assert (type(declared["advantage/min"]), type(declared["advantage/max"])) == (Min, Max)
    assert type(declared["advantage/mean"]) is float
    assert plain({"tokens": Sum(3), "step": 1}) == {"tokens": 3.0, "step": 1}


def test_a_single_process_shards_nothing() -> None:
    dist = Distributed(DistributedConfig(), torch.device("cpu"))
    assert (dist.rank, dist.world_size, dist.is_main) == (0, 1, True)
    assert dist.shard([1, 2, 3]) == [1, 2, 3]
    assert dist.sum(2.5) == 2.5
    dist.check_divisible(7, "train.prompts_per_step")


def test_shards_are_contiguous_and_uneven_counts_fail() -> None:
    dist = Distributed(DistributedConfig(), torch.device("cpu"))
    dist.rank, dist.world_size = 1, 3  # as rank 1 of 3 would see it
    assert dist.shard(list(range(6))) == [2, 3]
    with pytest.raises(OPDError, match=r"train.prompts_per_step=8 .* multiple of 3"):
        dist.check_divisible(8, "train.prompts_per_step")


def test_a_submitit_slurm_job_with_several_tasks_joins_one_process_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR"):
        monkeypatch.setenv(key, "unset")  # recorded, so the test leaves the environment as it was
        monkeypatch.delenv(key)
    monkeypatch.setenv("MASTER_PORT", "29555")
    slurm = {
        "SUBMITIT_EXECUTOR": "slurm",  # what hydra/launcher=slurm's jobs see
        "SLURM_JOB_ID": "4242",
        "SLURM_NTASKS": "16",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_NODEID": "1",
        "SLURM_JOB_NODELIST": "gpu-[07-08]",
        "SLURM_PROCID": "11",
        "SLURM_LOCALID": "3",
    }
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    assert launched_world_size() == 16
    assert (os.environ["RANK"], os.environ["LOCAL_RANK"]) == ("11", "3")
    assert (os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"]) == ("gpu-07", "29555")
    assert os.environ["LOCAL_WORLD_SIZE"] == "8"
