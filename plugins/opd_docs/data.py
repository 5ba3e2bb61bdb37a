"""The company-docs data builder: documents become training texts, mixed with chat examples.

1. :func:`read_documents` reads every ``.md``/``.txt`` file under a folder (sorted, recursive);
   any other file is an error, so a stray PDF is not silently skipped.
2. :func:`chunk_text` cuts a document into texts of at most ``max_tokens`` tokens, packing whole
   paragraphs; a paragraph too long on its own is cut at lines, then sentences, then words.
3. :func:`mix` adds chat examples so that documents are ``docs_fraction`` of every epoch (the
   seed used 70:30): all chunks once, and ``round(chunks * (1 - f) / f)`` chat examples drawn
   with a seeded shuffle (whole passes over a chat set smaller than that), then shuffled.

A chunk becomes a :class:`Prompt` whose ``reference`` is the chunk's text: with
``doc_format="text"`` (mid-training, the default) it has no messages, so ``sampler=dataset``
trains on the document's tokens as a plain continuation of the start-of-text token, with no
chat template; with ``doc_format="chat"`` a user turn asks for the document part and the chunk
is the assistant's answer.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from opd_core import OPDError, Prompt

TEXT_SUFFIXES = (".md", ".txt")
DOC_FORMATS = ("text", "chat")
_SEPARATORS = (
    (re.compile(r"\n\s*\n"), "\n\n"),  # paragraphs
    (re.compile(r"\n"), "\n"),  # lines
    (re.compile(r"(?<=[.!?])\s+"), " "),  # sentences
    (re.compile(r"\s+"), " "),  # words
)


@dataclass(frozen=True)
class Document:
    """One text file of the folder."""

    name: str
    """Its path relative to the folder, without the extension (``policies/travel``)."""
    text: str


def read_documents(docs_dir: Path) -> list[Document]:
    """Every ``.md``/``.txt`` document under ``docs_dir``, in path order (hidden files skipped)."""
    if not docs_dir.is_dir():
        raise OPDError(
            f"The documents folder {docs_dir} does not exist; set task.docs_dir to a folder of "
            ".md/.txt files (python -m opd_docs.synthetic --out DIR writes one)."
        )
    documents = []
    for path in sorted(docs_dir.rglob("*")):
        relative = path.relative_to(docs_dir)
        if path.is_dir() or any(part.startswith(".") for part in relative.parts):
            continue
        if path.suffix.lower() not in TEXT_SUFFIXES:
            raise OPDError(
                f"{path} is not a text document (only {'/'.join(TEXT_SUFFIXES)} files are read); "
                "convert it to Markdown or plain text, or move it out of task.docs_dir."
            )
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise OPDError(
                f"{path} is not UTF-8 text (byte {err.start}); save it as UTF-8."
            ) from None
        if text.strip():
            documents.append(Document(relative.with_suffix("").as_posix(), text.strip()))
    if not documents:
        raise OPDError(
            f"The documents folder {docs_dir} has no non-empty .md/.txt file; add documents "
            "or point task.docs_dir elsewhere."
        )
    return documents


def chunk_text(text: str, count_tokens: Callable[[str], int], max_tokens: int) -> list[str]:
    """Cut ``text`` into pieces of at most ``max_tokens`` tokens (``count_tokens`` counts them),
    each as many whole paragraphs as fit; finer cuts only inside a paragraph that is too long.
    ``max_tokens`` > 0 is :class:`opd_docs.task.CompanyDocsTask`'s to check."""
    return _pack(text.strip(), count_tokens, max_tokens, level=0)


def _pack(text: str, count: Callable[[str], int], max_tokens: int, level: int) -> list[str]:
    if count(text) <= max_tokens:
        return [text]
    if level == len(_SEPARATORS):
        return _cut_characters(text, count, max_tokens)
    pattern, joiner = _SEPARATORS[level]
    chunks: list[str] = []
    current = ""
    for piece in (p.strip() for p in pattern.split(text)):
        if not piece:
            continue
        candidate = f"{current}{joiner}{piece}" if current else piece
        if count(candidate) <= max_tokens:
            current = candidate
            continue
        if current:
            chunks.append(current)
        if count(piece) <= max_tokens:
            current = piece
        else:
            chunks.extend(_pack(piece, count, max_tokens, level + 1))
            current = ""
    if current:
        chunks.append(current)
    return chunks


def _cut_characters(text: str, count: Callable[[str], int], max_tokens: int) -> list[str]:
    """Last resort for a single word longer than ``max_tokens``: halve it until pieces fit."""
    if count(text) <= max_tokens or len(text) <= 1:
        return [text]
    middle = len(text) // 2
    return _cut_characters(text[:middle], count, max_tokens) + _cut_characters(
        text[middle:], count, max_tokens
    )


def document_prompts(
    documents: Sequence[Document],
    count_tokens: Callable[[str], int],
    max_tokens: int,
    doc_format: str = "text",
) -> list[Prompt]:
    """Every chunk of every document as a prompt whose ``reference`` (and ``teacher_context``,
    what ``teacher=context`` shows the teacher) is the chunk's text."""
    if doc_format not in DOC_FORMATS:
        raise ValueError(f"doc_format must be one of {', '.join(DOC_FORMATS)}, got {doc_format!r}")
    prompts = []
    for document in documents:
        chunks = chunk_text(document.text, count_tokens, max_tokens)
        for part, chunk in enumerate(chunks, start=1):
            request = (
                f'Write part {part} of {len(chunks)} of the internal document "{document.name}".'
            )
            messages = ({"role": "user", "content": request},) if doc_format == "chat" else ()
            prompts.append(
                Prompt(
                    id=f"doc-{document.name}-{part}",
                    messages=messages,
                    metadata={"document": document.name, "part": part},
                    source="documents",
                    reference=chunk,
                    teacher_context=chunk,
                )
            )
    return prompts


def chat_examples_needed(num_doc_texts: int, docs_fraction: float) -> int:
    """How many chat examples make documents ``docs_fraction`` of an epoch (in (0, 1]:
    :class:`opd_docs.task.CompanyDocsTask` checks it)."""
    return round(num_doc_texts * (1 - docs_fraction) / docs_fraction)


def mix(
    doc_texts: Sequence[Prompt], chat: Sequence[Prompt], docs_fraction: float, seed: int
) -> list[Prompt]:
    """One epoch: every document text and the chat examples that make the ratio, shuffled.

    The chat examples are drawn in seeded shuffled passes over ``chat``; an example drawn again
    (a chat set smaller than needed) gets a ``#<n>`` suffix on its id.
    """
    rng = random.Random(seed)
    needed = chat_examples_needed(len(doc_texts), docs_fraction)
    if needed and not chat:
        raise ValueError(f"docs_fraction={docs_fraction} needs chat examples, but there are none")
    drawn: list[Prompt] = []
    while len(drawn) < needed:
        order = list(chat)
        rng.shuffle(order)
        repeat = len(drawn) // len(chat)
        drawn.extend(
            replace(p, id=f"{p.id}#{repeat}") if repeat else p for p in order[: needed - len(drawn)]
        )
    epoch = [*doc_texts, *drawn]
    rng.shuffle(epoch)
    return epoch
