"""Hydra launchers for sweeps: local parallel jobs (joblib), SLURM and its local stand-in
(submitit). Real sweeps on the tiny models; the SLURM config, which needs a cluster, composes."""

from __future__ import annotations

import json
from pathlib import Path

from test_cli import opd

from conftest import TinyModels, tiny_run_overrides


def sweep_overrides(models: TinyModels, sweep_dir: Path) -> list[str]:
    """A one-step tiny run without its fixed run folder or learning rate (the sweep sets both)."""
    return [
        *(
            o
            for o in tiny_run_overrides(models, sweep_dir, steps=1)
            if not o.startswith(("hydra.run.dir", "train.lr="))
        ),
        "eval.teacher=false",
        "eval.at_start=false",
        "task.eval_size=8",
        f"hydra.sweep.dir={sweep_dir}",
    ]


def swept_learning_rates(sweep_dir: Path) -> set[float]:
    summaries = sorted(sweep_dir.glob("*/summary.json"))
    return {json.loads(s.read_text())["final_train_metrics"]["lr"] for s in summaries}


def test_local_launcher_runs_sweep_points_in_parallel_processes(
    tiny_models: TinyModels, tmp_path: Path
) -> None:
    sweep = tmp_path / "sweep"
    result = opd(
        "-m", "hydra/launcher=local", "train.lr=1e-3,2e-3", *sweep_overrides(tiny_models, sweep)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in result.stdout + result.stderr
    assert swept_learning_rates(sweep) == {1e-3, 2e-3}


def test_submitit_local_executor_runs_a_sweep_point(
    tiny_models: TinyModels, tmp_path: Path
) -> None:
    sweep = tmp_path / "sweep"
    result = opd(
        "-m",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=5",
        "train.lr=3e-3",
        *sweep_overrides(tiny_models, sweep),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert swept_learning_rates(sweep) == {3e-3}
    assert list((sweep / ".submitit").glob("*/*_log.out"))  # submitit ran it as its own job


def test_slurm_launcher_config_composes_for_an_8_gpu_node() -> None:
    result = opd(
        "hydra/launcher=slurm",
        "hydra.launcher.partition=gpu",
        "+task=math",
        "+teacher=qwen3_32b",
        "--cfg",
        "hydra",
        "--package",
        "hydra.launcher",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "_target_: hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher" in out
    for line in ("partition: gpu", "tasks_per_node: 8", "gpus_per_node: 8", "nodes: 1"):
        assert line in out, line
