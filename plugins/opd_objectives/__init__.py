"""Advantage functions and losses: on-policy distillation, its distribution-matching variants,
and the RL and SFT baselines it is compared with.

Its ``objective`` config group pairs them: each ``objective=<name>`` picks a loss and, for a loss
that reads advantages (``uses_advantages``, :mod:`opd_core.objective`), its advantage function.

Registered by ``module:attr`` path, so a run imports (and pulls in torch for) only the ones its
config chooses.
"""

from __future__ import annotations

from typing import Any

from opd_core import hookimpl
from opd_core.api import Registry, store_config_dir

ADVANTAGES = {
    "reverse_kl": "opd_objectives.reverse_kl:ReverseKL",
    "grpo": "opd_objectives.grpo:GRPO",
    "mixed": "opd_objectives.mixed:RewardPlusKL",
}
LOSSES = {
    "importance_sampling": "opd_objectives.importance_sampling:ImportanceSampling",
    "reverse_kl_topk": "opd_objectives.distribution:TopKReverseKL",
    "reverse_kl_truncated": "opd_objectives.distribution:TruncatedReverseKL",
    "entropy_aware_kl": "opd_objectives.distribution:EntropyAwareKL",
    "forward_kl": "opd_objectives.distribution:ForwardKL",
    "jsd": "opd_objectives.distribution:GeneralizedJSD",
    "cross_entropy": "opd_objectives.supervised:CrossEntropy",
}


@hookimpl
def opd_register_components(registry: Registry) -> None:
    for name, path in ADVANTAGES.items():
        registry.add("advantage", name, path)
    for name, path in LOSSES.items():
        registry.add("loss", name, path)


@hookimpl
def opd_register_configs(store: Any) -> None:
    """This plugin's options (``conf/<group>/<option>.yaml``), stored as a third-party
    package's are."""
    store_config_dir(store, "opd_objectives")
