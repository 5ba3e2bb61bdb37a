"""Which eval metrics a learning curve draws, and on which panel.

Rates (every value between 0 and 1: accuracy, pass@k, IF-eval's accuracies) share one panel.
Counts are never drawn: by name (``examples``, ``*_examples``, ``*_count``, ``*_problems``,
``n_*``, ``num_*``) or by value (the same whole number above 1 at every evaluation, such as a
number of prompts); nor are standard errors (``*_stderr``). Any other metric (a perplexity, a
length) gets a panel per family (its name up to the last ``/``) and scale (order of magnitude),
so that a metric in the hundreds never flattens one below 1.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

RATES = "rates (0-1)"
"""The panel every rate is drawn on."""
COUNT_NAME = re.compile(r"(^|_)(examples|count|problems)$|^(n|num)_")
SPREAD_NAME = re.compile(r"(^|_)stderr$")


def leaf(metric: str) -> str:
    """The last part of a metric's name (``lm_eval/gsm8k/examples`` -> ``examples``)."""
    return metric.rpartition("/")[2]


def is_count(metric: str, values: Sequence[float]) -> bool:
    """A number of things rather than a score: by name, or one whole number above 1 at every
    evaluation."""
    if COUNT_NAME.search(leaf(metric)):
        return True
    first = values[0] if values else 0.0
    return first > 1 and float(first).is_integer() and all(v == first for v in values)


def is_rate(values: Sequence[float]) -> bool:
    """Every value between 0 and 1."""
    return all(0.0 <= v <= 1.0 for v in values)


def panels(values: Mapping[str, Sequence[float]]) -> dict[str, list[str]]:
    """The metrics to draw (``values``: every value a metric took, teacher included), by panel
    title: :data:`RATES` first, then one panel per family and scale; counts and standard errors
    are left out. Each panel keeps the metrics' order."""
    found: dict[str, list[str]] = {}
    for metric, seen in values.items():
        if not seen or is_count(metric, seen) or SPREAD_NAME.search(leaf(metric)):
            continue
        if is_rate(seen):
            title = RATES
        else:
            family = metric.rpartition("/")[0] or metric
            scale = math.floor(math.log10(max(abs(v) for v in seen) or 1.0))
            title = f"{family} (~1e{scale})"
        found.setdefault(title, []).append(metric)
    return dict(sorted(found.items(), key=lambda item: item[0] != RATES))
