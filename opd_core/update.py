"""The update stage's pieces: the optimizer, its learning-rate schedule, the student's forward
pass, gradient accumulation over micro-batches, clipping, and the optimizer step."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from opd_core.distributed import Distributed
from opd_core.errors import OPDError
from opd_core.micro_batches import padding_share, plan_micro_batches
from opd_core.modeling import entropy, gather_logprobs, next_token_logits
from opd_core.precision import autocast
from opd_core.types import Advantages, PolicyOutput, RolloutBatch, TeacherScores


def adamw_implementation(params: Sequence[torch.Tensor], sharded: bool) -> dict[str, bool]:
    """AdamW's fused kernel (one pass over all weights) where torch has one for the weights'
    devices and dtypes, else its multi-tensor ``foreach`` loop; never the per-tensor loop."""
    fusable = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return {"fused": True} if fusable and not sharded else {"foreach": True}


def make_optimizer(
    params: Sequence[torch.Tensor], train: Any, sharded: bool, total_steps: Callable[[], int]
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over ``params`` as ``train`` configures it, and its learning-rate schedule
    (:func:`lr_factor`; ``total_steps`` is read when the schedule runs: the step count is known
    only once the prompt pool is)."""
    optimizer = torch.optim.AdamW(
        params,
        lr=train.lr,
        weight_decay=train.weight_decay,
        betas=train.betas,
        **adamw_implementation(params, sharded=sharded),
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps(), train)
    )
    return optimizer, scheduler


def rescale_learning_rate(
    optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler, lr: float
) -> float | None:
    """Make ``lr`` the schedule's base learning rate, keeping its position in the schedule (a
    run resumed with another ``train.lr``: the state it loaded holds the old one); the old base
    rate if it changed, else ``None``."""
    old = float(scheduler.base_lrs[0])
    if old == lr:
        return None
    for group in optimizer.param_groups:
        group["lr"] = group["lr"] * lr / old
        group["initial_lr"] = lr
    scheduler.base_lrs = [lr for _ in scheduler.base_lrs]
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]  # get_last_lr()
    return old


def step_and_mark_updated(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.step()``, then bump the in-place version counter of every weight it updated.
    The fused AdamW kernel writes the weights without bumping them, and those counters are how
    a weight consumer tells that the student changed (the vLLM sampler's weight sync)."""
    optimizer.step()
    updated = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    torch.autograd.graph.increment_version(updated)


def lr_factor(step: int, total_steps: int, train: Any) -> float:
    """The learning rate of optimizer step ``step`` (0-based) as a fraction of ``train.lr``:
    linear warm-up over ``train.warmup_steps``, then constant or a half cosine down to
    ``train.min_lr_ratio`` at the last step (``train.lr_schedule``)."""
    warmup = train.warmup_steps
    if step < warmup:
        return (step + 1) / warmup
    if train.lr_schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total_steps - 1 - warmup))
    floor = train.min_lr_ratio
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def policy_output(model: Any, rollouts: RolloutBatch) -> PolicyOutput:
    """Current log-probabilities (with gradients) and entropies of a micro-batch, on its
    completion tokens (0 on the prompt: the LM head runs on completion positions only)."""
    logits_BSV = next_token_logits(
        model, rollouts.input_ids_BT, rollouts.attention_mask_BT, first=rollouts.prompt_len
    )
    logprobs_BT = gather_logprobs(logits_BSV, rollouts.input_ids_BT)
    with torch.no_grad():
        entropy_BT = entropy(logits_BSV)
    return PolicyOutput(logprobs_BT=logprobs_BT, entropy_BT=entropy_BT, logits_BSV=logits_BSV)


def clip_gradients(model: Any, max_norm: float) -> float:
    """Clip the global gradient norm to ``max_norm`` (0: no clipping); return the norm before."""
    params = [p for p in model.parameters() if p.grad is not None]
    if not params:
        return 0.0
    limit = max_norm if max_norm > 0 else math.inf
    return float(torch.nn.utils.clip_grad_norm_(params, limit))


def accumulate_gradients(
    model: Any,
    hook: Any,
    dist: Distributed,
    batch: tuple[RolloutBatch, Advantages, TeacherScores | None],
    micro_batch_size: int,
    num_loss_tokens: int,
    sums: dict[str, float],
    precision: str = "fp32",
) -> None:
    """Forward and backward the loss over ``batch`` in micro-batches of ``micro_batch_size``
    sequences grouped by length (:mod:`opd_core.micro_batches`; gradients add up), adding each
    micro-batch's loss, entropy and loss metrics, weighted by its share of the
    ``num_loss_tokens`` of all ranks, into ``sums``, and the share of padding computed into
    ``sums["padding/update"]``.

    With ``precision="bf16"`` the student's forward runs under bf16 autocast; its logits are
    fp32 (:func:`policy_output`), and so are the loss and the backward's weight gradients.

    The loss is scaled by the number of ranks, whose gradients are averaged: the step's gradient
    is the one a single process would get."""
    rollouts, advantages, scores = batch
    device, scale = dist.device, float(dist.world_size)
    plan = plan_micro_batches(rollouts.attention_mask_BT, micro_batch_size, rollouts.prompt_len)
    sums["padding/update"] = sums.get("padding/update", 0.0) + padding_share(
        rollouts.attention_mask_BT, plan
    )
    for index, part in enumerate(plan):
        rows, columns = part.rows_R, part.columns
        micro = rollouts.select(rows, columns).to(device)
        micro_adv = advantages.select(rows, columns).to(device)
        micro_scores = scores.select(rows, columns).to(device) if scores is not None else None
        with dist.no_sync(model, last_micro_batch=index == len(plan) - 1):
            with autocast(precision, device):
                policy = policy_output(model, micro)
            out = hook.opd_compute_loss(
                rollouts=micro,
                policy=policy,
                advantages=micro_adv,
                scores=micro_scores,
                num_loss_tokens=num_loss_tokens,
            )
            if out is None:
                raise OPDError("No loss is configured; set loss=<name>.")
            (out.loss * scale).backward()
        mask_BT = micro_adv.mask_BT
        sums["loss"] = sums.get("loss", 0.0) + float(out.loss.detach()) * scale
        sums["entropy"] = sums.get("entropy", 0.0) + scale * float(
            (policy.entropy_BT * mask_BT).sum() / num_loss_tokens
        )
        for key, value in out.metrics.items():
            weight = scale * int(mask_BT.sum()) / num_loss_tokens
            sums[key] = sums.get(key, 0.0) + value * weight
