"""Rows from a ``datasets`` source: a Hub id, a loader name with ``data_files``, or a local file.

Tasks that read prompts from tables (``math``, ``chat``) share this loader, so the same keys work
everywhere: ``path=HuggingFaceH4/aime_2024``, ``path=json data_files=/data/train.jsonl``, or simply
``path=/data/train.parquet`` (the loader is chosen from the file's extension).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from opd_core.errors import OPDError

LOADERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
"""The ``datasets`` loader for each local file extension."""


def looks_like_file(path: str) -> bool:
    """Whether ``path`` names a local file (by extension) rather than a Hub id or loader name."""
    return Path(path).suffix.lower() in LOADERS


def load_rows(
    path: str,
    split: str = "train",
    data_files: str | list[str] | None = None,
    name: str | None = None,
    limit: int | None = None,
    where: str = "task.train",
    what: str = "the task's train",
) -> Any:
    """``datasets.load_dataset`` on a source; the first ``limit`` rows when given.

    Error messages name the data as ``what`` (``the math task's train``) and the config key of
    the source as ``where`` (``task.train``).
    """
    import datasets

    if looks_like_file(path):
        local = Path(path).expanduser()
        if not local.is_file():
            raise OPDError(
                f"{where}.path={path} does not exist; point it at a "
                f"{'/'.join(sorted(LOADERS))} file or a Hugging Face dataset id."
            )
        path, data_files = LOADERS[local.suffix.lower()], str(local)
    try:
        data = datasets.load_dataset(path, name=name, split=split, data_files=data_files)
    except Exception as err:
        first_line = str(err).splitlines()[0] if str(err) else ""
        raise OPDError(
            f"Cannot load {what} data '{path}' ({type(err).__name__}: {first_line}); point "
            f"{where}.path at a local .jsonl/.parquet file, or at a loader such as json with "
            f"{where}.data_files=/path/to/file.jsonl."
        ) from err
    if limit is not None:
        data = data.select(range(min(limit, len(data))))
    return data


def require_columns(data: Any, columns: set[str], where: str, keys: str) -> None:
    """Fail naming the missing columns and the config ``keys`` that choose them."""
    missing = columns - set(data.column_names)
    if missing:
        raise OPDError(
            f"The {where} data has no column {', '.join(sorted(missing))} (columns: "
            f"{', '.join(data.column_names)}); set {keys}."
        )
