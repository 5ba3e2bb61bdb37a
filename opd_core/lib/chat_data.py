"""Chat examples: a conversation to answer and, for training data, the answer to learn.

A record is one JSON object (a JSONL line or a ``datasets`` row) in one of two forms::

    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
    {"prompt": "Hi", "response": "Hello!"}

A final assistant turn (or ``response``) is the reference answer; what comes before it is the
prompt, which must end with a user turn. A record without an answer is a prompt only (fine for
on-policy training, an error where training texts are required).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opd_core.errors import OPDError
from opd_core.lib.jsonl import read_jsonl
from opd_core.types import ChatMessage, Prompt

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class ChatFields:
    """Which fields of a record hold the conversation."""

    prompt: str = "prompt"
    messages: str = "messages"
    response: str = "response"


DEFAULT_FIELDS = ChatFields()


@dataclass(frozen=True)
class ChatExample:
    """One conversation, split into the prompt and the answer to learn (when there is one)."""

    messages: tuple[ChatMessage, ...]
    """The turns before the answer, ending with a user turn."""
    response: str | None = None
    """The reference assistant answer, or None for a prompt-only record."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """The record's other fields (kept as the prompt's metadata)."""

    def to_prompt(self, id: str, source: str) -> Prompt:
        """This example as a task prompt (its answer as ``Prompt.reference``)."""
        return Prompt(
            id=id,
            messages=self.messages,
            metadata=dict(self.extra),
            source=source,
            reference=self.response,
        )


def parse_chat_record(
    record: object, where: str, fields: ChatFields = DEFAULT_FIELDS, need_response: bool = False
) -> ChatExample:
    """Validate one record; ``where`` (``file:line``) starts the error that names a problem."""
    if not isinstance(record, Mapping):
        raise OPDError(f"{where}: expected a JSON object, got {type(record).__name__}.")
    if fields.messages in record and record[fields.messages] is not None:
        example = _from_messages(record[fields.messages], where, fields.messages)
    elif fields.prompt in record and record[fields.prompt] is not None:
        example = _from_prompt(record, where, fields)
    else:
        raise OPDError(
            f"{where}: the record has neither '{fields.messages}' nor '{fields.prompt}' "
            f"(keys: {', '.join(map(str, record)) or 'none'}); give one of them."
        )
    if need_response and example.response is None:
        raise OPDError(
            f"{where}: the record has no answer to train on; end '{fields.messages}' with an "
            f"assistant turn or give '{fields.response}'."
        )
    used = {fields.messages, fields.prompt, fields.response}
    extra = {str(k): v for k, v in record.items() if k not in used}
    return ChatExample(example.messages, example.response, extra)


def _from_messages(raw: object, where: str, key: str) -> ChatExample:
    if not isinstance(raw, list) or not raw:
        raise OPDError(f"{where}: '{key}' must be a non-empty list of {{role, content}} objects.")
    turns: list[ChatMessage] = []
    for index, turn in enumerate(raw):
        role = turn.get("role") if isinstance(turn, Mapping) else None
        content = turn.get("content") if isinstance(turn, Mapping) else None
        if role not in ROLES or not isinstance(content, str):
            raise OPDError(
                f"{where}: '{key}'[{index}] must be an object with a role "
                f"({', '.join(ROLES)}) and a string content, got {json.dumps(turn)[:80]}."
            )
        turns.append({"role": role, "content": content})
    response = None
    if turns[-1]["role"] == "assistant":
        response = turns.pop()["content"]
    if not turns or turns[-1]["role"] != "user":
        raise OPDError(
            f"{where}: the conversation in '{key}' must reach a user turn before the "
            "assistant's answer (the prompt ends with the user's request)."
        )
    return ChatExample(tuple(turns), response)


def _from_prompt(record: Mapping[str, Any], where: str, fields: ChatFields) -> ChatExample:
    prompt = record[fields.prompt]
    if not isinstance(prompt, str) or not prompt.strip():
        raise OPDError(f"{where}: '{fields.prompt}' must be a non-empty string.")
    response = record.get(fields.response)
    if response is not None and not isinstance(response, str):
        raise OPDError(f"{where}: '{fields.response}' must be a string.")
    return ChatExample(({"role": "user", "content": prompt},), response)


def read_chat_jsonl(
    path: Path,
    fields: ChatFields = DEFAULT_FIELDS,
    need_response: bool = False,
    limit: int | None = None,
) -> list[ChatExample]:
    """The chat examples of a JSONL file (the first ``limit`` when given)."""
    examples: list[ChatExample] = []
    for where, record in read_jsonl(path):
        if limit is not None and len(examples) >= limit:
            break
        examples.append(parse_chat_record(record, where, fields, need_response))
    if not examples:
        raise OPDError(f"{path} holds no chat examples; write one JSON object per line.")
    return examples
