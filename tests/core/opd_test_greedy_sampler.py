"""A test plugin: the HF sampler decoding greedily, so that runs split over any number of
processes sample exactly the same completions (``plugins=[opd_test_greedy_sampler]``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from opd_core import Prompt, hookimpl
from opd_core.registry import Registry
from opd_core.rollouts import Generated
from opd_hf.generation import generate
from opd_hf.sampler import HFSampler


class GreedySampler(HFSampler):
    """Greedy completions; the sampler log-probabilities stay at the training temperature."""

    def _generate(self, prompts: Sequence[Prompt]) -> Generated:
        greedy = replace(self.params, temperature=0.0)
        return generate(self.student.model, self.student.tokenizer, prompts, greedy, 64)


@hookimpl
def opd_register_components(registry: Registry) -> None:
    registry.add("sampler", "greedy_test", GreedySampler)
