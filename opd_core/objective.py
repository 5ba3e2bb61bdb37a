"""An objective: a loss, and the advantage function it weights tokens by when it reads any.

``objective=<name>`` picks both (``objective=opd``: ``loss=importance_sampling`` with
``advantage=reverse_kl``); ``loss=<name>`` alone picks a loss and no advantage function. A loss
says what it makes of advantages with a ``uses_advantages`` class attribute:

- ``False``: it reads only which tokens are completion tokens (the distribution losses, whose
  signal is the divergence at each position). An advantage function beside it would be
  computed and ignored, so the run refuses one.
- ``True``: it weights every token by its advantage (``importance_sampling``); the run refuses
  to start without an advantage function.
- ``"optional"``: it weights tokens by their advantages when an advantage function is
  configured, and every token by 1 otherwise (``cross_entropy``: SFT without one,
  advantage-weighted log-likelihood with one).

Without an advantage function the loop builds the step's :class:`~opd_core.types.Advantages`
itself (:func:`completion_advantages`): the completion mask, each of its tokens weighted 1. A
loss without the attribute is taken as ``"optional"``; the run warns when an advantage function
is configured beside it, since nothing says the loss reads it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from opd_core.errors import OPDError
from opd_core.types import Advantages, RolloutBatch, TeacherScores

if TYPE_CHECKING:
    import torch

log = logging.getLogger("opd_core")

USES = (False, True, "optional")
"""The values of a loss's ``uses_advantages``."""


def uses_advantages(loss: Any, loss_name: str) -> bool | str | None:
    """The loss's ``uses_advantages`` (``None`` when it does not say); a bad value is named."""
    value = getattr(loss, "uses_advantages", None)
    if value is None or isinstance(value, bool) or value == "optional":
        return value
    raise OPDError(
        f"loss '{loss_name}' declares uses_advantages={value!r}; a loss declares True (it "
        "weights tokens by advantages), False (it ignores them) or 'optional'."
    )


def check_objective(
    loss: Any, loss_name: str, advantage_name: str | None, advantages: Sequence[str]
) -> None:
    """Refuse an advantage function the loss would ignore, and a loss that weights tokens by
    advantages with none to weight them by; ``advantages`` are the registered names."""
    uses = uses_advantages(loss, loss_name)
    if uses is False and advantage_name is not None:
        raise OPDError(
            f"loss={loss_name} does not read advantages, so advantage={advantage_name} would be "
            "computed and ignored; drop the advantage (~advantage if an objective set it), or "
            "choose a loss that weights tokens by advantages, such as objective=opd."
        )
    if uses is True and advantage_name is None:
        raise OPDError(
            f"loss={loss_name} weights every token by its advantage but no advantage function "
            f"is configured; choose an objective that names one (objective=opd) or set "
            f"advantage=<name> ({', '.join(advantages) or 'none installed'})."
        )
    if uses is None and advantage_name is not None:
        log.warning(
            "loss=%s does not say whether it reads advantages (uses_advantages); "
            "advantage=%s is computed and passed to it.",
            loss_name,
            advantage_name,
        )


def completion_advantages(rollouts: RolloutBatch) -> Advantages:
    """A step's advantages without an advantage function: the completion tokens, each 1."""
    mask_BT = rollouts.completion_mask_BT.float()
    return Advantages(advantages_BT=mask_BT.clone(), mask_BT=mask_BT)


def step_advantages(
    hook: Any,
    rollouts: RolloutBatch,
    scores: TeacherScores | None,
    rewards_B: torch.Tensor | None,
    configured: bool,
) -> Advantages:
    """The configured advantage function's advantages (``opd_compute_advantages``), or with
    none configured, :func:`completion_advantages`."""
    if not configured:
        return completion_advantages(rollouts)
    advantages = hook.opd_compute_advantages(rollouts=rollouts, scores=scores, rewards_B=rewards_B)
    if advantages is None:
        raise OPDError(
            "The configured advantage function returned no advantages (opd_compute_advantages "
            "answered None); check that its plugin is enabled."
        )
    return advantages
