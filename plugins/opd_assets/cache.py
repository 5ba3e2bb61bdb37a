"""Where fetched assets live (``<opd-core cache>/assets``), progress lines, atomic writes."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from opd_core.api import cache_root


def assets_root() -> Path:
    """``$OPD_CORE_CACHE/assets``, by default ``~/.cache/opd_core/assets``."""
    return cache_root() / "assets"


def say(message: str) -> None:
    """One progress line on stderr (stdout stays free for the paths the CLI prints)."""
    print(f"opd_assets: {message}", file=sys.stderr, flush=True)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path next to ``path`` that becomes ``path`` when the block ends cleanly.

    Anything that stops the block (an error, Ctrl-C) deletes the temporary file instead, so
    ``path`` is either absent, its old self, or complete, never a truncated file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        tmp.chmod(0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
