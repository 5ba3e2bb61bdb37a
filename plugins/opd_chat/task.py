"""The ``chat`` task: instruction prompts for on-policy distillation, no grader.

Used to restore a model's chat behaviour after fine-tuning (the seed's personalization
experiment): the student answers the prompts and the original model, as teacher, scores every
token. Prompts come from a local JSONL file (``prompt`` or ``messages`` per line) or any
``datasets`` source; records that carry an answer also give ``Prompt.reference``, so
``sampler=dataset`` turns the same task into plain chat SFT.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from opd_core import Prompt, hookimpl
from opd_core.api import ChatExample, ChatFields, load_rows, parse_chat_record, read_chat_jsonl


@dataclass(frozen=True)
class ChatSource:
    """Where the prompts come from: a local ``.jsonl`` file, or ``datasets.load_dataset(path)``
    (a Hub id, a local ``.json``/``.parquet`` file, or a loader name with ``data_files``)."""

    path: str
    split: str = "train"
    data_files: str | list[str] | None = None
    name: str | None = None
    limit: int | None = None
    prompt_field: str = "prompt"
    messages_field: str = "messages"
    response_field: str = "response"

    @property
    def fields(self) -> ChatFields:
        return ChatFields(self.prompt_field, self.messages_field, self.response_field)


def load_chat_examples(
    source: ChatSource, where: str, need_response: bool = False
) -> list[ChatExample]:
    """Read and validate every example of ``source`` (``where``: its config key)."""
    if source.path.endswith(".jsonl") and source.data_files is None:
        return read_chat_jsonl(
            Path(source.path).expanduser(), source.fields, need_response, source.limit
        )
    rows = load_rows(
        source.path,
        source.split,
        source.data_files,
        source.name,
        source.limit,
        where=where,
        what=f"the chat task's {where.rsplit('.', 1)[-1]}",
    )
    return [
        parse_chat_record(row, f"{source.path} row {index}", source.fields, need_response)
        for index, row in enumerate(rows)
    ]


class ChatTask:
    """Instruction prompts; the completions are not graded (``opd_grade_completions`` has no
    answer from this task), so pair it with a teacher-scored objective such as reverse KL."""

    def __init__(self, train: Mapping[str, Any], teacher_context: str | None = None) -> None:
        """``teacher_context``: a system prompt only the teacher sees (``teacher=context``)."""
        self.source = ChatSource(**train)
        self.teacher_context = teacher_context
        self._prompts: list[Prompt] | None = None

    @hookimpl
    def opd_task_prompts(self, split: str) -> Sequence[Prompt]:
        if split != "train":
            return []
        if self._prompts is None:
            examples = load_chat_examples(self.source, where="task.train")
            self._prompts = [
                replace(e.to_prompt(f"chat-{i}", "chat"), teacher_context=self.teacher_context)
                for i, e in enumerate(examples)
            ]
        return self._prompts
