"""Ctrl-C and SIGTERM (preemption) end a run at a consistent point, so its work can be kept.

While a run is guarded, SIGINT and SIGTERM raise :class:`RunInterrupted` in the main thread,
unless signals are held (:meth:`Interrupts.hold` ... :meth:`Interrupts.release`): then the signal
waits and is raised by ``release``. The trainer holds signals from a step's update to the start
of the next step (and while it takes a snapshot of the state), so an interrupt lands between two
finished steps or in the part of a step that changed nothing yet. A second signal while one waits
stops at once, without a checkpoint.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RunInterrupted(BaseException):
    """A run stopped by a signal (a ``BaseException``, like ``KeyboardInterrupt``)."""

    def __init__(self, signum: int, forced: bool = False) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.forced = forced
        """A second signal arrived while the first waited: the state may be half updated."""
        self.step: int | None = None
        """The last finished step (set by the trainer)."""
        self.checkpoint: str | None = None
        """The checkpoint holding that step, if one was written or already existed."""

    @property
    def exit_status(self) -> int:
        """The shell's convention: 128 + the signal number (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + self.signum


class Interrupts:
    """Signal handlers installed for the duration of a ``with`` block (main thread only)."""

    def __init__(self) -> None:
        self._held = 0
        self._pending: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        err: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    @property
    def held(self) -> bool:
        """Whether a signal would now wait (inside :meth:`hold` ... :meth:`release`)."""
        return self._held > 0

    def hold(self) -> None:
        """Start a stretch that a signal must not cut; :meth:`release` ends it."""
        self._held += 1

    def release(self) -> None:
        """End the stretch; a signal that arrived during it is raised now."""
        self._held = max(self._held - 1, 0)
        if self._held == 0 and self._pending is not None:
            signum, self._pending = self._pending, None
            raise RunInterrupted(signum)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._held == 0:
            raise RunInterrupted(signum)
        if self._pending is not None:
            raise RunInterrupted(signum, forced=True)
        self._pending = signum


NO_INTERRUPTS = Interrupts()
"""An instance never entered: holding and releasing it do nothing but count."""
