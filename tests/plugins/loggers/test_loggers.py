"""Each tracker with its real library: a 2-step run logs to it, the library reads it back."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

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

    from opd_core.app import CONF_DIR

    out = tmp_path_factory.mktemp("loggers") / "run"
    overrides = tiny_run_overrides(tiny_models, out, steps=STEPS) + [
        "logger=[tensorboard,wandb,mlflow]"
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


def test_a_missing_library_is_one_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from opd_loggers.tracker import require

    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(
        OPDError, match=r"logger 'wandb' needs the wandb package.*opd-core\[trackers\]"
    ):
        require("wandb", "wandb")


def test_the_loggers_are_registered_and_check_their_options() -> None:
    import opd_loggers

    registry = Registry()
    opd_loggers.opd_register_components(registry)
    assert registry.names("logger") == ["mlflow", "tensorboard", "wandb"]
    with pytest.raises(OPDError, match="wandb"):
        registry.build("logger", {"name": "wandb", "mode": "sometimes"})
