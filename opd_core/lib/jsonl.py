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
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            where = f"{path}:{number}"
            line = decode_line(raw, where)
            if not line.strip():
                continue
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as err:
                raise OPDError(
                    f"{where}: not valid JSON ({err.msg} at column {err.colno}); "
                    "write one JSON object per line."
                ) from None


def decode_line(raw: bytes, where: str) -> str:
    """A line of a text file as UTF-8; binary or otherwise encoded bytes are named."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise OPDError(
            f"{where}: not UTF-8 text (byte {raw[err.start]:#04x} at column {err.start + 1}); "
            "convert the file to UTF-8 (iconv -t utf-8) or point at the right file."
        ) from None
