"""Micro-batches grouped by length: rows of similar length share a forward pass, and each pass
runs only over the columns its rows use.

A rollout batch is laid out as left-padded prompts then right-padded completions, every row as
wide as the longest. Cut into micro-batches in batch order, a short row pays for the longest
row of its micro-batch; sorted by length first, and with the columns no row of the micro-batch
uses cut away, the forward passes follow the real tokens. Every row is still computed exactly
once, and a row's result does not depend on its neighbours (the attention mask keeps padding
out), so a token-summed loss and its gradient are those of batch-order micro-batches up to
floating-point rounding (a test).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MicroBatch:
    """The rows of one micro-batch and the columns they use."""

    rows_R: torch.Tensor
    """Indices of the micro-batch's rows in the batch. (R,) int64."""
    columns: slice
    """The columns any of these rows attends to (``start`` counts the left padding cut)."""

    def width(self) -> int:
        return int(self.columns.stop - self.columns.start)


def plan_micro_batches(
    attention_mask_BT: torch.Tensor, size: int, prompt_len: int, by_length: bool = True
) -> list[MicroBatch]:
    """Micro-batches of at most ``size`` rows: rows sorted by their real length (stable, so
    equal lengths keep batch order) when ``by_length``, else in batch order; each micro-batch
    trimmed to the columns its rows use (never past ``prompt_len``, where completions start)."""
    if size <= 0:
        raise ValueError(f"micro-batch size must be positive, got {size}")
    B, T = attention_mask_BT.shape
    mask_BT = attention_mask_BT.bool().cpu()
    order_B = torch.arange(B)
    if by_length:
        order_B = torch.sort(mask_BT.sum(1), stable=True).indices
    plan = []
    for start in range(0, B, size):
        rows_R = order_B[start : start + size]
        used_T = mask_BT[rows_R].any(0)
        if not bool(used_T.any()):
            plan.append(MicroBatch(rows_R, slice(0, T)))
            continue
        columns_U = used_T.nonzero().squeeze(-1)
        first = min(int(columns_U[0]), prompt_len)
        plan.append(MicroBatch(rows_R, slice(first, max(int(columns_U[-1]) + 1, first + 1))))
    return plan


def padding_share(attention_mask_BT: torch.Tensor, plan: list[MicroBatch]) -> float:
    """The share of the positions the forward passes of ``plan`` compute that are padding."""
    computed = sum(len(mb.rows_R) * mb.width() for mb in plan)
    real = int(attention_mask_BT.bool().sum())
    return 1.0 - real / computed if computed else 0.0
