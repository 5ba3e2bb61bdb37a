"""``sampler=hf`` with ``train.overlap``: sampling ahead from a frozen copy of the student."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from opd_core import GenerationParams, Prompt, RolloutBatch
from opd_core.api import (
    EpisodeRunner,
    Generated,
    LoadedModel,
    SampledTurn,
    TurnRequest,
    completion_mask,
    completion_pad_id,
    encode_prompts,
    eos_ids,
    on_side_stream,
    sampled_rollout_batch,
)
from opd_hf.generation import decode_batches, generate_turns


def frozen_copy(model: Any) -> Any:
    """A copy of ``model`` for sampling (eval mode, no gradients) whose trainable weights are
    its own and whose other tensors (frozen weights, e.g. a LoRA student's base model, and
    buffers) are ``model``'s, shared rather than copied."""
    shared = {id(t): t for t in (*model.parameters(), *model.buffers()) if not t.requires_grad}
    frozen = copy.deepcopy(model, memo=shared)
    frozen.eval()
    frozen.requires_grad_(False)
    return frozen


class SnapshotPrefetcher:
    """Samples from a copy of the student's weights taken when :meth:`prepare` is called.

    The copy holds the student's trainable weights a second time (the frozen ones are shared);
    each ``prepare`` copies them over (``last_copy_s``, also in the step's ``time/prefetch_s``).
    Tokens are drawn from a generator seeded from the run's RNG in ``prepare``, so a run is
    reproducible whatever the threads do; prompts are tokenized and completions decoded in the
    loop's thread. With an environment the whole episodes run in the background thread (the
    environment's hooks included), tokenized and decoded by a copy of the tokenizer.
    """

    def __init__(
        self,
        student: LoadedModel,
        params: GenerationParams,
        batch_size: int,
        episodes: EpisodeRunner | None = None,
    ) -> None:
        self.tokenizer = student.tokenizer
        self.params = params
        self.batch_size = batch_size
        self.copy = frozen_copy(student.model)
        live = dict(student.model.named_parameters())
        self._pairs = [
            (tensor, live[name])
            for name, tensor in self.copy.named_parameters()
            if live[name].requires_grad
        ]
        self.device: torch.device = next(student.model.parameters()).device
        self.stop_ids = eos_ids(student.model, student.tokenizer)
        self.pad_id = completion_pad_id(student.tokenizer)
        self.last_copy_s = 0.0
        self.episodes = (
            None if episodes is None else episodes.with_tokenizer(copy.deepcopy(self.tokenizer))
        )
        """The episode loop, with its own copy of the tokenizer: it runs in the background."""

    def refresh(self) -> None:
        """Copy the student's trainable weights into the copy."""
        started = time.perf_counter()
        with torch.no_grad():
            torch._foreach_copy_([c for c, _ in self._pairs], [w for _, w in self._pairs])
        self.last_copy_s = time.perf_counter() - started

    def prepare(
        self, prompts: Sequence[Prompt], samples_per_prompt: int
    ) -> Callable[[], Callable[[], RolloutBatch]]:
        self.refresh()
        seed = int(torch.randint(0, 2**62, ()).item())
        generator = torch.Generator(self.device).manual_seed(seed)
        if self.episodes is not None:
            return on_side_stream(
                self._episodes(self.episodes, prompts, samples_per_prompt, generator),
                self.device,
            )
        expanded = tuple(p for p in prompts for _ in range(samples_per_prompt))
        prompt_ids_BP, prompt_mask_BP = encode_prompts(self.tokenizer, expanded)

        def sample() -> Callable[[], RolloutBatch]:
            ids_BC, logprobs_BC = decode_batches(
                self.copy,
                prompt_ids_BP,
                prompt_mask_BP,
                self.params,
                self.batch_size,
                self.stop_ids,
                self.pad_id,
                generator,
            )

            def finish() -> RolloutBatch:
                generated = Generated(
                    prompt_ids_BP=prompt_ids_BP,
                    prompt_mask_BP=prompt_mask_BP,
                    completion_ids_BC=ids_BC,
                    completion_mask_BC=completion_mask(ids_BC, self.stop_ids),
                    completion_logprobs_BC=logprobs_BC,
                )
                return sampled_rollout_batch(prompts, samples_per_prompt, generated, self.tokenizer)

            return finish

        return on_side_stream(sample, self.device)

    def _episodes(
        self,
        runner: EpisodeRunner,
        prompts: Sequence[Prompt],
        samples_per_prompt: int,
        generator: torch.Generator,
    ) -> Callable[[], Callable[[], RolloutBatch]]:
        """``sample`` for multi-turn rollouts: the episodes run in the background thread."""

        def turns(requests: Sequence[TurnRequest]) -> list[SampledTurn]:
            return generate_turns(
                self.copy,
                requests,
                self.params,
                self.batch_size,
                self.stop_ids,
                self.pad_id,
                generator,
            )

        def sample() -> Callable[[], RolloutBatch]:
            rollouts = runner.run(prompts, samples_per_prompt, turns)
            return lambda: rollouts

        return sample
