"""``sampler=vllm`` with ``train.overlap``: the student's engine samples ahead."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch

from opd_core import GenerationParams, Prompt, RolloutBatch
from opd_core.api import EpisodeRunner, Generated, LoadedModel, SampledTurn, TurnRequest
from opd_vllm.engine import generate
from opd_vllm.generation import collect, make_requests


class EngineSampler(Protocol):
    """What the prefetcher uses of :class:`opd_vllm.sampler.VLLMSampler`."""

    student: LoadedModel
    params: GenerationParams
    stop_ids: list[int]
    llm: Any
    episodes: EpisodeRunner | None

    def sync_weights(self) -> bool: ...

    def turns(self, requests: Sequence[TurnRequest], seeds: Sequence[int]) -> list[SampledTurn]: ...

    def prompt_seeds(self, count: int, samples_per_prompt: int) -> list[int]: ...

    def rollouts(
        self,
        prompts: Sequence[Prompt],
        samples_per_prompt: int,
        generated: Generated,
        logprobs_BC: torch.Tensor | None,
    ) -> RolloutBatch: ...


class EnginePrefetcher:
    """Samples with the sampler's vLLM engine in a background thread.

    ``prepare`` syncs the student's weights into the engine (when they changed), draws the
    prompts' seeds from the run's RNG as ``opd_sample_rollouts`` does, and tokenizes; the
    background thread only runs the engine. Weights are synced in the loop's thread, before the
    update, so the engine holds the weights the rollouts are sampled from until they are done.
    With an environment the whole episodes run in the background thread (the environment's
    hooks included), tokenized and decoded by a copy of the tokenizer.
    """

    def __init__(self, sampler: EngineSampler) -> None:
        self.sampler = sampler
        runner = sampler.episodes
        self.episodes = (
            None
            if runner is None
            else runner.with_tokenizer(copy.deepcopy(sampler.student.tokenizer))
        )

    def prepare(
        self, prompts: Sequence[Prompt], samples_per_prompt: int
    ) -> Callable[[], Callable[[], RolloutBatch]]:
        s = self.sampler
        s.sync_weights()
        if self.episodes is not None:
            runner = self.episodes
            seeds = s.prompt_seeds(len(prompts) * samples_per_prompt, 1)

            def sample_episodes() -> Callable[[], RolloutBatch]:
                rollouts = runner.run(
                    prompts, samples_per_prompt, lambda requests: s.turns(requests, seeds)
                )
                return lambda: rollouts

            return sample_episodes
        requests = make_requests(
            s.student.tokenizer,
            prompts,
            samples_per_prompt,
            s.params,
            s.stop_ids,
            s.prompt_seeds(len(prompts), samples_per_prompt),
        )
        llm = s.llm

        def sample() -> Callable[[], RolloutBatch]:
            outputs = generate(llm, "student", requests.prompts, requests.params)

            def finish() -> RolloutBatch:
                generated, logprobs_BC = collect(requests, outputs)
                return s.rollouts(prompts, samples_per_prompt, generated, logprobs_BC)

            return finish

        return sample
