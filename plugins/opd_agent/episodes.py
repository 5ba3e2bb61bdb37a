"""Episodes played at the text level with any :class:`opd_core.Generator`: every turn the
conversation so far is rendered with the model's chat template and the model writes the next
assistant turn. The build uses it (the student's early stop, the teacher's episodes for prefix
replay, held-out success) and so do the tests; training rollouts come from the run's sampler."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from opd_core import EnvReply, EpisodeStart, GenerationParams, Generator, Prompt
from opd_core.api import ChatMessage


class Environment(Protocol):
    """What an environment component answers (its two hooks, called directly)."""

    def opd_start_episode(self, prompt: Prompt) -> EpisodeStart: ...

    def opd_step_episode(self, prompt: Prompt, state: Any, reply: str, turn: int) -> EnvReply: ...


@dataclass(frozen=True)
class Episode:
    """One finished episode."""

    prompt: Prompt
    messages: tuple[ChatMessage, ...]
    """The whole conversation: the opening, then every turn and observation."""
    reward: float
    turns: int
    """Assistant turns the model wrote."""
    end: str
    """``done`` or ``max_turns``."""
    counts: Mapping[str, float] = field(default_factory=dict)

    def turns_after(self, opening: int) -> list[ChatMessage]:
        """The messages after the first ``opening`` ones (the episode's own turns)."""
        return [dict(m) for m in self.messages[opening:]]


def run_episodes(
    generator: Generator,
    environment: Environment,
    prompts: Sequence[Prompt],
    params: GenerationParams,
    max_turns: int,
) -> list[Episode]:
    """Play one episode per prompt, all turns of all episodes batched through ``generator``."""
    starts = [environment.opd_start_episode(prompt=p) for p in prompts]
    conversations = [list(s.messages) for s in starts]
    states = [s.state for s in starts]
    rewards = [0.0] * len(prompts)
    counts: list[dict[str, float]] = [{} for _ in prompts]
    finished: dict[int, Episode] = {}
    active = list(range(len(prompts)))
    for turn in range(1, max_turns + 1):
        if not active:
            break
        asked = [
            Prompt(id=prompts[i].id, messages=tuple(conversations[i]), answer=prompts[i].answer)
            for i in active
        ]
        replies = generator.generate(asked, params)
        still = []
        for i, reply in zip(active, replies, strict=True):
            answer = environment.opd_step_episode(
                prompt=prompts[i], state=states[i], reply=reply, turn=turn
            )
            conversations[i] += [{"role": "assistant", "content": reply}, *answer.messages]
            states[i] = answer.state
            rewards[i] += answer.reward
            for name, value in answer.counts.items():
                counts[i][name] = counts[i].get(name, 0.0) + value
            if answer.done:
                finished[i] = Episode(
                    prompts[i], tuple(conversations[i]), rewards[i], turn, "done", counts[i]
                )
            else:
                still.append(i)
        active = still
    for i in active:
        finished[i] = Episode(
            prompts[i], tuple(conversations[i]), rewards[i], max_turns, "max_turns", counts[i]
        )
    return [finished[i] for i in range(len(prompts))]


def success_rate(episodes: Sequence[Episode]) -> float:
    """The share of episodes with reward 1 (solved)."""
    return sum(e.reward >= 1.0 for e in episodes) / max(1, len(episodes))
