"""Multi-turn rollouts: the episode loop every sampler that writes rollouts shares.

A run with an ``environment`` samples episodes instead of single completions. For a batch of
episodes the loop asks the sampler for one assistant turn of every live episode (its
``generate_turn`` callback: token histories in, sampled token ids and their log-probabilities
out), hands each turn's text to the environment (``opd_step_episode``) and appends the
environment's answer **at the token level**, until the environment says done or a budget is
reached (``episode.max_turns``, ``episode.max_tokens``, the student's context length; a cut is
counted in :class:`~opd_core.types.EpisodeSummary`, never silent).

Rollouts are built from tokens: the tokens the student sampled are exactly those trained on and
scored, never decoded and re-tokenized between turns. An observation is rendered with the
student's chat template as the text that follows an assistant turn (the template's separator
after the end-of-turn token included, which the student did not sample) up to and including the
next generation prompt; only that suffix is tokenized and appended (attended to, completion mask
0, sampler log-probability 0). A turn cut by its token budget before an end-of-turn token gets
the template's end of turn appended as environment tokens.

The layout is :class:`~opd_core.types.RolloutBatch`'s: the episode's first prompt left padded
(``prompt_len`` columns), then every turn in a right-padded region; ``completion_mask_BT`` is 1 on
the student's own tokens only, ``episodes`` holds each row's summary and ``completions`` the
text of the student's turns joined by newlines.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch

from opd_core.errors import OPDError
from opd_core.limits import model_max_length
from opd_core.modeling import encode_prompts, pad_right
from opd_core.rollouts import completion_mask, completion_pad_id, eos_ids
from opd_core.types import (
    ChatMessage,
    EnvReply,
    EpisodeStart,
    EpisodeSummary,
    GenerationParams,
    Generator,
    Prompt,
    RolloutBatch,
)

if TYPE_CHECKING:
    from opd_core.config import EpisodeConfig
    from opd_core.context import RunContext

DONE, MAX_TURNS, MAX_TOKENS, CONTEXT = "done", "max_turns", "max_tokens", "context"
"""Why an episode ended (:attr:`EpisodeSummary.end`): the environment said so, or a budget."""
BUDGETS = (MAX_TURNS, MAX_TOKENS, CONTEXT)

PLACEHOLDER = "OPD-ASSISTANT-TURN-PLACEHOLDER"
"""The assistant content rendered where the student's turn goes, to find the template's text
around it."""


@dataclass(frozen=True)
class TurnRequest:
    """One live episode's next assistant turn, as the loop asks a sampler for it."""

    episode: int
    """The episode's row in the batch."""
    turn: int
    """The number (1-based) of the turn to write."""
    token_ids: tuple[int, ...]
    """The episode so far as the student's tokens: its first prompt and every turn, unpadded."""
    messages: tuple[ChatMessage, ...]
    """The same conversation as chat messages (for writers that work on text: the teacher)."""
    max_new_tokens: int
    """At most this many tokens (``train.max_new_tokens``, less when a budget is near)."""
    prompt: Prompt
    """The episode's prompt, its messages those the student saw first."""


@dataclass(frozen=True)
class SampledTurn:
    """What a sampler wrote for one :class:`TurnRequest`."""

    token_ids: Sequence[int]
    """The sampled tokens, through the end-of-turn (stop) token when it sampled one; the loop
    cuts anything after the first stop token or past ``max_new_tokens``."""
    logprobs: Sequence[float] | None = None
    """Each token's log-probability under the sampler; ``None`` when not kept (text written by
    the teacher: the sampler log-probabilities are then 0)."""
    trained: bool = True
    """``False``: the turn is context only, attended to but masked out of the loss like the
    environment's tokens (a turn another model wrote into the student's episode, e.g. a
    teacher's intervention or a replayed prefix)."""


GenerateTurn = Callable[[Sequence[TurnRequest]], Sequence[SampledTurn]]
"""A sampler's turn writer: one :class:`SampledTurn` per request, in order, batched."""


# -------------------------------------------------------------------- the environment's answers


