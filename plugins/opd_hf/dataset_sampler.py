"""Fixed-data rollouts: the task's reference texts as completions (supervised fine-tuning)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from opd_core import OPDError, Prompt, RolloutBatch, RolloutPrefetcher, hookimpl
from opd_core.api import RunContext
from opd_hf.offpolicy import supervised_rollouts
from opd_hf.sampler import HFSampler


class DatasetSamples(HFSampler):
    """Takes each prompt's ``Prompt.reference`` (a document chunk, a chat response) as its
    completion, tokenized with the student tokenizer after the prompt; no model samples.

    The completion mask covers exactly the reference tokens (plus EOS, unless the reference was
    cut at ``train.max_new_tokens``), so ``loss=cross_entropy`` without an advantage function
    (``objective=sft sampler=dataset``) is SFT on them. The rollouts have
    ``sampler_role="data"``: FLOPs accounting charges no sampling. Evaluation still generates
    with the student (``batch_size`` sequences per call).
    """

    def setup(self, ctx: RunContext) -> None:
        environment = getattr(ctx.config, "environment", None)
        if environment is not None:
            raise OPDError(
                f"sampler=dataset trains on fixed reference texts, so it cannot run the "
                f"episodes of environment '{environment.get('name', '?')}'; use "
                "sampler=hf (or teacher_samples for SFT on the teacher's episodes)."
            )
        super().setup(ctx)

    @hookimpl
    def opd_rollout_prefetcher(self) -> RolloutPrefetcher | None:
        """Nothing is sampled, so nothing is sampled ahead (``train.overlap`` is refused)."""
        return None

    @hookimpl
    def opd_sample_rollouts(
        self, prompts: Sequence[Prompt], samples_per_prompt: int
    ) -> RolloutBatch:
        missing = [p.id for p in prompts if p.reference is None]
        if missing:
            raise OPDError(
                f"sampler=dataset trains on each prompt's reference text, but prompt "
                f"'{missing[0]}' ({len(missing)} of {len(prompts)} this step) has none; use a "
                "task that provides them (company_docs, chat with responses) or sampler=hf."
            )
        expanded = tuple(p for p in prompts for _ in range(samples_per_prompt))
        return supervised_rollouts(
            self.student.tokenizer,
            expanded,
            [p.reference or "" for p in expanded],
            group_ids_B=torch.arange(len(prompts)).repeat_interleave(samples_per_prompt),
            max_new_tokens=self.params.max_new_tokens,
            sampler_role="data",
        )
