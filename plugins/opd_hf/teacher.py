"""The teacher scorer on ``transformers``: one batched forward over prompt + completion, its LM
head on the completion positions only."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from opd_core import Generator, RolloutBatch, TeacherScores, hookimpl
from opd_core.api import (
    TEMPLATE_PROBE,
    LoadedModel,
    ModelShape,
    ModelSpec,
    RunContext,
    autocast,
    check_same_rendering,
    check_same_vocabulary,
    gather_logprobs,
    load_model,
    next_token_logits,
    padding_share,
    plan_micro_batches,
    topk_logprobs,
)
from opd_hf.generation import HFGenerator


class HFTeacher:
    """Scores sampled tokens with a frozen ``transformers`` model."""

    def __init__(
        self, model: Mapping[str, Any], batch_size: int = 32, check_template: bool = True
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.spec = ModelSpec(**model)
        self.batch_size = batch_size
        self.precision = "fp32"
        """``train.precision`` as resolved for the run (set in ``setup``)."""
        self.check_template = check_template

    def setup(self, ctx: RunContext) -> None:
        self.loaded = load_model(ctx.hook, self.spec, "teacher", ctx.device)
        self.precision = ctx.precision
        self.loaded.model.eval().requires_grad_(False)
        check_same_vocabulary(ctx.student.tokenizer, self.loaded.tokenizer)
        if self.check_template:
            check_same_rendering(ctx.student.tokenizer, self.loaded.tokenizer, TEMPLATE_PROBE)

    @hookimpl
    @torch.no_grad()
    def opd_score_rollouts(self, rollouts: RolloutBatch, top_k: int) -> TeacherScores:
        """The teacher's log-probabilities (and top-k) of the sampled tokens, ``batch_size``
        sequences per forward, grouped by length and trimmed to the columns they use."""
        model = self.loaded.model
        device = next(model.parameters()).device
        B, T = rollouts.input_ids_BT.shape
        logprobs_BT = torch.zeros((B, T), dtype=torch.float32)
        topk_ids_BTK = torch.zeros((B, T, top_k), dtype=torch.long)
        topk_lps_BTK = torch.zeros((B, T, top_k), dtype=torch.float32)
        mask_BT = rollouts.attention_mask_BT
        plan = plan_micro_batches(mask_BT, self.batch_size, rollouts.prompt_len)
        for part in plan:
            micro = rollouts.select(part.rows_R, part.columns)
            ids_RU = micro.input_ids_BT.to(device)
            with autocast(self.precision, device):
                logits_RSV = next_token_logits(
                    model, ids_RU, micro.attention_mask_BT.to(device), first=micro.prompt_len
                )
            where = (part.rows_R, part.columns)
            logprobs_BT[where] = gather_logprobs(logits_RSV, ids_RU).float().cpu()
            if top_k > 0:
                ids_RUK, lps_RUK = topk_logprobs(logits_RSV, top_k)
                topk_ids_BTK[where] = ids_RUK.cpu()
                topk_lps_BTK[where] = lps_RUK.float().cpu()
        completion_BT = rollouts.completion_mask_BT
        return TeacherScores(
            logprobs_BT=logprobs_BT * completion_BT,
            topk_ids_BTK=topk_ids_BTK if top_k > 0 else None,
            topk_logprobs_BTK=topk_lps_BTK * completion_BT.unsqueeze(-1) if top_k > 0 else None,
            metrics={"padding/score": padding_share(mask_BT, plan)},
        )

    @hookimpl
    def opd_model_shape(self, role: str) -> ModelShape | None:
        return ModelShape.of(self.loaded.model) if role == "teacher" else None

    @hookimpl
    def opd_eval_generator(self, role: str) -> Generator | None:
        if role != "teacher":
            return None
        return HFGenerator("teacher", self.loaded.model, self.loaded.tokenizer, self.batch_size)

    @hookimpl
    def opd_eval_model(self, role: str) -> LoadedModel | None:
        return self.loaded if role == "teacher" else None
