"""Character spans of tokens, and moving per-token log-probabilities between two tokenizations
of the same text.

A teacher with another tokenizer scores the text the student wrote in its own tokens. Each
teacher token's log-probability is spread over the student tokens its characters overlap, in
proportion to the overlap (a teacher token with no characters goes to the student token at its
position). Every teacher log-probability lands on exactly one or several student tokens, so
the sum over a sequence is kept exactly; a student token whose span is exactly one teacher
token's gets that token's log-probability exactly.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

Span = tuple[int, int]
"""``(start, end)`` character offsets, end exclusive."""


def token_pieces(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """The text each token adds when ``ids`` are decoded in order (special tokens as their
    text); a token that only starts a multi-byte character adds ``""`` and the token that
    completes it adds the character. ``"".join`` of the pieces is the decoded text."""
    from tokenizers.decoders import DecodeStream

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError(
            f"{type(tokenizer).__name__} is not a fast (Rust) tokenizer, which cross-tokenizer "
            "scoring needs to find each token's characters"
        )
    stream = DecodeStream(skip_special_tokens=False)
    return [stream.step(backend, int(i)) or "" for i in ids]


def piece_spans(pieces: Sequence[str]) -> list[Span]:
    """Consecutive spans of ``pieces`` in their concatenation."""
    spans, end = [], 0
    for piece in pieces:
        spans.append((end, end + len(piece)))
        end += len(piece)
    return spans


SPLITS = ("chars", "last", "segment")
"""How a source token's value is shared among the target groups it overlaps: by shared characters,
or all of it to the last one (the target token that completes it); ``segment`` (see
:func:`segment_values`) needs the target tokens' own log-probabilities."""


def spread(
    values: Sequence[float],
    source: Sequence[Span],
    target: Sequence[Span],
    split: str = "chars",
) -> list[float]:
    """Move per-token ``values`` of the ``source`` spans onto the ``target`` spans.

    ``target`` are consecutive spans covering the text (a tokenization's pieces, some maybe
    empty: a token that starts a multi-byte character writes it together with the next one, so
    it shares that token's span). Tokens that write the same characters form a group, in both
    tokenizations (offsets give every byte piece of a split character the character's span).
    A source group with the span and size of a target group maps onto it one to one; any other
    source value goes to the target groups its span overlaps, split by the number of shared
    characters (``split="chars"``) or all to the last of them (``split="last"``), and evenly
    within a group, and a source span with no characters to the group
    holding its start (the last group when it starts at the end). ``sum(result) ==
    sum(values)`` whenever some target span has characters.
    """
    result = [0.0] * len(target)
    if split not in ("chars", "last"):
        raise ValueError(f"split must be one of chars, last, got {split!r}")
    groups = target_groups(target)
    if not groups:
        return result
    ends = [span[1] for span, _ in groups]
    by_span = {span: members for span, members in groups}
    for span, members in runs(source):
        matched = by_span.get(span)
        if matched is not None and len(matched) == len(members):
            for source_index, target_index in zip(members, matched, strict=True):
                result[target_index] += values[source_index]
            continue
        for source_index in members:
            for target_index, share in shares(span, groups, ends, last_only=split == "last"):
                result[target_index] += values[source_index] * share
    return result


def target_groups(target: Sequence[Span]) -> list[tuple[Span, list[int]]]:
    """Groups of consecutive target tokens writing the same characters, with their span; an
    empty span joins the next token with characters (trailing empty ones join no group)."""
    groups: list[tuple[Span, list[int]]] = []
    waiting: list[int] = []
    for index, (start, end) in enumerate(target):
        waiting.append(index)
        if end > start:
            groups.append(((start, end), waiting))
            waiting = []
    return groups


def runs(source: Sequence[Span]) -> list[tuple[Span, list[int]]]:
    """Consecutive source tokens with the same span, grouped."""
    out: list[tuple[Span, list[int]]] = []
    for index, span in enumerate(source):
        if out and out[-1][0] == tuple(span) and span[1] > span[0]:
            out[-1][1].append(index)
        else:
            out.append(((span[0], span[1]), [index]))
    return out


def shares(
    span: Span,
    groups: Sequence[tuple[Span, list[int]]],
    ends: Sequence[int],
    last_only: bool = False,
) -> list[tuple[int, float]]:
    """``(target index, share)`` of one source token's value; the shares sum to 1. With
    ``last_only`` the last group the span overlaps takes it all."""
    start, end = span
    first = min(bisect.bisect_right(ends, start), len(groups) - 1)
    weights: list[tuple[list[int], float]] = []
    if end > start:
        for (a, b), members in groups[first:]:
            if a >= end:
                break
            if min(b, end) > max(a, start):
                weights.append((members, (min(b, end) - max(a, start)) / (end - start)))
    if not weights:  # no characters, or none inside the text: the group at its start
        weights = [(groups[first][1], 1.0)]
    if last_only:
        weights = [(weights[-1][0], 1.0)]
    total = sum(w for _, w in weights)
    return [(i, w / total / len(members)) for members, w in weights for i in members]


def segment_values(
    values: Sequence[float],
    source: Sequence[Span],
    target: Sequence[Span],
    target_logprobs: Sequence[float],
) -> list[float]:
    """``values`` of the ``source`` tokens moved onto the ``target`` tokens segment by segment.

    A segment is the text between two consecutive points where both tokenizations have a token
    boundary. Each target token of a segment gets its own log-probability (``target_logprobs``)
    plus an equal share of the segment's difference (source values minus target log-probabilities
    over the segment), so a per-token difference ``value - target_logprob`` is the segment's
    difference shared evenly, and a token that is a whole segment gets the source value exactly.
    Sums over segments (and so over the text) equal the source values' (as :func:`spread`).
    """
    result = spread(values, source, target, "chars")
    common = {end for start, end in source if end > start}
    groups = target_groups(target)
    members: list[int] = []
    for index, (span, group) in enumerate(groups):
        members += group
        if span[1] in common or index == len(groups) - 1:
            diff = sum(result[i] - target_logprobs[i] for i in members) / len(members)
            for i in members:
                result[i] = target_logprobs[i] + diff
            members = []
    return result
