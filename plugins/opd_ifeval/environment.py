"""The ``ifeval_followup`` environment: a two-turn chat with a scripted user.

The student answers the task's prompt; the user then asks it to write that answer again
following one IFEval instruction (``Now write your answer again. Answer with less than 40
words.``), and lm-eval's IFEval checker judges the second answer. Any chat task works (``chat``,
``ifeval``, a third-party one); which instruction a prompt gets is fixed by its id.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opd_core import EnvReply, EpisodeStart, OPDError, Prompt, hookimpl
from opd_ifeval.scoring import IFEvalScorer

FOLLOWUPS: tuple[tuple[str, Mapping[str, Any]], ...] = (
    ("change_case:english_lowercase", {}),
    ("punctuation:no_comma", {}),
    ("length_constraints:number_words", {"relation": "less than", "num_words": 40}),
    ("detectable_format:title", {}),
    ("startend:end_checker", {"end_phrase": "Is there anything else I can help with?"}),
    ("change_case:english_capital", {}),
    ("detectable_format:number_bullet_lists", {"num_bullets": 3}),
    ("startend:quotation", {}),
)
"""The follow-up instructions (lm-eval IFEval instruction ids and their arguments)."""


@dataclass(frozen=True)
class Followup:
    """One follow-up: its IFEval instruction and the user's message asking for it."""

    instruction_id: str
    kwargs: Mapping[str, Any]
    message: str


class IFEvalFollowup:
    """Turn 1: the student answers the prompt (unjudged, reward 0). Turn 2: the scripted user
    asks for the answer again under one IFEval instruction; reward 1 when lm-eval's strict
    checker says the second answer follows it, else 0. Counts: ``followed`` and ``success``
    (both that verdict)."""

    def __init__(
        self,
        instructions: Sequence[str] | None = None,
        preamble: str = "Now write your answer again.",
    ) -> None:
        """``instructions``: the follow-up instruction ids to draw from (null: all of
        :data:`FOLLOWUPS`); ``preamble``: what the user says before the instruction."""
        known = {i for i, _ in FOLLOWUPS}
        chosen = list(instructions) if instructions is not None else [i for i, _ in FOLLOWUPS]
        unknown = [i for i in chosen if i not in known]
        if unknown or not chosen:
            raise ValueError(
                f"instructions must be a non-empty list of {', '.join(sorted(known))}; got {chosen}"
            )
        self.instructions = chosen
        self.preamble = preamble
        self._scorer: IFEvalScorer | None = None
        self._followups: list[Followup] | None = None

    def scorer(self) -> IFEvalScorer:
        """lm-eval's IFEval checkers (imported on first use)."""
        if self._scorer is None:
            self._scorer = IFEvalScorer()
        return self._scorer

    def followups(self) -> list[Followup]:
        """Each chosen instruction with the user's message (lm-eval's own description)."""
        if self._followups is None:
            from lm_eval.tasks.ifeval.instructions_registry import INSTRUCTION_DICT

            self.scorer()  # lm-eval's punkt set-up comes first
            kwargs = dict(FOLLOWUPS)
            self._followups = []
            for instruction_id in self.instructions:
                checker = INSTRUCTION_DICT[instruction_id](instruction_id)
                description = checker.build_description(**kwargs[instruction_id])
                message = f"{self.preamble} {description}".strip()
                self._followups.append(Followup(instruction_id, kwargs[instruction_id], message))
        return self._followups

    def followup(self, prompt: Prompt) -> Followup:
        """The follow-up ``prompt`` gets (fixed by its id, the same every time)."""
        options = self.followups()
        return options[zlib.crc32(prompt.id.encode()) % len(options)]

    @hookimpl
    def opd_start_episode(self, prompt: Prompt) -> EpisodeStart:
        if not prompt.messages:
            raise OPDError(
                f"environment ifeval_followup needs chat prompts, but prompt '{prompt.id}' has "
                "no messages; use a chat task (chat, ifeval)."
            )
        return EpisodeStart(messages=prompt.messages, state=None)

    @hookimpl
    def opd_step_episode(self, prompt: Prompt, state: Any, reply: str, turn: int) -> EnvReply:
        followup = self.followup(prompt)
        if turn == 1:
            return EnvReply(messages=({"role": "user", "content": followup.message},))
        doc = Prompt(
            id=prompt.id,
            messages=({"role": "user", "content": followup.message},),
            metadata={
                "key": 0,
                "instruction_id_list": [followup.instruction_id],
                "kwargs": [dict(followup.kwargs)],
            },
        )
        (verdict,) = self.scorer().judge([doc], [reply])
        followed = float(bool(verdict["prompt_level_strict_acc"]))
        return EnvReply(
            reward=followed, done=True, counts={"followed": followed, "success": followed}
        )
