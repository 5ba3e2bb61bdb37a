"""The console progress bar: step, teacher KL and the latest eval metric."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from types import TracebackType

from tqdm.auto import tqdm


class Progress:
    """A tqdm bar over training steps; a no-op when disabled."""

    def __init__(self, total: int, initial: int = 0, enabled: bool = True) -> None:
        self._bar = tqdm(
            total=total,
            initial=initial,
            desc="opd",
            unit="step",
            disable=not enabled,
            file=sys.stderr,
            dynamic_ncols=True,
        )
        self._postfix: dict[str, str] = {}

    def update(self, metrics: Mapping[str, float]) -> None:
        """Advance one step and show its KL (and reward when the task grades)."""
        self._postfix["kl"] = f"{metrics.get('teacher_reverse_kl', float('nan')):.4f}"
        if "reward" in metrics:
            self._postfix["reward"] = f"{metrics['reward']:.3f}"
        self._bar.set_postfix(self._postfix, refresh=False)
        self._bar.update(1)

    def show_eval(self, scores: Mapping[str, float] | None) -> None:
        """Show the first metric of the latest evaluation."""
        if scores:
            key, value = next(iter(scores.items()))
            self._postfix[f"eval_{key}"] = f"{value:.3f}"
            self._bar.set_postfix(self._postfix)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        err: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
