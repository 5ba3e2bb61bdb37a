"""An environment: a wrong answer gets a second (and third) try."""

from __future__ import annotations

from typing import Any

from opd_core import EnvReply, EpisodeStart, Prompt, hookimpl


class Retry:
    """The student answers the task's prompt; a wrong answer gets ``hint`` as the user's next
    message, until it is right (reward 1, done) or ``tries`` answers were wrong (reward 0).

    An environment answers ``opd_start_episode`` (the conversation the student answers first)
    and ``opd_step_episode`` (what the user says to each answer, the turn's reward, whether the
    episode is over). The loop appends the user's messages at the token level and trains only on
    the student's own tokens; ``counts`` are logged as ``episode/<name>``. It works with any task
    whose prompts carry an ``answer`` (here ``reverse_digits``: ``rev 3819`` -> ``#9183``).
    """

    def __init__(self, tries: int = 3, hint: str = "Not quite. Try again.") -> None:
        if tries <= 0:
            raise ValueError(f"tries must be positive, got {tries}")
        self.tries = tries
        self.hint = hint

    @hookimpl
    def opd_start_episode(self, prompt: Prompt) -> EpisodeStart:
        return EpisodeStart(messages=prompt.messages)

    @hookimpl
    def opd_step_episode(self, prompt: Prompt, state: Any, reply: str, turn: int) -> EnvReply:
        if reply.strip().endswith(f"#{prompt.answer}"):
            return EnvReply(reward=1.0, done=True, counts={"success": 1.0})
        if turn >= self.tries:
            return EnvReply(done=True, counts={"success": 0.0})
        return EnvReply(messages=({"role": "user", "content": self.hint},), counts={"retries": 1})
