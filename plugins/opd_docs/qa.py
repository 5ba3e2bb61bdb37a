"""Question/answer sets and SQuAD-style answer matching.

A QA file is JSONL, one ``{"question": ..., "answer": ..., "aliases": [...]}`` per line
(``aliases`` optional). A response is correct when the normalised answer, or one of its
aliases, appears in the normalised response as whole words. Normalising lowercases, drops the
articles a/an/the, turns punctuation into spaces (keeping ``3.5`` and ``1,200`` whole: a comma
between digits is a thousands separator and is dropped) and collapses whitespace; so
``"The Zentrix-9."`` matches ``zentrix 9`` but ``1200`` does not match ``120``.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from opd_core import OPDError
from opd_core.api import read_jsonl

_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_DECIMAL_POINT = re.compile(r"(?<=\d)\.(?=\d)")
_KEEP = "\x00"  # stands for a decimal point while punctuation is removed
_PUNCTUATION = re.compile(f"[{re.escape(string.punctuation)}]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


@dataclass(frozen=True)
class QAItem:
    """One question with its answer and accepted alternative answers."""

    question: str
    answer: str
    aliases: tuple[str, ...] = ()

    @property
    def accepted(self) -> tuple[str, ...]:
        return (self.answer, *self.aliases)


def read_qa_jsonl(path: Path) -> list[QAItem]:
    """The items of a QA file; a malformed line is named by ``file:line``."""
    items = []
    for where, record in read_jsonl(path):
        if not isinstance(record, dict):
            raise OPDError(f"{where}: expected a JSON object with question and answer.")
        question, answer = record.get("question"), record.get("answer")
        aliases = record.get("aliases", [])
        if not isinstance(question, str) or not question.strip():
            raise OPDError(f"{where}: 'question' must be a non-empty string.")
        if not isinstance(answer, (str, int, float)) or not normalize_answer(str(answer), False):
            raise OPDError(f"{where}: 'answer' must be a non-empty string or number.")
        if not isinstance(aliases, list) or not all(isinstance(a, (str, int)) for a in aliases):
            raise OPDError(f"{where}: 'aliases' must be a list of strings.")
        items.append(QAItem(question.strip(), str(answer), tuple(str(a) for a in aliases)))
    if not items:
        raise OPDError(f"{path} holds no questions; write one JSON object per line.")
    return items


def normalize_answer(text: str, drop_articles: bool = True) -> str:
    """Lowercase, no articles, punctuation as spaces (decimal points kept), single spaces."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = _THOUSANDS.sub("", text)
    text = _DECIMAL_POINT.sub(_KEEP, text)
    text = _PUNCTUATION.sub(" ", text).replace(_KEEP, ".")
    if drop_articles:
        text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def answer_matches(response: str, accepted: Sequence[str]) -> bool:
    """Whether any accepted answer appears in ``response`` as whole words, after normalising
    (articles are kept for an answer that is nothing but one, such as the choice ``A``)."""
    for answer in accepted:
        drop_articles = bool(normalize_answer(answer))
        wanted = normalize_answer(answer, drop_articles)
        if wanted and f" {wanted} " in f" {normalize_answer(response, drop_articles)} ":
            return True
    return False
