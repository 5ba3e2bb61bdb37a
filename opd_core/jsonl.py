"""JSONL files read record by record, each error naming its ``file:line``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from opd_core.errors import OPDError


def read_jsonl(path: Path) -> Iterator[tuple[str, object]]:
    """``(file:line, record)`` for each non-blank line; a line that is not JSON is an error."""
    if not path.is_file():
        raise OPDError(f"{path} does not exist; give the path of a JSONL file.")
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as err:
                raise OPDError(
                    f"{where}: not valid JSON ({err.msg} at column {err.colno}); "
                    "write one JSON object per line."
                ) from None
