"""``sampler=vllm``: the student samples with a vLLM engine that follows its weights."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from opd_core import (
    GenerationParams,
    Generator,
    OPDError,
    Prompt,
    RolloutBatch,
    RolloutPrefetcher,
    hookimpl,
)
from opd_core.api import (
    EpisodeRunner,
    Generated,
    RunContext,
    SampledTurn,
    TurnRequest,
    eos_ids,
    rollout_batch,
)
from opd_vllm.engine import EngineOptions, running_engines, start_engine, stop_engine
from opd_vllm.generation import VLLMGenerator, sample, sample_turns
from opd_vllm.prefetch import EnginePrefetcher
from opd_vllm.weights import WeightSync

log = logging.getLogger("opd_core.vllm")


class VLLMSampler:
    """Samples completions from the current student weights with vLLM.

    The engine starts from the student's config and tokenizer with placeholder weights and,
    before each sampling call (and each student evaluation), receives the student's weights
    when they changed since the last call (:class:`opd_vllm.weights.WeightSync`). The sampler's
    per-token log-probabilities are vLLM's, at the sampling temperature (``processed_logprobs``:
    after temperature and ``top_p``, i.e. of the distribution actually sampled). With an
    ``environment`` it samples episodes (:class:`opd_core.api.EpisodeRunner`): each turn sends
    every live episode's whole token history as a ``TokensPrompt`` and reads back the sampled
    ids and their log-probabilities, seeded per episode and turn.
    """

    def __init__(
        self,
        top_p: float = 1.0,
        dtype: str = "auto",
        engine: Mapping[str, Any] | None = None,
    ) -> None:
        """``engine``: the :class:`opd_vllm.engine.EngineOptions` fields (``sampler.engine.*``)."""
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        self.top_p = top_p
        self.options = EngineOptions(dtype=dtype, **(engine or {}))
        self.llm: Any = None

    def setup(self, ctx: RunContext) -> None:
        self.student = ctx.student
        self.params = GenerationParams(
            max_new_tokens=ctx.config.train.max_new_tokens,
            temperature=ctx.config.train.temperature,
            top_p=self.top_p,
        )
        self.stop_ids = eos_ids(self.student.model, self.student.tokenizer)
        self._folder = tempfile.TemporaryDirectory(prefix="opd-vllm-student-")
        export_shape(self.student.model, self.student.tokenizer, Path(self._folder.name))
        self.llm = start_engine(
            self._folder.name,
            "student",
            load_format="dummy",  # the real weights arrive with the first sync
            logprobs_mode="processed_logprobs",
            **self.options.engine_kwargs(ctx.device, ctx.seed),
        )
        self.sync = WeightSync(self.llm)
        self.episodes = EpisodeRunner.for_run(
            ctx, self.params.max_new_tokens, max_length=self.options.max_model_len
        )

    def sync_weights(self) -> bool:
        """Push the student's weights into the engine if they changed; return whether it did."""
        return self.sync(self.student.model)

    @hookimpl
    def opd_sample_rollouts(
        self, prompts: Sequence[Prompt], samples_per_prompt: int
    ) -> RolloutBatch:
        self.sync_weights()
        if self.episodes is not None:
            seeds = self.prompt_seeds(len(prompts) * samples_per_prompt, 1)
            return self.episodes.run(
                prompts, samples_per_prompt, lambda requests: self.turns(requests, seeds)
            )
        generated, logprobs_BC = sample(
            self.llm,
            "student",
            self.student.tokenizer,
            prompts,
            samples_per_prompt,
            self.params,
            self.stop_ids,
            self.prompt_seeds(len(prompts), samples_per_prompt),
        )
        return self.rollouts(prompts, samples_per_prompt, generated, logprobs_BC)

    def turns(self, requests: Sequence[TurnRequest], seeds: Sequence[int]) -> list[SampledTurn]:
        """One turn of each live episode from the engine (``seeds``: one per episode)."""
        return sample_turns(self.llm, "student", requests, self.params, self.stop_ids, seeds)

    def prompt_seeds(self, count: int, samples_per_prompt: int) -> list[int]:
        """One seed per prompt from the run's RNG: reproducible, and exact on resume."""
        return torch.randint(0, 2**31 - samples_per_prompt, (count,)).tolist()

    def rollouts(
        self,
        prompts: Sequence[Prompt],
        samples_per_prompt: int,
        generated: Generated,
        logprobs_BC: torch.Tensor | None,
    ) -> RolloutBatch:
        """The rollout batch of a sampling call (decoded in the calling thread)."""
        assert logprobs_BC is not None
        logprobs_BT = torch.cat([torch.zeros(generated.prompt_ids_BP.shape), logprobs_BC], dim=1)
        return rollout_batch(
            prompts, samples_per_prompt, generated, logprobs_BT, self.student.tokenizer
        )

    @hookimpl
    def opd_rollout_prefetcher(self) -> RolloutPrefetcher | None:
        """``train.overlap``: the engine samples ahead in a background thread, its weights synced
        before each update. vLLM keeps its forward state per process, so no other vLLM engine
        may run in this process meanwhile (a ``teacher=vllm``)."""
        others = running_engines() - 1
        if others > 0:
            raise OPDError(
                f"train.overlap=true with sampler=vllm cannot run beside {others} other vLLM "
                "engine(s) in this process (e.g. teacher=vllm): vLLM's forward state is "
                "per process, so two engines must not run at once; use teacher=hf or "
                "teacher=remote, or set train.overlap=false."
            )
        return EnginePrefetcher(self)

    @hookimpl
    def opd_eval_generator(self, role: str) -> Generator | None:
        if role != "student":
            return None
        return VLLMGenerator(
            "student", self.llm, self.student.tokenizer, self.stop_ids, before=self.sync_weights
        )

    def close(self) -> None:
        """Release the engine and its folder."""
        if self.llm is not None:
            stop_engine(self.llm)
            self.llm = None
        if hasattr(self, "_folder"):
            self._folder.cleanup()


def export_shape(model: Any, tokenizer: Any, folder: Path) -> None:
    """Write what a vLLM engine needs to build the student without its weights: the (base)
    model's config, its generation config and the tokenizer."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.config.save_pretrained(folder)
    if getattr(base, "generation_config", None) is not None:
        base.generation_config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
