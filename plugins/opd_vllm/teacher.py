"""``teacher=vllm``: the teacher's per-token log-probabilities from vLLM's ``prompt_logprobs``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from opd_core import Generator, OPDError, RolloutBatch, TeacherScores, hookimpl
from opd_core.api import (
    TEMPLATE_PROBE,
    ModelShape,
    ModelSpec,
    RunContext,
    check_same_rendering,
    check_same_vocabulary,
    eos_ids,
)
from opd_vllm.engine import EngineOptions, generate, import_vllm, start_engine, stop_engine
from opd_vllm.generation import VLLMGenerator, unpadded_rows
from opd_vllm.logprobs import prompt_logprobs


class VLLMTeacher:
    """Scores sampled tokens with a frozen model served by a vLLM engine in this process.

    Each rollout goes to the engine unpadded, as token ids, with ``prompt_logprobs=top_k``: vLLM
    returns the log-probability of every token given its prefix (and the ``top_k`` most likely
    tokens), laid out here exactly as ``teacher=hf`` lays out its scores.
    """

    def __init__(
        self,
        model: Mapping[str, Any],
        check_template: bool = True,
        max_logprobs: int = 20,
        engine: Mapping[str, Any] | None = None,
    ) -> None:
        """``engine``: the :class:`opd_vllm.engine.EngineOptions` fields (``teacher.engine.*``)
        but ``dtype``, which is ``model.dtype``."""
        if max_logprobs < 0:
            raise ValueError(f"max_logprobs must be >= 0, got {max_logprobs}")
        self.spec = ModelSpec(**model)
        self.check_template = check_template
        self.max_logprobs = max_logprobs
        self.options = EngineOptions(dtype=self.spec.dtype, **(engine or {}))
        self.llm: Any = None

    def setup(self, ctx: RunContext) -> None:
        if "://" in self.spec.path:
            raise OPDError(
                f"teacher=vllm loads weights itself and cannot load '{self.spec.path}' (a plugin "
                "address); point teacher.model.path at a save_pretrained folder or a Hub id, or "
                "use teacher=hf for it."
            )
        self.tokenizer = load_tokenizer(self.spec)
        check_same_vocabulary(ctx.student.tokenizer, self.tokenizer)
        if self.check_template:
            check_same_rendering(ctx.student.tokenizer, self.tokenizer, TEMPLATE_PROBE)
        self.llm = start_engine(
            self.spec.path,
            "teacher",
            revision=self.spec.revision,
            trust_remote_code=self.spec.trust_remote_code,
            max_logprobs=self.max_logprobs,
            **self.options.engine_kwargs(ctx.device, ctx.seed),
        )
        self.shape = shape_of_config(self.spec)

    @hookimpl
    def opd_score_rollouts(self, rollouts: RolloutBatch, top_k: int) -> TeacherScores:
        if top_k > self.max_logprobs:
            raise OPDError(
                f"The objective asks the teacher for the top {top_k} tokens but teacher=vllm "
                f"returns at most {self.max_logprobs}; set teacher.max_logprobs={top_k}."
            )
        from vllm.inputs import TokensPrompt

        vllm = import_vllm()
        rows = unpadded_rows(rollouts.input_ids_BT, rollouts.attention_mask_BT)
        params = vllm.SamplingParams(
            max_tokens=1,
            temperature=0.0,
            prompt_logprobs=top_k,
            flat_logprobs=True,
            detokenize=False,
        )
        requests = [TokensPrompt(prompt_token_ids=row) for row in rows]
        outputs = generate(self.llm, "teacher", requests, params)
        shape_BT = rollouts.input_ids_BT.shape
        logprobs_BT = torch.zeros(shape_BT)
        topk_ids_BTK = torch.zeros((*shape_BT, top_k), dtype=torch.long)
        topk_logprobs_BTK = torch.zeros((*shape_BT, top_k))
        starts = (~rollouts.attention_mask_BT.bool()).long().cumprod(1).sum(1).tolist()
        for b, (row, out) in enumerate(zip(rows, outputs, strict=True)):  # per sequence
            lps_S, ids_SK, lps_SK = prompt_logprobs(out.prompt_logprobs, row, top_k)
            span = slice(starts[b] + 1, starts[b] + len(row))  # token 0 has no score
            logprobs_BT[b, span] = lps_S
            topk_ids_BTK[b, span] = ids_SK
            topk_logprobs_BTK[b, span] = lps_SK
        completion_BT = rollouts.completion_mask_BT
        return TeacherScores(
            logprobs_BT=logprobs_BT * completion_BT,
            topk_ids_BTK=topk_ids_BTK if top_k else None,
            topk_logprobs_BTK=topk_logprobs_BTK * completion_BT[..., None] if top_k else None,
        )

    @hookimpl
    def opd_model_shape(self, role: str) -> ModelShape | None:
        return self.shape if role == "teacher" else None

    @hookimpl
    def opd_eval_generator(self, role: str) -> Generator | None:
        if role != "teacher":
            return None
        stop_ids = eos_ids(None, self.tokenizer) + self._generation_eos()
        return VLLMGenerator("teacher", self.llm, self.tokenizer, sorted(set(stop_ids)))

    def _generation_eos(self) -> list[int]:
        """The EOS ids of the served model's generation config."""
        config = self.llm.llm_engine.model_config.hf_config
        value = getattr(config, "eos_token_id", None)
        return [value] if isinstance(value, int) else list(value or [])

    def close(self) -> None:
        """Release the engine."""
        if self.llm is not None:
            stop_engine(self.llm)
            self.llm = None


def load_tokenizer(spec: ModelSpec) -> Any:
    """The teacher's tokenizer (left padding, like every tokenizer opd-core loads)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(
            spec.path,
            revision=spec.revision,
            trust_remote_code=spec.trust_remote_code,
            padding_side="left",
        )
    except (OSError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
        raise OPDError(
            f"The teacher tokenizer at {spec.path} could not be loaded ({first_line}); point "
            "teacher.model.path at a save_pretrained folder (with its tokenizer) or a Hub id."
        ) from err


def shape_of_config(spec: ModelSpec) -> ModelShape:
    """The teacher's shape for FLOPs, measured on a weightless (meta-device) copy."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(
        spec.path, revision=spec.revision, trust_remote_code=spec.trust_remote_code
    )
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=spec.trust_remote_code)
    return ModelShape.of(model)
