"""Offline assets as a plugin: ``asset://<name>`` model paths and ``python -m opd_assets``.

The fetchers themselves are public in :mod:`opd_core.assets` (re-exported here for scripts).
"""

from __future__ import annotations

from opd_core.assets import (
    assets_root,
    ensure_punkt_tab,
    fetch_ifeval_prompts,
    fetch_smollm2,
    read_ifeval_prompts,
    use_punkt_tab,
)

__all__ = [
    "assets_root",
    "ensure_punkt_tab",
    "fetch_ifeval_prompts",
    "fetch_smollm2",
    "read_ifeval_prompts",
    "use_punkt_tab",
]
