"""Where opd-core keeps what it builds or fetches once: demo models, offline assets."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """opd-core's cache folder: ``$OPD_CORE_CACHE`` or ``~/.cache/opd_core``."""
    return Path(os.environ.get("OPD_CORE_CACHE") or Path.home() / ".cache" / "opd_core")
