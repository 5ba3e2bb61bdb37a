"""The one exception type a user should ever see from opd-core.

Bad input (config, data file, plugin, model path, server reply) raises :class:`OPDError` with one
sentence naming what is wrong and how to fix it. The command-line entry point prints that sentence
and exits non-zero instead of showing a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable


class OPDError(Exception):
    """A problem the user can fix; its message says what is wrong and how to fix it."""


def unknown_choice(kind: str, name: str, available: Iterable[str], how: str = "") -> OPDError:
    """Build the error for an unknown component name, listing the available options."""
    options = ", ".join(sorted(available)) or "(none installed)"
    hint = f" {how}" if how else ""
    return OPDError(f"Unknown {kind} '{name}'. Available: {options}.{hint}")
