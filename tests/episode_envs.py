"""Environments for the multi-turn tests: a scripted user (``followups``), and broken ones.

Registered as a plugin module (``plugins=[episode_envs]`` or ``make_plugin_manager([...])``):
``+environment`` is not needed, ``environment={name: followups, ...}`` chooses one.
"""

from __future__ import annotations

import math
from typing import Any

from opd_core import EnvReply, EpisodeStart, Prompt, hookimpl
from opd_core.api import Registry


class Followups:
    """A scripted user: after each assistant turn it asks ``"<turn>+1"`` (a ``user`` message)
    until turn ``turns``, which ends the episode. Reward 1 for a reply that contains a digit on
    the last turn, 0.25 per earlier turn; counts ``asks`` (one per follow-up) and ``turns_seen``.
    With ``turns=0`` it never ends (a budget must cut it). Its ``state_dict`` counts episodes
    opened, so a resume that lost it would differ."""

    def __init__(self, turns: int = 2, system: str | None = None, role: str = "user") -> None:
        self.turns = turns
        self.system = system
        self.role = role
        self.opened = 0

    @hookimpl
    def opd_start_episode(self, prompt: Prompt) -> EpisodeStart:
        self.opened += 1
        head = ({"role": "system", "content": self.system},) if self.system else ()
        return EpisodeStart(messages=(*head, *prompt.messages), state={"asked": 0})

    @hookimpl
    def opd_step_episode(self, prompt: Prompt, state: Any, reply: str, turn: int) -> EnvReply:
        counts = {"turns_seen": 1.0}
        if self.turns and turn >= self.turns:
            good = any(c.isdigit() for c in reply)
            return EnvReply(reward=1.0 if good else 0.0, done=True, state=state, counts=counts)
        asked = {"asked": state["asked"] + 1}
        return EnvReply(
            messages=({"role": self.role, "content": f"{turn}+1"},),
            reward=0.25,
            state=asked,
            counts={**counts, "asks": 1.0},
        )

    def state_dict(self) -> dict[str, int]:
        return {"opened": self.opened}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.opened = int(state["opened"])


class Broken:
    """An environment that misbehaves on turn ``on_turn`` in the way ``how`` names."""

    def __init__(self, how: str = "raise", on_turn: int = 1) -> None:
        self.how = how
        self.on_turn = on_turn

    @hookimpl
    def opd_start_episode(self, prompt: Prompt) -> Any:
        if self.how == "no_start":
            return None
        if self.how == "start_raises":
            raise KeyError("tools")
        return EpisodeStart(messages=prompt.messages)

    @hookimpl
    def opd_step_episode(self, prompt: Prompt, state: Any, reply: str, turn: int) -> Any:
        if turn < self.on_turn:
            return EnvReply(messages=({"role": "user", "content": "go on"},))
        if self.how == "raise":
            raise ZeroDivisionError("division by zero")
        if self.how == "not_a_reply":
            return {"messages": [], "done": True}
        if self.how == "bad_messages":
            return EnvReply(messages=({"role": "user"},))  # type: ignore[arg-type]
        if self.how == "string_messages":
            return EnvReply(messages="go on")  # type: ignore[arg-type]
        if self.how == "nan_reward":
            return EnvReply(reward=math.nan, done=True)
        if self.how == "bad_role":
            return EnvReply(messages=({"role": "robot", "content": "beep"},))
        return EnvReply(done=True)


@hookimpl
def opd_register_components(registry: Registry) -> None:
    registry.add("environment", "followups", Followups)
    registry.add("environment", "broken", Broken)
