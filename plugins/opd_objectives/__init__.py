"""Advantage functions and losses: on-policy distillation, its distribution-matching variants,
and the RL and SFT baselines it is compared with."""

from __future__ import annotations

from opd_core import hookimpl
from opd_core.registry import Registry
from opd_objectives.distribution import (
    EntropyAwareKL,
    ForwardKL,
    GeneralizedJSD,
    TopKReverseKL,
    TruncatedReverseKL,
)
from opd_objectives.grpo import GRPO
from opd_objectives.importance_sampling import ImportanceSampling
from opd_objectives.mixed import RewardPlusKL
from opd_objectives.reverse_kl import ReverseKL
from opd_objectives.supervised import CrossEntropy, Uniform


@hookimpl
def opd_register_components(registry: Registry) -> None:
    registry.add("advantage", "reverse_kl", ReverseKL)
    registry.add("advantage", "grpo", GRPO)
    registry.add("advantage", "mixed", RewardPlusKL)
    registry.add("advantage", "uniform", Uniform)
    registry.add("loss", "importance_sampling", ImportanceSampling)
    registry.add("loss", "forward_kl", ForwardKL)
    registry.add("loss", "jsd", GeneralizedJSD)
    registry.add("loss", "reverse_kl_topk", TopKReverseKL)
    registry.add("loss", "reverse_kl_truncated", TruncatedReverseKL)
    registry.add("loss", "entropy_aware_kl", EntropyAwareKL)
    registry.add("loss", "cross_entropy", CrossEntropy)
