"""Where one training step ends and the next begins: signals, sampling ahead, and the state an
interrupted run keeps.

The loop (:class:`opd_core.trainer.Trainer`) asks the :class:`StepBoundary` to open each stretch
of work a signal may cut, and the boundary keeps the promises about what happens then:

- signals (:class:`opd_core.interrupts.Interrupts`) wait from a step's update to the start of the
  next step, and while the state is being captured; inside a stretch they stop the run;
- each stretch starts from a :class:`Snapshot` of what changes during a step besides the weights
  (random generators, component states such as the prompt order), so an interrupt checkpoints
  the last finished step exactly as it ended and a resume continues bit for bit;
- with ``train.overlap`` it samples the next step's rollouts in the background
  (:mod:`opd_core.overlap`) and waits for them before anything evaluates, saves or stops; a
  checkpoint then holds the prompt source's state from before it selected them;
- its :class:`opd_core.guard.FiniteGuard` checks every update (loss, gradient norm, weights)
  before it is applied or saved, and a plugin that fails inside a stretch on non-finite weights
  is reported as that, not as the plugin's bug.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from opd_core.checkpoint import capture_rng, checkpoint_dir, latest_checkpoint, restore_rng
from opd_core.errors import OPDError
from opd_core.guard import FiniteGuard
from opd_core.interrupts import Interrupts, RunInterrupted
from opd_core.metrics import StageTimer
from opd_core.overlap import SAMPLED_NOW, Prefetch
from opd_core.types import Advantages, Prompt, RolloutBatch, RolloutPrefetcher, TeacherScores


@dataclass(frozen=True)
class Snapshot:
    """What changes during a step besides the weights, as it was when step ``step`` ended."""

    step: int
    rng: dict[str, Any]
    components: dict[str, Any]


class StepBoundary:
    """Signals, sampling ahead and state capture between the steps of one run."""

    def __init__(
        self,
        interrupts: Interrupts,
        components: Mapping[str, Any],
        output_dir: Path,
        save: Callable[[int], Path],
        has_work: Callable[[], bool],
        distributed: bool,
        prefetcher: RolloutPrefetcher | None = None,
        samples_per_prompt: int = 1,
        last_step: int = 0,
        guard: FiniteGuard | None = None,
        weights: Sequence[tuple[str, torch.Tensor]] = (),
    ) -> None:
        self.interrupts = interrupts
        self.components = components
        self.output_dir = output_dir
        self._save = save
        """Checkpoints a step (the trainer's ``save``)."""
        self._has_work = has_work
        """Whether anything is worth keeping before the first step (evaluations done)."""
        self._distributed = distributed
        self.prefetcher = prefetcher
        """The sampler's prefetcher when ``train.overlap`` is on."""
        self._samples_per_prompt = samples_per_prompt
        self._last_step = last_step
        self._prefetch: Prefetch[Snapshot] | None = None
        """The next step's rollouts, being sampled in the background (``train.overlap``)."""
        self.guard = guard
        self.weights = list(weights)
        """The weights the optimizer updates, by name (those the guard checks)."""

    # ------------------------------------------------------------ signals and stretches

    def hold(self) -> None:
        """From here to the next stretch a signal waits (a step changes the student)."""
        self.interrupts.hold()

    @contextmanager
    def between_steps(self, step: int) -> Iterator[None]:
        """Work outside any step (the evaluations at the start and the end of a run): a signal
        stops it and checkpoints ``step`` as it is now; signals wait again afterwards."""
        with self._keep_work(self.snapshot(step), step):
            self.interrupts.release()
            yield
            self.interrupts.hold()

    @contextmanager
    def step(self, step: int) -> Iterator[None]:
        """Step ``step``: a signal before its update stops it and checkpoints ``step - 1`` as it
        ended (a signal that waited for ``step - 1`` stops here); :meth:`hold` from the update
        on."""
        with self._keep_work(self._step_start(step), step):
            self.interrupts.release()
            yield

    @contextmanager
    def loop(self) -> Iterator[None]:
        """The steps of a run: whatever ends them early forgets the rollouts sampled ahead, after
        their sampling ended (a second signal, forced, stops at once: the daemon thread dies with
        the process)."""
        try:
            yield
        except BaseException as err:
            self._drop_prefetch(wait=not (isinstance(err, RunInterrupted) and err.forced))
            raise

    @contextmanager
    def _keep_work(self, state: Snapshot, step: int) -> Iterator[None]:
        """An interrupt inside checkpoints the step that ``state`` ended, then re-raises; an
        error that non-finite weights explain becomes the guard's sentence."""
        try:
            yield
        except RunInterrupted as stop:
            raise self._interrupted(stop, state) from None
        except OPDError:
            raise
        except Exception as err:
            explained = self.guard.explain(step, err, self.weights) if self.guard else None
            if explained is None:
                raise
            raise explained from err

    def _interrupted(self, stop: RunInterrupted, state: Snapshot) -> RunInterrupted:
        """Checkpoint the last finished step (as it was at its end) unless one exists already."""
        stop.step = state.step
        latest = latest_checkpoint(self.output_dir)
        stop.checkpoint = str(latest) if latest is not None else None
        if stop.forced or self._distributed:  # half-updated state, or ranks at different points
            return stop
        if latest is not None and latest.name == checkpoint_dir(self.output_dir, state.step).name:
            return stop
        if state.step == 0 and not self._has_work():
            return stop  # nothing done yet
        self.interrupts.hold()  # another signal waits for this save (a third one forces)
        self._drop_prefetch(wait=True)  # the next step's prompts are selected again on resume
        self.restore(state)
        stop.checkpoint = str(self._save(state.step))
        return stop

    # ------------------------------------------------------------ the finite guard

    def check_update(
        self,
        step: int,
        loss: float,
        grad_norm: float,
        inputs: tuple[RolloutBatch, Advantages, TeacherScores | None, torch.Tensor | None],
    ) -> None:
        """Before the optimizer step: stop the run on a non-finite loss or gradient norm (the
        update is not applied)."""
        if self.guard is not None:
            self.guard.check_update(step, loss, grad_norm, inputs)

    def check_saved(self, step: int) -> None:
        """Before a checkpoint: refuse to save weights that are not finite."""
        if self.guard is not None:
            self.guard.check_saved(step, self.weights)

    def check_loaded(self, named: list[tuple[str, torch.Tensor]], source: str) -> None:
        """Before training: refuse a student whose weights as loaded are not finite."""
        if self.guard is not None:
            self.guard.check_loaded(named, source)

    def check_weights(self, step: int) -> None:
        """After the update: stop the run on weights that are no longer finite (the step is
        not saved)."""
        if self.guard is not None:
            self.guard.check_weights(step, self.weights)

    # ------------------------------------------------------------ state

    def snapshot(self, step: int) -> Snapshot:
        """The random generators and every restorable component state, copied now."""
        components = {
            name: copy.deepcopy(c.state_dict())
            for name, c in self.components.items()
            if hasattr(c, "state_dict") and hasattr(c, "load_state_dict")
        }
        return Snapshot(step, capture_rng(), components)

    def restore(self, state: Snapshot) -> None:
        """Put the random generators and the components back as ``state`` holds them."""
        restore_rng(state.rng)
        for name, saved in state.components.items():
            self.components[name].load_state_dict(saved)

    def component_states(self) -> dict[str, Any]:
        """Each component's state to checkpoint: as it is now, or, while the next step's
        rollouts are being sampled ahead, as it was before their prompts were selected (after
        that sampling ended): a resume selects and samples them again."""
        states = {
            name: c.state_dict() for name, c in self.components.items() if hasattr(c, "state_dict")
        }
        if self._prefetch is not None:
            self._prefetch.wait()
            states.update(self._prefetch.state.components)
        return states

    def _step_start(self, step: int) -> Snapshot:
        """The state as it was when ``step`` began: taken now, or, when its rollouts were
        sampled ahead, before its prompts were selected (during the previous step)."""
        if self._prefetch is not None and self._prefetch.step == step:
            return self._prefetch.state
        return self.snapshot(step - 1)

    # ------------------------------------------------------------ sampling ahead

    def rollouts(
        self,
        step: int,
        select: Callable[[int], list[Prompt]],
        sample: Callable[[list[Prompt]], RolloutBatch],
        timer: StageTimer,
    ) -> tuple[RolloutBatch, dict[str, float]]:
        """``step``'s rollouts: those sampled ahead for it, else ``sample(select(step))`` now;
        and the overlap metrics saying which (none without ``train.overlap``). With it, then
        starts sampling the next step's in the background from the weights as they are now."""
        pending, self._prefetch = self._prefetch, None
        if pending is not None and pending.step == step:
            with timer.stage("sample"):  # what the background sampling did not hide
                rollouts = pending.result()
            metrics = pending.metrics()
        else:
            prompts = select(step)
            with timer.stage("sample"):
                rollouts = sample(prompts)
            metrics = dict(SAMPLED_NOW) if self.prefetcher is not None else {}
        if self.prefetcher is not None and step < self._last_step:
            with timer.stage("prefetch"):  # the weight copy or sync: the cost of overlapping
                self._prefetch = self._start_prefetch(step + 1, select, self.prefetcher)
        return rollouts, metrics

    def wait_for_sampling(self) -> None:
        """Block until the rollouts being sampled ahead (if any) are done."""
        if self._prefetch is not None:
            self._prefetch.wait()

    def _start_prefetch(
        self, step: int, select: Callable[[int], list[Prompt]], prefetcher: RolloutPrefetcher
    ) -> Prefetch[Snapshot]:
        """Select ``step``'s prompts and start sampling them in the background from the weights
        as they are now; the state from before the selection goes with it."""
        state = self.snapshot(step - 1)
        prompts = select(step)
        sample = prefetcher.prepare(prompts, self._samples_per_prompt)
        return Prefetch(step, state, sample)

    def _drop_prefetch(self, wait: bool) -> None:
        """Forget the rollouts being sampled ahead, after the sampling ended unless not ``wait``."""
        pending, self._prefetch = self._prefetch, None
        if pending is not None and wait:
            pending.wait()