class EnvironmentCalls:
    """The run's environment through its hooks, every answer checked: an environment that raises
    or answers something malformed ends the run with one sentence naming it."""

    def __init__(self, hook: Any, name: str) -> None:
        self.hook = hook
        self.name = name

    @staticmethod
    def for_run(ctx: RunContext) -> EnvironmentCalls | None:
        """The run's environment, or ``None`` when it has none."""
        node = getattr(ctx.config, "environment", None)
        if node is None:
            return None
        return EnvironmentCalls(ctx.hook, str(node.get("name", "?")))

    def start(self, prompt: Prompt) -> EpisodeStart:
        """The episode ``prompt`` opens, checked."""
        try:
            start = self.hook.opd_start_episode(prompt=prompt)
        except OPDError:
            raise
        except Exception as err:
            raise self._failed("opening the episode", prompt, err) from err
        if start is None:
            raise OPDError(
                f"Environment '{self.name}' opened no episode for prompt '{prompt.id}' "
                "(opd_start_episode answered None); it must return an EpisodeStart for every "
                "prompt of the task."
            )
        if not isinstance(start, EpisodeStart):
            raise OPDError(
                f"Environment '{self.name}' answered opd_start_episode for prompt '{prompt.id}' "
                f"with a {type(start).__name__}; it must return an opd_core.EpisodeStart."
            )
        messages = check_messages(start.messages, f"{self._where(prompt)}'s opening messages")
        if not messages:
            raise OPDError(
                f"Environment '{self.name}' opened the episode of prompt '{prompt.id}' with no "
                "messages; EpisodeStart.messages must hold the conversation the student answers."
            )
        return replace(start, messages=messages)

    def step(self, prompt: Prompt, state: Any, reply: str, turn: int) -> EnvReply:
        """The environment's answer to assistant turn ``turn`` of ``prompt``'s episode, checked."""
        try:
            answer = self.hook.opd_step_episode(prompt=prompt, state=state, reply=reply, turn=turn)
        except OPDError:
            raise
        except Exception as err:
            raise self._failed(f"answering turn {turn}", prompt, err) from err
        where = f"{self._where(prompt)}, turn {turn}"
        if not isinstance(answer, EnvReply):
            got = "nothing" if answer is None else f"a {type(answer).__name__}"
            raise OPDError(
                f"Environment '{self.name}' answered {where} with {got}; opd_step_episode must "
                "return an opd_core.EnvReply (messages, reward, done, state, counts)."
            )
        reward = answer.reward
        if isinstance(reward, bool) or not isinstance(reward, (int, float)):
            raise OPDError(
                f"Environment '{self.name}' gave {where} the reward {reward!r}; "
                "EnvReply.reward must be a number."
            )
        if not math.isfinite(reward):
            raise OPDError(
                f"Environment '{self.name}' gave {where} the reward {reward}; "
                "EnvReply.reward must be finite."
            )
        counts = answer.counts
        if not isinstance(counts, Mapping) or not all(
            isinstance(k, str)
            and isinstance(v, (int, float))
            and not isinstance(v, bool)
            and math.isfinite(v)
            for k, v in counts.items()
        ):
            raise OPDError(
                f"Environment '{self.name}' gave {where} the counts {counts!r}; EnvReply.counts "
                "must map names to finite numbers (e.g. {'tool_calls': 1})."
            )
        messages = check_messages(answer.messages, f"{where}'s observation")
        return replace(answer, messages=messages, reward=float(reward), done=bool(answer.done))

    def _where(self, prompt: Prompt) -> str:
        return f"the episode of prompt '{prompt.id}'"

    def _failed(self, doing: str, prompt: Prompt, err: Exception) -> OPDError:
        lines = str(err).strip().splitlines()
        what = f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
        return OPDError(
            f"Environment '{self.name}' failed {doing} for prompt '{prompt.id}' ({what}); fix "
            "the environment (OPD_DEBUG=1 shows the traceback)."
        )


