"""MLflow: a local file store under ``<run folder>/mlruns`` unless a tracking URI is given."""

from __future__ import annotations

import os
import re
import time
from dataclasses import asdict, is_dataclass
from typing import Any

from opd_core.api import RunContext
from opd_loggers.tracker import Tracker, flatten, require

BAD_KEY_CHARS = re.compile(r"[^\w\-. /]")
"""What MLflow refuses in a metric or param name (e.g. lm-eval's ``acc,none``)."""


def mlflow_key(key: str) -> str:
    return BAD_KEY_CHARS.sub("_", key)


class MLflowLogger(Tracker):
    """One MLflow run per training run: metrics by step, the config as params, the summary."""

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment: str = "opd-core",
        run_name: str | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.run_name = run_name

    def start(self, ctx: RunContext) -> None:
        mlflow = require("mlflow", "mlflow")
        self.Metric = mlflow.entities.Metric
        self.Param = mlflow.entities.Param
        uri = self.tracking_uri or (ctx.output_dir / "mlruns").resolve().as_uri()
        if uri.startswith("file:"):  # MLflow 3 asks file stores to opt in; ours is the run's
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client: Any = mlflow.MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(self.experiment)
        experiment_id = (
            found.experiment_id if found else self.client.create_experiment(self.experiment)
        )
        run = self.client.create_run(experiment_id, run_name=self.run_name or ctx.output_dir.name)
        self.run_id = run.info.run_id
        config = flatten(asdict(ctx.config), "config") if is_dataclass(ctx.config) else {}
        params = [self.Param(mlflow_key(k), str(v)[:6000]) for k, v in config.items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[start : start + 100])

    def log(self, step: int, metrics: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        batch = [self.Metric(mlflow_key(k), v, now, step) for k, v in metrics.items()]
        for start in range(0, len(batch), 1000):
            self.client.log_batch(self.run_id, metrics=batch[start : start + 1000])

    def finish(self, summary: dict[str, float] | None) -> None:
        if summary:
            self.log(0, summary)
        self.client.set_terminated(self.run_id, "FINISHED" if summary is not None else "FAILED")
