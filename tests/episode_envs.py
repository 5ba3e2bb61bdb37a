"""Environments for the multi-turn tests: a scripted user (``followups``), broken ones, and the
token-identity check every tokenizer's multi-turn rollouts must pass.

Registered as a plugin module (``plugins=[episode_envs]`` or ``make_plugin_manager([...])``):
they have no config files: ``+environment={name:followups,turns:2}`` chooses one inline.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from opd_core import EnvReply, EpisodeStart, GenerationParams, Prompt, RolloutBatch, hookimpl
from opd_core.api import Registry
from opd_core.episodes import SampledTurn, TurnRequest
from opd_core.modeling import LoadedModel
from opd_core.rollouts import eos_ids
from opd_hf.generation import generate_turns


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


# -------------------------------------------------------------------- token-identity checks


class Recorder:
    """A ``generate_turn`` that samples with the HF decode loop and keeps what it returned."""

    def __init__(self, loaded: LoadedModel, temperature: float = 1.0) -> None:
        self.loaded = loaded
        self.params = GenerationParams(max_new_tokens=64, temperature=temperature)
        self.calls: list[tuple[list[TurnRequest], list[SampledTurn]]] = []

    def __call__(self, requests: Sequence[TurnRequest]) -> list[SampledTurn]:
        model, tokenizer = self.loaded.model, self.loaded.tokenizer
        turns = generate_turns(
            model, requests, self.params, 8, eos_ids(model, tokenizer), tokenizer.pad_token_id
        )
        self.calls.append((list(requests), turns))
        return turns


def rows(batch: RolloutBatch) -> list[list[int]]:
    """Each row's real tokens."""
    return [
        ids[mask.bool()].tolist()
        for ids, mask in zip(batch.input_ids_BT, batch.attention_mask_BT, strict=True)
    ]


Observation = Callable[[int, int], tuple[dict[str, str], ...]]
"""The messages the environment answered turn ``k`` (1-based) of episode ``b`` with."""


def check_token_identity(
    batch: RolloutBatch, recorder: Recorder, tokenizer: Any, observation: Observation
) -> int:
    """Every sampled token verbatim in its row (with its log-probability) and only those under
    the completion mask; at every turn boundary the tokens so far decode to the chat template's
    rendering of the conversation up to the next generation prompt, and the environment's span
    is that text's suffix tokenized alone; each row decodes to the template's rendering of the
    whole conversation. The student's turns enter the conversation as the text of the tokens it
    sampled. Returns the number of boundaries checked."""
    sampled: dict[int, list[list[int]]] = {}
    logprobs: dict[int, list[list[float]]] = {}
    for requests, turns in recorder.calls:
        for request, turn in zip(requests, turns, strict=True):
            n = min(len(turn.token_ids), request.max_new_tokens)
            sampled.setdefault(request.episode, []).append(list(turn.token_ids[:n]))
            logprobs.setdefault(request.episode, []).append(list(turn.logprobs or [])[:n])
    stop = set(eos_ids(recorder.loaded.model, tokenizer))
    boundaries = 0
    for b in range(batch.batch_size):
        start = batch.prompt_len
        student_R = batch.completion_mask_BT[b, start:].bool()
        region_R = batch.input_ids_BT[b, start:]
        real_R = batch.attention_mask_BT[b, start:].bool()
        turns = sampled[b]
        assert region_R[student_R].tolist() == [t for turn in turns for t in turn]
        expected_lps = torch.tensor([x for turn in logprobs[b] for x in turn])
        assert torch.allclose(batch.sampler_logprobs_BT[b, start:][student_R], expected_lps)
        assert (batch.sampler_logprobs_BT[b, start:][~student_R] == 0).all()
        # the region as alternating student / environment spans
        spans: list[tuple[bool, list[int]]] = []
        for flag, token in zip(student_R[real_R].tolist(), region_R[real_R].tolist(), strict=True):
            if spans and spans[-1][0] == flag:
                spans[-1][1].append(token)
            else:
                spans.append((flag, [token]))
        assert all(flag for flag, _ in spans[::2]) and not any(flag for flag, _ in spans[1::2])
        episode = batch.episodes[b]  # type: ignore[index]
        assert len(spans[::2]) == episode.turns == len(turns)
        row = rows(batch)[b]
        so_far = len(row) - int(real_R.sum())  # the prompt's tokens
        conversation: list[dict[str, str]] = [dict(m) for m in batch.prompts[b].messages]
        for k, (_, span) in enumerate(spans[::2], start=1):
            ended = span[-1] in stop
            text = tokenizer.decode(span[:-1] if ended else span, skip_special_tokens=False)
            conversation.append({"role": "assistant", "content": text})
            so_far += len(span)
            if 2 * k - 1 < len(spans):  # the environment answered: its span follows
                env_ids = spans[2 * k - 1][1]
                conversation.extend(observation(b, k))
                rendered = tokenizer.apply_chat_template(
                    conversation, tokenize=False, add_generation_prompt=True
                )
                before = tokenizer.decode(row[:so_far], skip_special_tokens=False)
                assert rendered.startswith(before), (rendered, before)
                suffix = rendered[len(before) :]
                assert env_ids == tokenizer(suffix, add_special_tokens=False)["input_ids"]
                so_far += len(env_ids)
                assert tokenizer.decode(row[:so_far], skip_special_tokens=False) == rendered
                boundaries += 1
        rendered = tokenizer.apply_chat_template(conversation, tokenize=False)
        decoded = tokenizer.decode(row, skip_special_tokens=False)
        assert rendered.startswith(decoded), (rendered, decoded)
        ending = rendered[len(decoded) :]  # the separator the template writes after a turn
        assert len(tokenizer(ending, add_special_tokens=False)["input_ids"]) <= 2, ending
    return boundaries
