"""The calculator environment (``environment=calculator``) and its drift fix, prefix replay.

Each student turn is either a calculator call, answered with a ``tool`` message holding the
result (``error`` for an invalid call), or the final answer, which ends the episode with reward 1
when it is right and 0 otherwise. Counters per turn: ``tool_calls``, ``invalid_calls`` and
``replayed_turns``.

Prefix replay (ReOPD, arXiv 2607.04763): a fraction ``prefix_replay`` of the training episodes
whose question the teacher solved opens after a prefix of the teacher's own episode, its first
``k`` calls and their results as context (``k`` uniform in 1..calls), and the student continues
from there. The student then practises the later turns from the states the teacher reaches, not
only from the states its own earlier mistakes lead to, which vanilla on-policy distillation
visits more and more rarely as those mistakes compound. Held-out prompts are never replayed (the
teacher's episodes are of training questions only), so evaluation is unchanged.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opd_agent.calculator import parse_turn
from opd_agent.problems import ERROR_RESULT, TOOL_ROLE
from opd_core import EnvReply, EpisodeStart, OPDError, Prompt, hookimpl
from opd_core.api import ChatMessage

if TYPE_CHECKING:
    from opd_core.api import RunContext

COUNTS = ("tool_calls", "invalid_calls", "replayed_turns")
"""The per-turn counters this environment reports (logged as ``episode/<name>``)."""


@dataclass(frozen=True)
class CalculatorState:
    """An episode's state: how many teacher calls it was opened after."""

    replayed: int = 0


class CalculatorEnvironment:
    """Answers calculator calls and grades the final answer against ``prompt.answer``."""

    def __init__(
        self, prefix_replay: float = 0.0, replay_from: str = "demo", seed: int | None = None
    ) -> None:
        """``prefix_replay``: the fraction of replayable episodes opened after a teacher prefix
        (0: vanilla). ``replay_from``: ``demo`` (the cached greedy episodes of the demo's
        tool-use teacher on the task's training questions) or a JSONL file of
        ``{"question", "turns", "reward"}`` records. ``seed`` null: the run's seed."""
        if not 0.0 <= prefix_replay <= 1.0:
            raise ValueError(f"prefix_replay must be in [0, 1], got {prefix_replay}")
        self.prefix_replay = prefix_replay
        self.replay_from = replay_from
        self._rng = random.Random(f"prefix_replay:{seed or 0}")
        self._seed_given = seed is not None
        self._teacher_turns: dict[str, tuple[ChatMessage, ...]] | None = None

    def setup(self, ctx: RunContext) -> None:
        """Seed the replay draws from the run's seed (unless given) and load the teacher's
        episodes before the first step."""
        if not self._seed_given:
            self._rng = random.Random(f"prefix_replay:{ctx.config.seed}")
        if self.prefix_replay > 0:
            self.teacher_turns()

    def state_dict(self) -> dict[str, Any]:
        """The replay draws' random state (checkpointed, so a resumed run replays the same)."""
        return {"rng": self._rng.getstate()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the replay draws from a checkpoint's :meth:`state_dict`."""
        version, internal, gauss = state["rng"]
        self._rng.setstate((version, tuple(internal), gauss))

    def teacher_turns(self) -> Mapping[str, tuple[ChatMessage, ...]]:
        """The teacher's solved episodes by question: its turns after the question."""
        if self._teacher_turns is None:
            self._teacher_turns = load_replays(self._replay_path())
        return self._teacher_turns

    def _replay_path(self) -> Path:
        """The JSONL file ``replay_from`` names (``demo`` is resolved by the registered
        ``environment=calculator``, :class:`opd_agent.plugin.Calculator`)."""
        path = Path(self.replay_from)
        if not path.is_file():
            raise OPDError(
                f"environment.replay_from '{path}' is not a file; give a JSONL file of "
                "teacher episodes or 'demo' for the demo teacher's."
            )
        return path

    @hookimpl
    def opd_start_episode(self, prompt: Prompt) -> EpisodeStart:
        messages = tuple(prompt.messages)
        if self.prefix_replay > 0 and messages:
            turns = self.teacher_turns().get(str(messages[-1]["content"]))
            calls = 0 if turns is None else (len(turns) - 1) // 2
            if turns is not None and calls > 0 and self._rng.random() < self.prefix_replay:
                k = self._rng.randint(1, calls)
                return EpisodeStart((*messages, *turns[: 2 * k]), CalculatorState(replayed=k))
        return EpisodeStart(messages, CalculatorState())

    @hookimpl
    def opd_step_episode(self, prompt: Prompt, state: Any, reply: str, turn: int) -> EnvReply:
        if not isinstance(state, CalculatorState):
            raise OPDError(
                f"environment calculator got the state {state!r}, not the one its "
                "opd_start_episode opened; the driver must hand the state back unchanged."
            )
        counts = dict.fromkeys(COUNTS, 0.0)
        if turn == 1:
            counts["replayed_turns"] = float(state.replayed)
        parsed = parse_turn(reply)
        if parsed.kind == "answer":
            right = parsed.answer is not None and parsed.answer == (prompt.answer or "").strip()
            return EnvReply(reward=float(right), done=True, state=state, counts=counts)
        counts["tool_calls"] = 1.0
        if parsed.kind == "invalid_call":
            counts["invalid_calls"] = 1.0
        result = parsed.result if parsed.result is not None else ERROR_RESULT
        return EnvReply(
            messages=({"role": TOOL_ROLE, "content": result},), state=state, counts=counts
        )


def load_replays(path: Path) -> dict[str, tuple[ChatMessage, ...]]:
    """The solved episodes (reward 1) of a JSONL file of ``{"question", "turns", "reward"}``."""
    replays: dict[str, tuple[ChatMessage, ...]] = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if record.get("reward") == 1.0:
            replays[record["question"]] = tuple(record["turns"])
    return replays


def write_replays(path: Path, records: Sequence[Mapping[str, Any]]) -> None:
    """Write teacher episodes as :func:`load_replays` reads them."""
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
