"""lm-eval's nested results as flat ``lm_eval/<task>/<metric>`` numbers."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

PREFIX = "lm_eval"


def flatten_results(results: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """``simple_evaluate(...)["results"]`` as ``{"lm_eval/<task>/<metric>": value}``.

    lm-eval keys a metric ``"<metric>,<filter>"``; the default filter ``none`` is dropped, any
    other becomes a suffix (``lm_eval/gsm8k/exact_match/strict-match``). Standard errors keep
    their own keys (``acc_stderr``); values that are not finite numbers (``"N/A"`` when no
    standard error was computed) are left out. ``sample_len`` becomes ``examples``.
    """
    flat: dict[str, float] = {}
    for task, entry in results.items():
        for key, value in entry.items():
            if key == "sample_len":
                name = "examples"
            elif "," in key:
                metric, filter_name = key.split(",", 1)
                name = metric if filter_name == "none" else f"{metric}/{filter_name}"
            else:
                continue  # alias, name
            if is_number(value):
                flat[f"{PREFIX}/{task}/{name}"] = float(value)
    return flat


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool, not ``"N/A"``)."""
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )
