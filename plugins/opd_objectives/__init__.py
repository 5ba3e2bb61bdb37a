"""Advantage functions and losses: reverse-KL on-policy distillation, importance sampling."""

from __future__ import annotations

from opd_core import hookimpl
from opd_core.registry import Registry
from opd_objectives.importance_sampling import ImportanceSampling
from opd_objectives.reverse_kl import ReverseKL


@hookimpl
def opd_register_components(registry: Registry) -> None:
    registry.add("advantage", "reverse_kl", ReverseKL)
    registry.add("loss", "importance_sampling", ImportanceSampling)
