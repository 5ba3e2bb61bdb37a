"""Each tracker with its real library: a 2-step run logs to it, the library reads it back."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from conftest import TinyModels, tiny_run_overrides
from opd_core import OPDError
from opd_core.app import run
from opd_core.metrics import read_metrics
from opd_core.plugin_manager import make_plugin_manager
from opd_core.registry import Registry

STEPS = 2


@pytest.fixture(scope="module")
def logged_run(
    tiny_models: TinyModels, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[dict[str, float]]]:
    """One run with every tracker on; its folder and its metrics.jsonl records."""
    from hydra import compose, initialize_config_dir

    from opd_core.config import CONF_DIR

    out = tmp_path_factory.mktemp("loggers") / "run"
    overrides = tiny_run_overrides(tiny_models, out, steps=STEPS) + [
        "logger=[tensorboard,wandb,mlflow,trackio]"
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    pm = make_plugin_manager()
    import opd_loggers

    if not pm.is_registered(opd_loggers):  # an install older than the loggers entry point
        pm.register(opd_loggers, name="loggers")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_SILENT", "true")
        run(cfg, out, pm=pm)
    return out, read_metrics(out / "metrics.jsonl")


def test_tensorboard_holds_every_step_of_every_metric(
    logged_run: tuple[Path, list[dict[str, float]]],
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, records = logged_run
    events = EventAccumulator(str(out / "tensorboard")).Reload()
    loss = events.Scalars("loss")
    assert [e.step for e in loss] == [1, 2]
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in records], rel=1e-6)
    assert "summary/student_after/accuracy" in events.Tags()["scalars"]


WANDB_BLOCK = 32768
"""W&B's run file is a LevelDB-style log: 32 KiB blocks of records with 7-byte headers."""