def check_messages(messages: Any, where: str) -> tuple[dict[str, Any], ...]:
    """``messages`` as a tuple of chat message dicts, or one sentence saying what is wrong: a
    list or tuple of mappings, each with a string ``role`` and a string ``content``."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, (list, tuple)):
        raise OPDError(
            f"{where[0].upper()}{where[1:]} are a {type(messages).__name__}, not a list of "
            "messages; give a tuple of {'role': ..., 'content': ...} dicts."
        )
    checked = []
    for index, message in enumerate(messages):
        if not (
            isinstance(message, Mapping)
            and isinstance(message.get("role"), str)
            and isinstance(message.get("content"), str)
        ):
            raise OPDError(
                f"Message {index} of {where} is {message!r}; each message must be a dict with "
                "a string 'role' and a string 'content'."
            )
        checked.append(dict(message))
    return tuple(checked)


# -------------------------------------------------------------------- the chat template's text


class TurnTemplate:
    """The student's chat template around an assistant turn: the text that closes the turn and
    the text an observation adds up to the next generation prompt."""

    def __init__(self, tokenizer: Any) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise OPDError(
                "An environment needs a student whose tokenizer has a chat template (turns are "
                "appended as chat messages); use an instruct model or give the tokenizer one."
            )
        self.tokenizer = tokenizer

    def _render(self, messages: Sequence[ChatMessage], generation_prompt: bool) -> str:
        text = self.tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=generation_prompt, tokenize=False
        )
        return str(text)

    def around_turn(
        self, head: Sequence[ChatMessage], observation: Sequence[ChatMessage]
    ) -> tuple[str, str]:
        """``(end_of_turn, suffix)`` of an assistant turn answering ``head`` (the episode's
        opening messages): the text the template writes after the turn's content (its
        end-of-turn token and separator) and what ``observation`` adds after that, up to and
        including the next assistant generation prompt."""
        turn = {"role": "assistant", "content": PLACEHOLDER}
        try:
            closed = self._render([*head, turn], generation_prompt=False)
            opened = self._render([*head, turn, *observation], generation_prompt=True)
        except Exception as err:
            roles = ", ".join(sorted({m["role"] for m in observation})) or "none"
            lines = str(err).strip().splitlines()
            raise OPDError(
                f"The student's chat template cannot render the environment's observation "
                f"(roles: {roles}) after an assistant turn ({lines[0] if lines else err!r}); "
                "have the environment answer with roles the template knows (user, or tool "
                "where the template supports tools)."
            ) from err
        if PLACEHOLDER not in closed or not opened.startswith(closed):
            raise OPDError(
                "The student's chat template renders an assistant turn differently once an "
                "observation follows it, so observations cannot be appended at the token level; "
                "use a template that renders earlier turns unchanged (most chat templates do)."
            )
        return closed[closed.rindex(PLACEHOLDER) + len(PLACEHOLDER) :], opened[len(closed) :]


# -------------------------------------------------------------------- the episode loop


@dataclass
class _Episode:
    """One episode while it runs."""

    prompt: Prompt
    """The task's prompt (handed to the environment)."""
    seen: Prompt
    """The prompt with the messages the student answers first."""
    state: Any
    history: list[int]
    """Every token of the episode: the prompt's, then the region's."""
    messages: list[ChatMessage]
    region_ids: list[int] = field(default_factory=list)
    region_student: list[int] = field(default_factory=list)
    region_logprobs: list[float] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    turns: int = 0
    reward: float = 0.0
    counts: dict[str, float] = field(default_factory=dict)
    end: str | None = None

    def add(self, ids: Sequence[int], student: bool, logprobs: Sequence[float] | None) -> None:
        self.history.extend(ids)
        self.region_ids.extend(ids)
        self.region_student.extend([int(student)] * len(ids))
        self.region_logprobs.extend(logprobs if logprobs is not None else [0.0] * len(ids))

    def summary(self) -> EpisodeSummary:
        return EpisodeSummary(
            turns=self.turns, reward=self.reward, end=self.end or DONE, counts=dict(self.counts)
        )


