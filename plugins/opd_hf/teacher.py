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
    check_same_rendering,
    check_same_vocabulary,
    gather_logprobs,
    load_model,
    next_token_logits,
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
        self.check_template = check_template

    def setup(self, ctx: RunContext) -> None:
        self.loaded = load_model(ctx.hook, self.spec, "teacher", ctx.device)
        self.loaded.model.eval().requires_grad_(False)
        check_same_vocabulary(ctx.student.tokenizer, self.loaded.tokenizer)
        if self.check_template:
            check_same_rendering(ctx.student.tokenizer, self.loaded.tokenizer, TEMPLATE_PROBE)

    @hookimpl
    @torch.no_grad()
    def opd_score_rollouts(self, rollouts: RolloutBatch, top_k: int) -> TeacherScores:
        model = self.loaded.model
        device = next(model.parameters()).device
        logprobs, topk_ids, topk_lps = [], [], []
        for start in range(0, rollouts.batch_size, self.batch_size):
            rows = slice(start, start + self.batch_size)
            ids_BT = rollouts.input_ids_BT[rows].to(device)
            attention_BT = rollouts.attention_mask_BT[rows].to(device)
            logits_BSV = next_token_logits(model, ids_BT, attention_BT, first=rollouts.prompt_len)
            logprobs.append(gather_logprobs(logits_BSV, ids_BT).cpu())
            if top_k > 0:
                ids_BTK, lps_BTK = topk_logprobs(logits_BSV, top_k)
                topk_ids.append(ids_BTK.cpu())
                topk_lps.append(lps_BTK.cpu())
        mask_BT = rollouts.completion_mask_BT
        return TeacherScores(
            logprobs_BT=torch.cat(logprobs) * mask_BT,
            topk_ids_BTK=torch.cat(topk_ids) if topk_ids else None,
            topk_logprobs_BTK=torch.cat(topk_lps) * mask_BT.unsqueeze(-1) if topk_lps else None,
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
