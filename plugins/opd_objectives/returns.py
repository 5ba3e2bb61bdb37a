"""Discounted sums over future tokens, vectorised over the time axis."""

from __future__ import annotations

import torch


def discounted_future_sum(rewards_BT: torch.Tensor, gamma: float) -> torch.Tensor:
    """``out[t] = sum_{k >= t} gamma^(k - t) * rewards[k]`` along the last axis. (B, T).

    Uses ``ceil(log2 T)`` vectorised doubling steps (a parallel scan of the linear recurrence
    ``out[t] = rewards[t] + gamma * out[t + 1]``), so there is no loop over tokens. ``gamma = 0``
    returns the rewards unchanged. ``gamma`` in [0, 1] is the constructors' to check
    (:func:`opd_objectives.requirements.unit_interval`).
    """
    out_BT = rewards_BT.clone()
    if gamma == 0.0:
        return out_BT
    length = rewards_BT.shape[-1]
    offset, factor = 1, gamma
    while offset < length:
        # after this step, out[t] sums rewards[t : t + 2 * offset] with their discounts
        out_BT[..., :-offset] = out_BT[..., :-offset] + factor * out_BT[..., offset:]
        offset, factor = offset * 2, factor * factor
    return out_BT