class EpisodeRunner:
    """Runs a batch of episodes turn by turn and lays them out as a :class:`RolloutBatch`."""

    def __init__(
        self,
        env: EnvironmentCalls,
        tokenizer: Any,
        stop_ids: Sequence[int],
        max_new_tokens: int,
        budgets: EpisodeConfig,
        max_length: int | None,
        sampler_role: str = "student",
    ) -> None:
        if not stop_ids:
            raise OPDError(
                "An environment needs the student to end its turns with a stop token, but its "
                "tokenizer and generation config name no EOS token; set one."
            )
        self.env = env
        self.tokenizer = tokenizer
        self.template = TurnTemplate(tokenizer)
        self.stop_ids = tuple(stop_ids)
        self.stop_texts = {
            i: tokenizer.decode([i], skip_special_tokens=False) for i in self.stop_ids
        }
        self.max_new_tokens = max_new_tokens
        self.max_turns = budgets.max_turns
        self.max_tokens = budgets.max_tokens
        self.max_length = max_length
        self.sampler_role = sampler_role
        self.pad_id = completion_pad_id(tokenizer)

    @staticmethod
    def for_run(
        ctx: RunContext,
        max_new_tokens: int,
        sampler_role: str = "student",
        max_length: int | None = None,
    ) -> EpisodeRunner | None:
        """The runner of a run with an environment (``None`` without one): the student's
        tokenizer, stop tokens and context length (or ``max_length`` when the sampler holds
        less, e.g. an engine's ``max_model_len``), and the run's ``episode`` budgets."""
        env = EnvironmentCalls.for_run(ctx)
        if env is None:
            return None
        student = ctx.student
        limits = [n for n in (model_max_length(student.model), max_length) if n is not None]
        return EpisodeRunner(
            env,
            student.tokenizer,
            eos_ids(student.model, student.tokenizer),
            max_new_tokens,
            ctx.config.episode,
            min(limits) if limits else None,
            sampler_role,
        )

    def with_tokenizer(self, tokenizer: Any) -> EpisodeRunner:
        """The same runner working with another tokenizer object (a copy for another thread)."""
        other = EpisodeRunner.__new__(EpisodeRunner)
        other.__dict__.update(self.__dict__)
        other.tokenizer = tokenizer
        other.template = TurnTemplate(tokenizer)
        return other

    def run(
        self, prompts: Sequence[Prompt], samples_per_prompt: int, generate_turn: GenerateTurn
    ) -> RolloutBatch:
        """``samples_per_prompt`` episodes of each prompt (consecutive rows), their turns written
        by ``generate_turn``."""
        expanded = [p for p in prompts for _ in range(samples_per_prompt)]
        starts = [self.env.start(p) for p in expanded]
        seen = [replace(p, messages=s.messages) for p, s in zip(expanded, starts, strict=True)]
        prompt_ids_BP, prompt_mask_BP = encode_prompts(self.tokenizer, seen)
        episodes = [
            _Episode(
                prompt=p,
                seen=s,
                state=start.state,
                history=ids[mask.bool()].tolist(),
                messages=[dict(m) for m in start.messages],
            )
            for p, s, start, ids, mask in zip(
                expanded, seen, starts, prompt_ids_BP, prompt_mask_BP, strict=True
            )
        ]
        while True:
            requests = [
                self._request(row, e) for row, e in enumerate(episodes) if self._may_continue(e)
            ]
            if not requests:
                break
            self._turn(episodes, requests, generate_turn)
        return self._batch(
            prompts, samples_per_prompt, seen, episodes, prompt_ids_BP, prompt_mask_BP
        )

    # ------------------------------------------------------------ one turn

    def _room(self, e: _Episode, more: int) -> str | None:
        """The budget that leaves no token to sample after ``more`` further tokens, if any."""
        if self.max_tokens is not None and len(e.region_ids) + more >= self.max_tokens:
            return MAX_TOKENS
        if self.max_length is not None and len(e.history) + more >= self.max_length:
            return CONTEXT
        return None

    def _may_continue(self, e: _Episode) -> bool:
        """Whether episode ``e`` writes another turn (it may be cut here, before its first)."""
        if e.end is None:
            e.end = self._room(e, 0)
        return e.end is None

    def _request(self, row: int, e: _Episode) -> TurnRequest:
        limit = self.max_new_tokens
        if self.max_tokens is not None:
            limit = min(limit, self.max_tokens - len(e.region_ids))
        if self.max_length is not None:
            limit = min(limit, self.max_length - len(e.history))
        return TurnRequest(
            episode=row,
            turn=e.turns + 1,
            token_ids=tuple(e.history),
            messages=tuple(e.messages),
            max_new_tokens=limit,
            prompt=e.seen,
        )

    def _turn(
        self,
        episodes: list[_Episode],
        requests: Sequence[TurnRequest],
        generate_turn: GenerateTurn,
    ) -> None:
        """Write one turn of every requested episode, let the environment answer, and append
        the answers of the episodes that go on."""
        sampled = list(generate_turn(requests))
        if len(sampled) != len(requests):
            raise OPDError(
                f"The sampler wrote {len(sampled)} turns for {len(requests)} episodes; its "
                "generate_turn must answer every request, in order."
            )
        ids_rows, logprob_rows = self._cut(sampled, requests)
        texts = self.tokenizer.batch_decode(ids_rows, skip_special_tokens=True)
        going_on: list[tuple[_Episode, tuple[ChatMessage, ...], str, int | None]] = []
        for request, turn, ids, logprobs, text in zip(
            requests, sampled, ids_rows, logprob_rows, texts, strict=True
        ):
            e = episodes[request.episode]
            if turn.trained:
                e.add(ids, student=True, logprobs=logprobs)
            else:
                e.add(ids, student=False, logprobs=None)
            e.texts.append(text)
            e.turns += 1
            reply = self.env.step(e.prompt, e.state, text, e.turns)
            e.state = reply.state
            e.reward += reply.reward
            for key, value in reply.counts.items():
                e.counts[key] = e.counts.get(key, 0.0) + float(value)
            if reply.done:
                e.end = DONE
            elif e.turns >= self.max_turns:
                e.end = MAX_TURNS
            else:
                stop = ids[-1] if ids and ids[-1] in self.stop_texts else None
                going_on.append((e, reply.messages, text, stop))
        if not going_on:
            return
        suffixes = [self._observation_text(e, obs, stop) for e, obs, _, stop in going_on]
        env_rows = self.tokenizer(suffixes, add_special_tokens=False)["input_ids"]
        for (e, observation, text, _), env_ids in zip(going_on, env_rows, strict=True):
            e.end = self._room(e, len(env_ids))
            if e.end is None:
                e.add(env_ids, student=False, logprobs=None)
                e.messages += [{"role": "assistant", "content": text}, *observation]

    def _cut(
        self, sampled: Sequence[SampledTurn], requests: Sequence[TurnRequest]
    ) -> tuple[list[list[int]], list[list[float] | None]]:
        """Each turn's tokens through its first stop token and within its limit (batched)."""
        rows = [list(s.token_ids) for s in sampled]
        ids_BC, _ = pad_right(rows, self.pad_id)
        stopped_B = completion_mask(ids_BC, self.stop_ids).sum(1) if ids_BC.numel() else None
        lengths = [
            min(len(row), r.max_new_tokens, int(stopped_B[b]) if stopped_B is not None else 0)
            for b, (row, r) in enumerate(zip(rows, requests, strict=True))
        ]
        logprobs: list[list[float] | None] = []
        for s, n in zip(sampled, lengths, strict=True):
            if s.logprobs is None:
                logprobs.append(None)
            elif len(s.logprobs) < n:
                raise OPDError(
                    f"The sampler returned {len(s.logprobs)} log-probabilities for a turn of "
                    f"{n} tokens; give one per sampled token."
                )
            else:
                logprobs.append(list(s.logprobs[:n]))
        return [row[:n] for row, n in zip(rows, lengths, strict=True)], logprobs

    def _observation_text(
        self, e: _Episode, observation: Sequence[ChatMessage], stop: int | None
    ) -> str:
        """The text appended after a turn: the template's end of turn past the stop token the
        student sampled (all of it when the turn was cut without one), then ``observation`` up
        to the next generation prompt."""
        end_of_turn, suffix = self.template.around_turn(e.seen.messages, observation)
        stop_text = self.stop_texts.get(stop, "") if stop is not None else ""
        if stop_text and end_of_turn.startswith(stop_text):
            end_of_turn = end_of_turn[len(stop_text) :]
        return end_of_turn + suffix

    # ------------------------------------------------------------ the batch

    def _batch(
        self,
        prompts: Sequence[Prompt],
        samples_per_prompt: int,
        seen: Sequence[Prompt],
        episodes: Sequence[_Episode],
        prompt_ids_BP: torch.Tensor,
        prompt_mask_BP: torch.Tensor,
    ) -> RolloutBatch:
        region_ids_BR, region_mask_BR = pad_right([e.region_ids for e in episodes], self.pad_id)
        student_BR, _ = pad_right([e.region_student for e in episodes], 0)
        logprobs_BR = torch.zeros(region_ids_BR.shape, dtype=torch.float32)
        for row, e in enumerate(episodes):  # one row at a time, not one token
            logprobs_BR[row, : len(e.region_logprobs)] = torch.tensor(
                e.region_logprobs, dtype=torch.float32
            )
        completion_mask_BT = torch.cat([torch.zeros_like(prompt_mask_BP), student_BR], dim=1)
        sampler_logprobs_BT = torch.cat(
            [torch.zeros(prompt_ids_BP.shape, dtype=torch.float32), logprobs_BR], dim=1
        )
        return RolloutBatch(
            prompts=tuple(seen),
            group_ids_B=torch.arange(len(prompts)).repeat_interleave(samples_per_prompt),
            input_ids_BT=torch.cat([prompt_ids_BP, region_ids_BR], dim=1),
            attention_mask_BT=torch.cat([prompt_mask_BP, region_mask_BR], dim=1),
            completion_mask_BT=completion_mask_BT,
            sampler_logprobs_BT=sampler_logprobs_BT * completion_mask_BT,
            completions=tuple("\n".join(e.texts) for e in episodes),
            prompt_len=int(prompt_ids_BP.shape[1]),
            sampler_role=self.sampler_role,
            episodes=tuple(e.summary() for e in episodes),
        )


