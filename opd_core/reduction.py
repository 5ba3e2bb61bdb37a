"""How a step metric is combined over training processes, declared by whoever produces it.

A metric is a number; its producer says how the ranks' values merge by the number's type:
``Sum(x)`` for counts (tokens, sequences, FLOPs), ``Max(x)`` for a maximum or a duration (the
slowest rank sets the pace), ``Min(x)`` for a minimum. A plain ``float`` is averaged over the
ranks that report it. They are ``float`` subclasses, so a producer that declares nothing, a JSON
writer and a tracker all see ordinary numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class Sum(float):
    """Added over processes: a count."""


class Max(float):
    """The largest over processes: a maximum, or seconds spent (the slowest rank)."""


class Min(float):
    """The smallest over processes: a minimum."""


def combine(values: Sequence[float]) -> float:
    """One value from every rank's, as the first value's type declares (default: the mean)."""
    kind = type(values[0])
    if kind is Sum:
        return float(sum(values))
    if kind is Max:
        return float(max(values))
    if kind is Min:
        return float(min(values))
    if all(v == values[0] for v in values):
        return values[0]  # the same on every rank (step, lr, grad_norm): kept as is (ints too)
    return sum(values) / len(values)


def combine_rank_metrics(per_rank: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Merge per-rank step metrics key by key (:func:`combine`); a key some ranks lack is merged
    over the ranks that report it."""
    keys = sorted({k for m in per_rank for k in m})
    return {key: combine([m[key] for m in per_rank if key in m]) for key in keys}


def plain(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """``metrics`` with declared values turned back into plain floats (one process)."""
    return {k: float(v) if isinstance(v, (Sum, Max, Min)) else v for k, v in metrics.items()}
