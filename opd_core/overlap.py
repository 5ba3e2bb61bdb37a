"""``train.overlap``: sample step t+1's rollouts while step t updates the weights.

Without overlap a step samples, grades, scores and updates, one after the other. With it, once
step t has its rollouts the loop selects step t+1's prompts and asks the sampler's
:class:`~opd_core.types.RolloutPrefetcher` to capture the weights as they are (before update t)
and sample them in a background thread; step t+1 then takes those rollouts instead of sampling.
The rollouts a step trains on were sampled one update earlier (``overlap/stale_steps`` 1; 0 for
the first step of a run or of a resume, which samples in the loop's thread). Their sampler
log-probabilities are the old weights', so ``loss=importance_sampling`` weights each token by
``exp(logp_now - logp_sampler)``: the one-step lag is corrected like ``update_epochs > 1``.

Prompt selection is unchanged (the prompt source is asked for step t+1's prompts once, in step
order, as without overlap). A checkpoint written while a prefetch is out holds the prompt
source's state from before it selected those prompts, so a resumed run selects them again and
samples them afresh from the checkpoint's weights; nothing of the prefetch is saved. The loop
waits for the background sampling before it evaluates, saves, or stops.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

import torch

from opd_core.errors import OPDError
from opd_core.types import RolloutBatch, RolloutPrefetcher

log = logging.getLogger("opd_core")

S = TypeVar("S")

STALE_ROLLOUTS = {
    "corrected": "weights each token by exp(logp_now - logp_sampler), which corrects for it",
    "per_position": (
        "computes each position's divergence at the current weights; only the positions it "
        "visits come from the older weights"
    ),
    "uncorrected": (
        "ignores the sampler's log-probabilities, so nothing corrects for it; "
        "loss=importance_sampling would"
    ),
}
"""What a loss says about rollouts sampled one update earlier: the value of its
``stale_rollouts`` attribute, and what the run logs about it at start."""


class Prefetch(Generic[S]):
    """One step's rollouts being sampled in a background thread (a daemon: it never keeps the
    process alive), with the loop's ``state`` from before its prompts were selected."""

    def __init__(
        self, step: int, state: S, sample: Callable[[], Callable[[], RolloutBatch]]
    ) -> None:
        self.step = step
        """The training step these rollouts are for."""
        self.state = state
        self._sample = sample
        self._finish: Callable[[], RolloutBatch] | None = None
        self._error: BaseException | None = None
        self._threads = torch.get_num_threads()
        self._blocked_s = 0.0
        self.started = time.perf_counter()
        self.ended: float | None = None
        self._thread = threading.Thread(target=self._run, name=f"opd-prefetch-{step}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        torch.set_num_threads(self._threads)  # a new thread starts with the library default
        try:
            self._finish = self._sample()
        except BaseException as err:  # handed to the loop's thread by result()
            self._error = err
        finally:
            self.ended = time.perf_counter()

    def wait(self) -> None:
        """Block until the sampling has ended; its result is kept for :meth:`result`."""
        if self._thread.is_alive():
            waiting = time.perf_counter()
            self._thread.join()
            self._blocked_s += time.perf_counter() - waiting

    def result(self) -> RolloutBatch:
        """The rollouts (built in the calling thread); an error of the sampling is raised here."""
        self.wait()
        if self._error is not None:
            raise self._error
        assert self._finish is not None
        return self._finish()

    def metrics(self) -> dict[str, float]:
        """``overlap/sample_s``: how long the background sampling ran; ``overlap/wait_s``: how
        long the loop blocked on it; ``overlap/hidden_s``: the difference, sampling time that ran
        beside the previous step's work."""
        ran = (self.ended if self.ended is not None else time.perf_counter()) - self.started
        return {
            "overlap/stale_steps": 1.0,
            "overlap/sample_s": round(ran, 4),
            "overlap/wait_s": round(self._blocked_s, 4),
            "overlap/hidden_s": round(max(ran - self._blocked_s, 0.0), 4),
        }


SAMPLED_NOW = {"overlap/stale_steps": 0.0}
"""The overlap metrics of a step that sampled its own rollouts (nothing ran ahead)."""


def plan_overlap(
    hook: Any, sampler: Mapping[str, Any], loss: Any, loss_name: str, processes: int
) -> RolloutPrefetcher:
    """The sampler's prefetcher for ``train.overlap=true``, after refusing what cannot work and
    logging what the loss makes of one-step-stale rollouts."""
    if processes > 1:
        raise OPDError(
            f"train.overlap=true runs in one training process (this run has {processes}); "
            "launch one process or set train.overlap=false."
        )
    prefetcher: RolloutPrefetcher | None = hook.opd_rollout_prefetcher()
    if prefetcher is None:
        raise OPDError(
            f"train.overlap=true needs a sampler that samples ahead from a frozen copy of the "
            f"student, and sampler={sampler.get('name', '?')} cannot; use sampler=hf or "
            "sampler=vllm, or set train.overlap=false."
        )
    kind = getattr(loss, "stale_rollouts", None)
    if kind == "uncorrected":
        log.warning(
            "train.overlap: rollouts are one update old and loss=%s %s.",
            loss_name,
            STALE_ROLLOUTS[kind],
        )
    elif kind in STALE_ROLLOUTS:
        log.info(
            "train.overlap: rollouts are one update old; loss=%s %s.",
            loss_name,
            STALE_ROLLOUTS[kind],
        )
    else:
        log.warning(
            "train.overlap: rollouts are one update old and loss=%s does not say how it treats "
            "that (no stale_rollouts attribute: one of %s).",
            loss_name,
            ", ".join(STALE_ROLLOUTS),
        )
    return prefetcher