# -------------------------------------------------------------------- episodes as text


@dataclass(frozen=True)
class TextEpisode:
    """An episode run at the text level (evaluation): the conversation and its summary."""

    messages: tuple[ChatMessage, ...]
    summary: EpisodeSummary


def run_text_episodes(
    env: EnvironmentCalls,
    generator: Generator,
    prompts: Sequence[Prompt],
    params: GenerationParams,
    max_turns: int,
) -> list[TextEpisode]:
    """Run one episode per prompt at the text level: the messages so far go to
    ``generator.generate`` (batched over the live episodes), its text to the environment, the
    environment's messages are appended; until done or ``max_turns`` turns."""
    starts = [env.start(p) for p in prompts]
    convs = [list(s.messages) for s in starts]
    states = [s.state for s in starts]
    turns = [0] * len(prompts)
    rewards = [0.0] * len(prompts)
    counts: list[dict[str, float]] = [{} for _ in prompts]
    ends: list[str | None] = [None] * len(prompts)
    while True:
        live = [i for i, end in enumerate(ends) if end is None]
        if not live:
            break
        asked = [replace(prompts[i], messages=tuple(convs[i])) for i in live]
        texts = generator.generate(asked, params)
        for i, text in zip(live, texts, strict=True):
            turns[i] += 1
            reply = env.step(prompts[i], states[i], text, turns[i])
            states[i] = reply.state
            rewards[i] += reply.reward
            for key, value in reply.counts.items():
                counts[i][key] = counts[i].get(key, 0.0) + float(value)
            convs[i].append({"role": "assistant", "content": text})
            if reply.done:
                ends[i] = DONE
            elif turns[i] >= max_turns:
                ends[i] = MAX_TURNS
            else:
                convs[i].extend(reply.messages)
    return [
        TextEpisode(
            messages=tuple(convs[i]),
            summary=EpisodeSummary(turns[i], rewards[i], ends[i] or DONE, counts[i]),
        )
        for i in range(len(prompts))
    ]


def episode_success(summaries: Sequence[EpisodeSummary]) -> list[bool]:
    """Whether each episode succeeded: its environment's ``success`` count when the environment
    reports one for any episode, else a positive reward."""
    if any("success" in s.counts for s in summaries):
        return [s.counts.get("success", 0.0) > 0 for s in summaries]
    return [s.reward > 0 for s in summaries]
