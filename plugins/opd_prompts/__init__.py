"""Prompt sources: which train prompts each step samples from."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from opd_core import Prompt, hookimpl
from opd_core.api import Registry, RunContext, store_config_dir


class ShuffledPasses:
    """Walks the prompt pool in passes, reshuffled each pass (a seeded, resumable order)."""

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed
        self._rng = random.Random(seed)
        self._order: list[int] = []
        self._cursor = 0

    def setup(self, ctx: RunContext) -> None:
        if self.seed is None:
            self._rng = random.Random(ctx.seed)

    @hookimpl
    def opd_select_prompts(self, step: int, pool: Sequence[Prompt], count: int) -> list[Prompt]:
        chosen: list[Prompt] = []
        while len(chosen) < count:
            if self._cursor >= len(self._order) or len(self._order) != len(pool):
                self._order = list(range(len(pool)))
                self._rng.shuffle(self._order)
                self._cursor = 0
            chosen.append(pool[self._order[self._cursor]])
            self._cursor += 1
        return chosen

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self._rng.getstate(), "order": self._order, "cursor": self._cursor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._rng.setstate(state["rng"])
        self._order = list(state["order"])
        self._cursor = int(state["cursor"])


@hookimpl
def opd_register_components(registry: Registry) -> None:
    registry.add("prompts", "shuffle", ShuffledPasses)


@hookimpl
def opd_register_configs(store: Any) -> None:
    """This plugin's options (``conf/<group>/<option>.yaml``), stored as a third-party
    package's are."""
    store_config_dir(store, "opd_prompts")
