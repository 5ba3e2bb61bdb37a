"""The student sampler on a ``transformers`` model (:func:`opd_hf.generation.generate`)."""

from __future__ import annotations

from collections.abc import Sequence

from opd_core import (
    GenerationParams,
    Generator,
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
    completion_pad_id,
    eos_ids,
    sampled_rollout_batch,
)
from opd_hf.generation import HFGenerator, generate, generate_turns
from opd_hf.prefetch import SnapshotPrefetcher


class HFSampler:
    """Samples completions from the current student weights.

    The sampler's per-token log-probabilities are those of the decode steps that sampled the
    tokens (at the sampling temperature); no second forward pass runs. With an ``environment``
    it samples episodes (:class:`opd_core.api.EpisodeRunner`), each turn decoded after the
    episode's whole token history.
    """

    def __init__(self, batch_size: int = 64, top_p: float = 1.0) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        self.batch_size = batch_size
        self.top_p = top_p

    def setup(self, ctx: RunContext) -> None:
        self.student = ctx.student
        self.params = GenerationParams(
            max_new_tokens=ctx.config.train.max_new_tokens,
            temperature=ctx.config.train.temperature,
            top_p=self.top_p,
            precision=ctx.precision,
        )
        self.episodes = EpisodeRunner.for_run(ctx, self.params.max_new_tokens)

    @hookimpl
    def opd_sample_rollouts(
        self, prompts: Sequence[Prompt], samples_per_prompt: int
    ) -> RolloutBatch:
        if self.episodes is not None:
            return self.episodes.run(prompts, samples_per_prompt, self._turns)
        expanded = tuple(p for p in prompts for _ in range(samples_per_prompt))
        generated = self._generate(expanded)
        return sampled_rollout_batch(prompts, samples_per_prompt, generated, self.student.tokenizer)

    @hookimpl
    def opd_rollout_prefetcher(self) -> RolloutPrefetcher | None:
        """``train.overlap``: sample from a frozen copy of the student (its trainable weights
        held twice), refreshed before each update."""
        return SnapshotPrefetcher(self.student, self.params, self.batch_size, self.episodes)

    def _turns(self, requests: Sequence[TurnRequest]) -> list[SampledTurn]:
        """One turn of each live episode, from the live student."""
        student = self.student
        return generate_turns(
            student.model,
            requests,
            self.params,
            self.batch_size,
            eos_ids(student.model, student.tokenizer),
            completion_pad_id(student.tokenizer),
        )

    def _generate(self, prompts: Sequence[Prompt]) -> Generated:
        """One completion per prompt, sampled with ``self.params``."""
        return generate(
            self.student.model, self.student.tokenizer, prompts, self.params, self.batch_size
        )

    @hookimpl
    def opd_eval_generator(self, role: str) -> Generator | None:
        if role != "student":
            return None
        return HFGenerator("student", self.student.model, self.student.tokenizer, self.batch_size)
