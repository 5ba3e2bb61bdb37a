"""The non-finite guard: a run whose numbers stop being finite ends with one sentence, and no
checkpoint ever holds what it produced.

Each update is checked three times, each check one number the loop has anyway or one cheap pass:

- the loss, summed over the step's micro-batches, before the optimizer step;
- the global gradient norm (clipping computes it), before the optimizer step: a non-finite loss or
  gradient is never applied;
- the updated weights' squared norm in float32, after the step: it overflows once a weight passes
  ~1e19 (a learning rate far too high), or is NaN once any weight is. That step is not saved: the
  run stops before its checkpoint, so every checkpoint on disk holds weights that passed.

The run ends with :class:`TrainingDiverged`: the step, the quantity, the last finite checkpoint and
the likely causes. When the loss was not finite because its inputs were not (the teacher's
log-probabilities, the sampler's, the advantages), the sentence names that input and its producer
instead. A plugin that fails on a student whose weights are not finite (the sampler's
``torch.multinomial`` on NaN probabilities) is not blamed for it: :meth:`FiniteGuard.explain`
turns its error into a sentence saying so. Weights that are not finite as loaded are refused
before training (:meth:`FiniteGuard.check_loaded`). ``OPD_DEBUG=1`` adds the details (which
weights, which values).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from opd_core.checkpoint import latest_checkpoint
from opd_core.errors import OPDError
from opd_core.failures import debug_requested, describe_bug, hook_site
from opd_core.types import Advantages, RolloutBatch, TeacherScores


class TrainingDiverged(OPDError):
    """A run stopped because a number it trains on stopped being finite."""

    def __init__(self, step: int, quantity: str, sentence: str, details: str = "") -> None:
        if debug_requested():
            shown = f"{sentence} Details: {details}" if details else sentence
        else:
            shown = f"{sentence.rstrip('.')}; OPD_DEBUG=1 shows the details."
        super().__init__(shown)
        self.step = step
        """The step whose update produced it (or that ran on it)."""
        self.quantity = quantity
        """``loss``, ``grad_norm`` or ``weights``."""
        self.details = details


def local_tensor(param: torch.Tensor) -> torch.Tensor:
    """This process's shard of a weight (FSDP's DTensor), else the weight itself."""
    to_local = getattr(param, "to_local", None)
    return to_local() if callable(to_local) else param


def squared_norm(params: Iterable[torch.Tensor]) -> float:
    """The squared norm of this process's share of ``params``, accumulated in float32 (as the
    weights compute: it overflows to ``inf`` where they would); ``nan`` if any weight is."""
    norms = [
        torch.linalg.vector_norm(local_tensor(p).detach(), dtype=torch.float32) for p in params
    ]
    if not norms:
        return 0.0
    return float(torch.stack(norms).square().sum())


def non_finite_weights(named: Iterable[tuple[str, torch.Tensor]], limit: int = 5) -> list[str]:
    """The names of up to ``limit`` weights holding inf or NaN, or whose float32 norm
    overflows (for the details)."""
    found: list[str] = []
    for name, param in named:
        norm = torch.linalg.vector_norm(local_tensor(param).detach(), dtype=torch.float32)
        if not math.isfinite(float(norm)):
            found.append(f"{name} (norm {float(norm)})")
            if len(found) == limit:
                break
    return found


def non_finite_inputs(
    rollouts: RolloutBatch,
    advantages: Advantages,
    scores: TeacherScores | None,
    rewards_B: torch.Tensor | None,
) -> list[str]:
    """Which of the loss's inputs hold inf or NaN where they count (on the loss mask): the
    keys of :data:`PRODUCERS`, in the order they were made."""
    on_BT = advantages.mask_BT.bool()
    found = []
    if not bool(rollouts.sampler_logprobs_BT[on_BT].isfinite().all()):
        found.append("sampler log-probabilities")
    if scores is not None:
        bad = not bool(scores.logprobs_BT[on_BT].isfinite().all())
        if scores.topk_logprobs_BTK is not None:  # -inf is a legal top-k entry; NaN is not
            bad = bad or bool(scores.topk_logprobs_BTK[on_BT].isnan().any())
        if bad:
            found.append("teacher scores")
    if rewards_B is not None and not bool(rewards_B.isfinite().all()):
        found.append("rewards")
    if not bool(advantages.advantages_BT[on_BT].isfinite().all()):
        found.append("advantages")
    return found


PRODUCERS = {
    "sampler log-probabilities": "sampler",
    "teacher scores": "teacher",
    "rewards": "task",
    "advantages": "advantage",
}
"""The config group whose component produced each input of the loss."""


class FiniteGuard:
    """Checks each update of one run (see the module docstring)."""

    def __init__(
        self,
        output_dir: Path,
        train: Any,
        components: Mapping[str, str],
        combine: Any = None,
    ) -> None:
        self.output_dir = output_dir
        self.train = train
        """``train.*`` settings: the learning rate and clipping the causes name."""
        self.components = components
        """The configured component of each group (``{"teacher": "hf", ...}``)."""
        self._combine = combine
        """Adds a number over the training processes (``Distributed.sum``; ``None``: one)."""
        self.checked_step: int | None = None
        """The last step whose updated weights passed :meth:`check_weights`."""

    def _sum(self, value: float) -> float:
        return value if self._combine is None else float(self._combine(value))

    # ------------------------------------------------------------------ the checks

    def check_update(
        self,
        step: int,
        loss: float,
        grad_norm: float,
        inputs: tuple[RolloutBatch, Advantages, TeacherScores | None, torch.Tensor | None],
    ) -> None:
        """Before the optimizer step: a loss or gradient norm that is not finite stops the run
        and its update is not applied."""
        loss = self._sum(loss)  # every process stops together
        if math.isfinite(loss) and math.isfinite(grad_norm):
            return
        quantity, label, value = (
            ("loss", "the loss", loss)
            if not math.isfinite(loss)
            else ("grad_norm", "the gradient norm", grad_norm)
        )
        bad = non_finite_inputs(*inputs)
        details = f"loss {loss}, gradient norm {grad_norm}, non-finite inputs: {bad or 'none'}"
        if bad:
            group = PRODUCERS[bad[0]]
            sentence = (
                f"Training stopped at step {step}: {label} is {value} because the {bad[0]} it "
                f"was computed from are not finite, so the update was not applied; "
                f"{self._kept()}; likely cause: {group}={self.components.get(group, '?')}, "
                "which produced them (check that component and its model on these prompts)."
            )
        else:
            sentence = (
                f"Training diverged at step {step}: {label} is {value}, so the update was not "
                f"applied; {self._kept()}; likely cause: {self._causes()}."
            )
        raise TrainingDiverged(step, quantity, sentence, details)

    def check_weights(self, step: int, named: list[tuple[str, torch.Tensor]]) -> None:
        """After the update: weights whose float32 norm overflows or is NaN stop the run before
        the step is saved."""
        total = self._sum(squared_norm(p for _, p in named))
        if math.isfinite(total):
            self.checked_step = step
            return
        raise TrainingDiverged(
            step,
            "weights",
            f"Training diverged at step {step}: the student's weights are no longer finite "
            f"after its update (their squared norm is {total}), so step {step} was not saved; "
            f"{self._kept()}; likely cause: {self._causes()}.",
            "non-finite weights: " + ", ".join(non_finite_weights(named)),
        )

    def check_saved(self, step: int, named: list[tuple[str, torch.Tensor]]) -> None:
        """Before a checkpoint is written: weights that stopped being finite since the update
        passed (something else wrote into them) are never saved."""
        total = self._sum(squared_norm(p for _, p in named))
        if math.isfinite(total):
            return
        raise TrainingDiverged(
            step,
            "weights",
            f"The student's weights are not finite when step {step} is to be saved (their "
            f"squared norm is {total}), so it was not saved; {self._kept()}; likely cause: "
            f"{self._written_since()}.",
            "non-finite weights: " + ", ".join(non_finite_weights(named)),
        )

    def _written_since(self) -> str:
        if self.checked_step is None:
            return "they were loaded that way"
        return (
            f"they were finite after the last update (step {self.checked_step}), so something "
            "else wrote into them since: a plugin changing the student's weights"
        )

    def check_loaded(self, named: list[tuple[str, torch.Tensor]], source: str) -> None:
        """Before training: the student's weights as loaded are finite, or the run does not
        start (a greedy evaluation would score them without failing)."""
        if math.isfinite(self._sum(squared_norm(p for _, p in named))):
            return
        bad = non_finite_weights(named, limit=2)
        raise OPDError(
            f"The student's weights loaded from {source} are not finite "
            f"({', '.join(bad) or 'on another process'}); use a model or checkpoint whose "
            "weights are finite."
        )

    def explain(
        self, step: int, err: BaseException, named: list[tuple[str, torch.Tensor]]
    ) -> TrainingDiverged | None:
        """A plugin's error that the student's non-finite weights explain, as the sentence
        saying so (the plugin is not at fault); ``None`` when the weights are finite. Checks
        this process's weights only (the others may not have failed)."""
        total = squared_norm(p for _, p in named)
        if math.isfinite(total):
            return None
        site = hook_site(err.__traceback__)
        failed = (
            f"plugin {site.plugin} failed in hook {site.hook} on them"
            if site is not None
            else "the run failed on them"
        )
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        cause = self._written_since()
        return TrainingDiverged(
            step,
            "weights",
            f"The student's weights are not finite at step {step} (their squared norm is "
            f"{total}) and {failed} ({type(err).__name__}: {first}), which is not a bug in that "
            f"plugin; {self._kept()}; likely cause: {cause}.",
            f"{describe_bug(err)}; non-finite weights: " + ", ".join(non_finite_weights(named)),
        )

    # ------------------------------------------------------------------ the sentence

    def _kept(self) -> str:
        latest = latest_checkpoint(self.output_dir)
        if latest is None:
            return "no checkpoint was written before it"
        return f"the last finite checkpoint, {latest}, is kept (resume=true continues from it)"

    def _causes(self) -> str:
        lr, clip = self.train.lr, self.train.max_grad_norm
        text = f"a learning rate too high (train.lr={lr:g}; lower it)"
        if clip == 0:
            text += ", with gradient clipping turned off (train.max_grad_norm=0; set it to 1.0)"
        return text