def wandb_records(path: Path) -> Iterator[bytes]:
    """The serialized ``Record`` protobufs of an offline run's ``.wandb`` file (the W&B SDK
    dropped its Python reader; the format is its LevelDB log with a ``:W&B`` file header)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, parts = 7, []
    while pos + 7 <= len(data):
        room = WANDB_BLOCK - pos % WANDB_BLOCK
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if room < 7 or kind == 0:  # the rest of the block is padding
            pos += room
            continue
        parts.append(data[pos + 7 : pos + 7 + length])
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last part of one
            yield b"".join(parts)
            parts = []


def test_wandb_offline_run_holds_the_history_and_summary(
    logged_run: tuple[Path, list[dict[str, float]]],
) -> None:
    from wandb.proto import wandb_internal_pb2

    out, records = logged_run
    (log_file,) = (out / "wandb").glob("offline-run-*/run-*.wandb")
    history: dict[int, dict[str, float]] = {}
    summary: dict[str, str] = {}
    for data in wandb_records(log_file):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        if record.WhichOneof("record_type") == "history":
            items = {i.key or "/".join(i.nested_key): i.value_json for i in record.history.item}
            history[int(items["_step"])] = {k: float(v) for k, v in items.items() if k[0] != "_"}
        elif record.WhichOneof("record_type") == "summary":
            for item in record.summary.update:
                summary[item.key or "/".join(item.nested_key)] = item.value_json
    assert sorted(history) == [1, 2]
    for record in records:
        assert history[int(record["step"])]["loss"] == pytest.approx(record["loss"], rel=1e-6)
    assert "summary/student_after/accuracy" in summary


def test_mlflow_file_store_holds_metrics_params_and_status(
    logged_run: tuple[Path, list[dict[str, float]]],
) -> None:
    import mlflow

    out, records = logged_run
    client = mlflow.MlflowClient(tracking_uri=(out / "mlruns").resolve().as_uri())
    experiment = client.get_experiment_by_name("opd-core")
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.info.status == "FINISHED"
    assert found.info.run_name == "run"
    history = client.get_metric_history(found.info.run_id, "loss")
    assert [m.step for m in history] == [1, 2]
    assert [m.value for m in history] == pytest.approx([r["loss"] for r in records], rel=1e-6)
    assert found.data.params["config/train/steps"] == str(STEPS)
    assert "summary/student_after/accuracy" in found.data.metrics


def trackio_get(folder: Path, project: str, *args: str) -> dict[str, Any]:
    """What trackio's own command line reads back from the local project in ``folder``."""
    cli = Path(sys.executable).with_name("trackio")
    result = subprocess.run(
        [str(cli), "get", *args, "--project", project, "--json"],
        env={**os.environ, "TRACKIO_DIR": str(folder)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(result.stdout)


def test_trackio_local_project_holds_metrics_config_and_summary(
    logged_run: tuple[Path, list[dict[str, float]]],
) -> None:
    out, records = logged_run
    found = trackio_get(out / "trackio", "opd-core", "run", "--run", "run")
    assert "summary/student_after/accuracy" in found["metrics"]
    assert found["config"]["train"]["steps"] == STEPS
    metric = ["metric", "--run", "run", "--metric", "loss"]
    loss = trackio_get(out / "trackio", "opd-core", *metric)["values"]
    assert [v["step"] for v in loss] == [1, 2]
    assert [v["value"] for v in loss] == pytest.approx([r["loss"] for r in records], rel=1e-6)


def trackio_folder(wanted: Path) -> Path:
    """``wanted``, or the folder trackio was imported with (it is fixed per process; the
    module's run above opens it first when the whole file runs)."""
    loaded = sys.modules.get("trackio")
    return Path(loaded.utils.TRACKIO_DIR) if loaded is not None else wanted.resolve()


def test_trackio_opens_no_connection_even_with_a_hub_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stored token makes trackio ask the Hub who the user is; the logger keeps it offline."""
    from opd_loggers.trackio import TrackioLogger

    connections: list[Any] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        connections.append(args)
        raise OSError("no network in this test")

    monkeypatch.setenv("HF_TOKEN", "hf_" + "x" * 34)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)  # a lookup comes before any connection
    monkeypatch.setattr(socket.socket, "connect", refuse)
    folder = trackio_folder(tmp_path / "trackio")
    tracker = TrackioLogger(project="offline", trackio_dir=str(folder))
    ctx = SimpleNamespace(output_dir=tmp_path / "offline-run", config=None, rank=0)
    tracker.setup(ctx)  # type: ignore[arg-type]
    tracker.log(1, {"loss": 0.5})
    tracker.close()
    assert connections == []
    monkeypatch.undo()
    metric = ["metric", "--run", "offline-run", "--metric", "loss"]
    assert [v["value"] for v in trackio_get(folder, "offline", *metric)["values"]] == [0.5]


def test_trackio_refuses_remote_targets_and_a_second_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opd_loggers.trackio import TrackioLogger, import_trackio

    ctx = SimpleNamespace(output_dir=tmp_path, config=None, rank=0)
    monkeypatch.setenv("TRACKIO_SPACE_ID", "someone/space")
    with pytest.raises(OPDError, match=r"writes locally only, but TRACKIO_SPACE_ID is set"):
        TrackioLogger().setup(ctx)  # type: ignore[arg-type]
    import_trackio(trackio_folder(tmp_path / "first"))
    with pytest.raises(OPDError, match=r"one folder per process .* loggers.trackio.trackio_dir"):
        import_trackio(tmp_path / "elsewhere")


def test_a_missing_library_is_one_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    from opd_loggers.tracker import require

    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(
        OPDError, match=r"logger 'wandb' needs the wandb package.*opd-core\[trackers\]"
    ):
        require("wandb", "wandb")
    from opd_loggers.trackio import TrackioLogger

    monkeypatch.setitem(sys.modules, "trackio", None)
    ctx = SimpleNamespace(output_dir=Path("run"), config=None, rank=0)
    with pytest.raises(OPDError, match=r"logger 'trackio' needs the trackio package.*\[trackers\]"):
        TrackioLogger().setup(ctx)  # type: ignore[arg-type]


def test_the_loggers_are_registered_and_check_their_options() -> None:
    import opd_loggers

    registry = Registry()
    opd_loggers.opd_register_components(registry)
    assert registry.names("logger") == ["mlflow", "tensorboard", "trackio", "wandb"]
    with pytest.raises(OPDError, match="wandb"):
        registry.build("logger", {"name": "wandb", "mode": "sometimes"})
