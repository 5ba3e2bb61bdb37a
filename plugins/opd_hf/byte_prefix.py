"""Byte-prefix matching (BPM): a teacher with another tokenizer gives the student a next-token
target over the student's own vocabulary at every completion position.

At student position ``t`` the student has written the bytes ``b_<t`` of its completion.

- **Context.** The teacher reads its own tokenization of ``b_<t`` (after the prompt in its chat
  template), never its tokenization of the whole completion cut at ``t``: that one knows what
  follows (a BPE writes "3" alone only when no digit follows it).
- **Healing** (:func:`position`). The last teacher token of ``b_<t`` ends where the text was
  cut too. Where a teacher token could go on across the offset and the student's last token has
  no longer student token (its boundary commits to nothing), that token is backed off and the
  target sums over every teacher path that writes its bytes and goes on: one token extending
  them, or a token that is a prefix of them and then what the teacher says after it (a *branch*
  token, scored in the same forward under a tree attention mask), up to ``branch_depth`` tokens.
- **Map.** Each teacher token's probability goes to the *longest student token whose bytes are
  a prefix of the teacher token's bytes* (after the bytes already written); a teacher EOS to
  the student's EOS; a special token both vocabularies have to itself; the rest to a
  *residual* bucket. Sums per student token, renormalised over the followed paths.

What is approximated, and measured per position (:class:`Targets`):

- ``residual``: teacher mass that maps to no student token (kept as its own bucket: the top-k
  objectives' tail holds it);
- ``short``: teacher mass on the teacher token that would start a student token the teacher
  cannot spell (BPM gives that longer student token nothing);
- ``dropped``: the first tokens of paths longer than ``branch_depth`` (an upper bound of what
  they would add);
- the context (``settled``): exact when healed, when no teacher token goes on across the offset,
  or when the teacher's last token is the student's and both vocabularies extend it alike;
  elsewhere the teacher's own merge rules stand in for the student's;
- not measured: the context is the teacher's canonical tokenization of the text, not a sum over
  every tokenization of it.

A position is *exact* when its context is settled and at most :data:`EXACT_TOL` of its mass is
approximated. With the student's own tokenizer the teacher reads the student's tokens and every
token maps to itself: the target is the teacher's distribution, as ``teacher=hf`` gives it.

The tables (:class:`PairMap`) are built once per tokenizer pair; per batch each row's alignment
is its teacher's tokenizer over every prefix (one Rust call) and a trie of teacher sequences
(Python per position), and the targets are torch ops over the flattened contributions
(:func:`assemble_targets`).
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from opd_core import OPDError

EXACT_TOL = 1e-3
"""A position's target is exact when at most this much of its mass is approximated."""
MIN_LOGPROB = float(np.log(np.finfo(np.float32).tiny))
"""Floor of a target log-probability (a student token the teacher gives no mass)."""
BYTE_PROBE = "Ça va? 12+34*5=182 #201\n\tüber € 𝄞 naïve  x"
"""Text every tokenizer must spell byte for byte from its tokens' bytes (multi-byte UTF-8,
digits, whitespace runs)."""
FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


@lru_cache(maxsize=1)
def byte_decoder() -> dict[str, int]:
    """The inverse of GPT-2's byte-to-unicode table (byte-level BPE vocabularies)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def decoder_kinds(tokenizer: Any) -> set[str]:
    """The decoder steps of a fast tokenizer that matter for token bytes: ``bytelevel``,
    ``metaspace`` (``\u2581`` for a space) and ``bytefallback`` (``<0xNN>`` tokens)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise OPDError(
            f"teacher=cross_tokenizer needs fast (Rust) tokenizers, but one is a "
            f"{type(tokenizer).__name__}; load it with use_fast=True."
        )
    decoder = json.loads(backend.decoder.__getstate__()) if backend.decoder is not None else {}
    steps = decoder.get("decoders", [decoder]) if decoder.get("type") == "Sequence" else [decoder]
    kinds = set()
    for step in steps:
        kind = step.get("type")
        if kind == "ByteLevel":
            kinds.add("bytelevel")
        elif kind == "Metaspace" or (
            kind == "Replace" and step.get("pattern", {}).get("String") == "\u2581"
        ):
            kinds.add("metaspace")
        elif kind == "ByteFallback":
            kinds.add("bytefallback")
    return kinds


@dataclass(frozen=True)
class VocabBytes:
    """The bytes each token id writes, for a model's whole output vocabulary."""

    pieces: list[bytes]
    """Bytes of each id (a special token: its text; an id the tokenizer lacks: ``b""``)."""
    special: list[bool]
    """Whether each id is a special token (or unknown to the tokenizer): it prefixes nothing."""
    fallback: list[bool]
    """Whether each id is a SentencePiece byte-fallback token (``<0xNN>``)."""

    @property
    def size(self) -> int:
        return len(self.pieces)


def vocab_bytes(tokenizer: Any, size: int, who: str) -> VocabBytes:
    """The bytes of ids ``0..size-1`` (``size``: the model's vocabulary, maybe larger than the
    tokenizer's), checked on :data:`BYTE_PROBE`; ``who`` names the tokenizer in errors."""
    kinds = decoder_kinds(tokenizer)
    backend = tokenizer.backend_tokenizer
    added = backend.get_added_tokens_decoder()
    table = byte_decoder()
    pieces, special, fallback = [b""] * size, [True] * size, [False] * size
    for text, index in backend.get_vocab(with_added_tokens=True).items():
        if index >= size:
            continue
        token = added.get(index)
        if token is not None:
            pieces[index], special[index] = token.content.encode(), bool(token.special)
            continue
        special[index] = False
        match = FALLBACK.match(text) if "bytefallback" in kinds else None
        if match:
            pieces[index], fallback[index] = bytes([int(match.group(1), 16)]), True
        elif "bytelevel" in kinds and all(c in table for c in text):
            pieces[index] = bytes(table[c] for c in text)
        elif "metaspace" in kinds:
            pieces[index] = text.replace("\u2581", " ").encode()
        else:
            pieces[index] = text.encode()
    result = VocabBytes(pieces, special, fallback)
    ids = tokenizer(BYTE_PROBE, add_special_tokens=False)["input_ids"]
    if b"".join(result.pieces[i] for i in ids) != BYTE_PROBE.encode():
        raise OPDError(
            f"The {who}'s tokens do not spell the text they encode byte for byte (checked on "
            f"{BYTE_PROBE!r}), which teacher.target=byte_prefix needs; use teacher.target=sequence."
        )
    return result


def successor(prefix: bytes) -> bytes | None:
    """The smallest byte string greater than every string starting with ``prefix`` (``None``:
    no bound)."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return None
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


class PairMap:
    """Teacher token -> student token tables for one tokenizer pair.

    Built once per run: :attr:`map_V` (where a teacher token's probability goes at a position
    where it starts) for the whole teacher vocabulary. The rows for positions inside a teacher
    token (its bytes from byte ``s`` on, for every ``s``) are filled the first time a batch needs
    that teacher token (:meth:`fill`): a big vocabulary's every suffix is millions of rows."""

    def __init__(
        self,
        student: VocabBytes,
        teacher: VocabBytes,
        student_eos: int,
        teacher_eos: Sequence[int],
    ) -> None:
        self.student = student
        self.teacher = teacher
        self.student_eos = student_eos
        self.identical = student.pieces == teacher.pieces and student.special == teacher.special
        """The student's tokenizer is the teacher's: the teacher reads the student's tokens."""
        self.lookup: dict[bytes, int] = {}
        """Student token of each byte string (regular tokens over byte-fallback duplicates)."""
        fallback_ids: dict[bytes, int] = {}
        for index, piece in enumerate(student.pieces):
            if piece and not student.special[index]:
                if student.fallback[index]:
                    fallback_ids.setdefault(piece, index)
                    self.lookup.setdefault(piece, index)
                else:
                    self.lookup[piece] = index
        self.student_sorted = sorted(self.lookup)
        """Every student token's bytes, sorted (once each)."""
        self.prefixes: set[bytes] = set()
        """Every prefix of a student token."""
        self.strict: set[bytes] = set()
        """Every strict prefix of a student token."""
        for piece in self.lookup:
            self.strict.update(piece[:n] for n in range(1, len(piece)))
            self.prefixes.update(piece[:n] for n in range(1, len(piece) + 1))
        student_specials = {p: i for i, p in enumerate(student.pieces) if student.special[i] and p}
        teacher_ids = {p: i for i, p in enumerate(teacher.pieces) if p and not teacher.special[i]}
        short = [False] * teacher.size
        self.student_only: set[bytes] = set()
        """Every strict prefix of a student token that no teacher token spells."""
        for piece in self.lookup:  # short: the teacher token that starts such a student token
            if piece not in teacher_ids:
                self.student_only.update(piece[:n] for n in range(1, len(piece)))
                for n in range(len(piece) - 1, 0, -1):  # its longest teacher-token prefix
                    found = teacher_ids.get(piece[:n])
                    if found is not None:
                        short[found] = True
                        break
        mapped = [self.residual] * teacher.size
        eos = set(teacher_eos)
        for index, piece in enumerate(teacher.pieces):
            if teacher.special[index]:
                same = student_specials.get(piece)
                if same is not None:
                    mapped[index] = same
                elif index in eos:
                    mapped[index] = student_eos
            elif piece:  # a byte-fallback token maps to the student's own, where it has one
                same = fallback_ids.get(piece) if teacher.fallback[index] else None
                mapped[index] = self.longest_prefix(piece) if same is None else same
        self.map_V = torch.tensor(mapped, dtype=torch.long)
        """(V_teacher,) int64: the student token a teacher token's probability goes to, at a
        position where the teacher token starts (:attr:`residual` for none)."""
        self.short_V = torch.tensor(short, dtype=torch.bool)
        """(V_teacher,) bool: this teacher token is the longest one that starts a student token
        no teacher token spells (its mass is ``short``: the teacher would write that student
        token with this one and more, and the map gives the longer token nothing)."""
        lengths = [0 if teacher.special[i] else len(p) for i, p in enumerate(teacher.pieces)]
        self.shift_offsets_V = torch.tensor([0, *np.cumsum(lengths).tolist()], dtype=torch.long)
        """(V_teacher + 1,) int64: where each teacher token's rows start in the ``*_flat``
        tables."""
        total = int(self.shift_offsets_V[-1])
        self.shift_flat = torch.full((total,), self.residual, dtype=torch.long)
        """At ``shift_offsets_V[v] + s``: the longest student token that is a prefix of teacher
        token ``v``'s bytes from byte ``s`` on (:attr:`residual` for none); filled by
        :meth:`fill`."""
        self.short_flat = torch.zeros(total, dtype=torch.bool)
        """Same layout: a student token that no teacher token spells extends those bytes."""
        self.filled_V = torch.zeros(teacher.size, dtype=torch.bool)
        self.by_bytes: dict[bytes, list[int]] = {}
        """Teacher ids of each byte string, the regular token first (byte-fallback ones after)."""
        for index, piece in enumerate(teacher.pieces):
            if piece and not teacher.special[index]:
                ids = self.by_bytes.setdefault(piece, [])
                ids.insert(len(ids) if teacher.fallback[index] else 0, index)
        order = sorted(
            (i for ids in self.by_bytes.values() for i in ids), key=teacher.pieces.__getitem__
        )
        self.sorted_bytes = [teacher.pieces[i] for i in order]
        """Every non-special teacher token's bytes, sorted (prefix ranges by bisection)."""
        self.sorted_ids = torch.tensor(order, dtype=torch.long)
        """(n,) int64: the teacher ids in :attr:`sorted_bytes`'s order."""

    @property
    def residual(self) -> int:
        """Index of the residual bucket: one past the student's vocabulary."""
        return self.student.size

    def longest_prefix(self, piece: bytes) -> int:
        """The longest student token whose bytes are a prefix of ``piece`` (the residual if
        none)."""
        best = self.residual
        for n in range(1, len(piece) + 1):
            head = piece[:n]
            if head not in self.prefixes:
                break
            best = self.lookup.get(head, best)
        return best

    def student_extensions(self, piece: bytes) -> int:
        """How many student tokens strictly extend ``piece``."""
        lo = bisect.bisect_right(self.student_sorted, piece)
        bound = successor(piece)
        hi = (
            len(self.student_sorted)
            if bound is None
            else bisect.bisect_left(self.student_sorted, bound)
        )
        return max(0, hi - lo)

    def fill(self, tokens: torch.Tensor) -> None:
        """Fill the per-offset rows of teacher ``tokens`` not filled yet."""
        missing = tokens[~self.filled_V[tokens]].unique().tolist()
        for index in missing:
            piece = self.teacher.pieces[index]
            start = int(self.shift_offsets_V[index])
            rows = [self.longest_prefix(piece[s:]) for s in range(len(piece))]
            self.shift_flat[start : start + len(piece)] = torch.tensor(rows, dtype=torch.long)
            self.short_flat[start : start + len(piece)] = torch.tensor(
                [piece[s:] in self.student_only for s in range(len(piece))], dtype=torch.bool
            )
        self.filled_V[missing] = True

    def extension_range(self, prefix: bytes) -> tuple[int, int]:
        """``[lo, hi)`` in sorted order: the teacher tokens whose bytes strictly extend
        ``prefix``."""
        lo = bisect.bisect_right(self.sorted_bytes, prefix)
        bound = successor(prefix)
        hi = (
            len(self.sorted_bytes)
            if bound is None
            else bisect.bisect_left(self.sorted_bytes, bound)
        )
        return lo, max(lo, hi)

    def prefix_tokens(self, rest: bytes) -> list[tuple[int, list[int]]]:
        """``(length, ids)`` of the teacher tokens spelling ``rest[:length]``, for every
        ``length`` from 1 to ``len(rest)`` that some token spells (regular id first)."""
        return [
            (n, self.by_bytes[rest[:n]])
            for n in range(1, len(rest) + 1)
            if rest[:n] in self.by_bytes
        ]


def build_pair_map(
    student: VocabBytes,
    teacher: VocabBytes,
    student_eos: int,
    teacher_eos: Sequence[int],
) -> PairMap:
    """The tables of one tokenizer pair (:class:`PairMap`)."""
    return PairMap(student, teacher, student_eos, teacher_eos)


class TreeRow:
    """One rollout's teacher token sequences as a trie: the prompt, then every position's
    context and every branch path after it (a sequence shared by several is scored once)."""

    def __init__(self, prompt_ids: Sequence[int]) -> None:
        if not prompt_ids:
            raise OPDError("The teacher's rendering of a prompt is empty; it needs a prompt.")
        self.ids: list[int] = []
        self.parents: list[int] = []
        """Per node: the node before it, -1 for the first."""
        self.depths: list[int] = []
        """Per node: its position in its sequence."""
        self.children: dict[tuple[int, int], int] = {}
        node = -1
        for token in prompt_ids:
            node = self.add(node, token)
        self.prompt_end = node
        """The node of the prompt's last token (its output predicts the completion's first)."""

    def add(self, parent: int, token: int) -> int:
        """The node of ``token`` after ``parent`` (added unless present)."""
        key = (parent, token)
        node = self.children.get(key)
        if node is None:
            node = len(self.ids)
            self.children[key] = node
            self.ids.append(token)
            self.parents.append(parent)
            self.depths.append(0 if parent < 0 else self.depths[parent] + 1)
        return node

    def path(self, tokens: Sequence[int]) -> int:
        """The node after the prompt and ``tokens``."""
        node = self.prompt_end
        for token in tokens:
            node = self.add(node, token)
        return node


@dataclass
class BatchPlan:
    """Every position's target as sums over teacher outputs, for a batch of rows.

    An *output* is a trie node of a row (:class:`TreeRow`): the teacher's distribution of the
    token after that node's sequence. Contributions add, to position ``n``, the mass of an
    output's distribution times the probability of the path from the position's context
    output to it: ``full`` maps every teacher token (:attr:`PairMap.map_V`), ``ext`` only the
    tokens strictly extending a byte string (sorted range ``[lo, hi)``, mapped from byte
    ``shift`` on), ``cut`` sums the mass of single tokens whose paths are not followed.
    """

    rows: list[TreeRow] = field(default_factory=list)
    bases: list[int] = field(default_factory=list)
    """Per row: the output index of its prompt's last node; its later nodes follow in order."""
    full: list[tuple[int, int, int]] = field(default_factory=list)
    """(position, output, context output)."""
    ext: list[tuple[int, int, int, int, int, int]] = field(default_factory=list)
    """(position, output, context output, lo, hi, shift)."""
    cut: list[tuple[int, int, int, int]] = field(default_factory=list)
    """(position, output, context output, teacher id)."""
    healed: list[bool] = field(default_factory=list)
    """Per position: whether its context backs off the teacher's last token."""
    settled: list[bool] = field(default_factory=list)
    """Per position: whether its context is exact (:attr:`Position.settled`)."""

    @property
    def positions(self) -> int:
        return len(self.healed)

    def add_row(self, prompt_ids: Sequence[int]) -> TreeRow:
        """A new row (after every node of the previous one is in place)."""
        previous = self.rows[-1] if self.rows else None
        base = 0 if previous is None else self.bases[-1] + len(previous.ids) - previous.prompt_end
        tree = TreeRow(prompt_ids)
        self.rows.append(tree)
        self.bases.append(base)
        return tree

    def output(self, row: int, node: int) -> int:
        """The output index of (``row``, ``node``), a node at or after the row's prompt end."""
        return self.bases[row] + node - self.rows[row].prompt_end

    @property
    def outputs(self) -> int:
        """Number of outputs: every row's nodes from its prompt's last one on."""
        last = self.rows[-1]
        return self.bases[-1] + len(last.ids) - last.prompt_end if self.rows else 0

    def output_nodes(self) -> list[tuple[int, int]]:
        """(row, node) of every output, in index order."""
        return [
            (row, node)
            for row, tree in enumerate(self.rows)
            for node in range(tree.prompt_end, len(tree.ids))
        ]


@dataclass(frozen=True)
class Position:
    """What the target at one student position is conditioned on."""

    context: Sequence[int]
    """Teacher tokens of the completion before the bytes still to be written."""
    written: bytes
    """Bytes the student wrote after ``context`` (the teacher's paths must write them)."""
    healed: bool
    """Whether ``context`` backed off the teacher's last token of the written text."""
    settled: bool
    """Whether the context is exact: healed, or no teacher token goes on across the offset (its
    boundary there is no artefact), or the teacher's last token is the student's own last token
    and the two vocabularies have as many tokens extending it (the same commitment)."""
    dangling: int = 0
    """Bytes of a character not complete yet among ``written``: a byte-level teacher spends
    one token on each, so a path may be that much longer than ``branch_depth``."""


def position(
    pair: PairMap,
    prefix_ids: Sequence[int],
    dangling: bytes,
    student_last: bytes | None,
    heal: bool = True,
) -> Position:
    """The conditioning at a student offset whose written text the teacher tokenizes as
    ``prefix_ids`` (+ ``dangling`` bytes of a character not complete yet); ``student_last``:
    the student's last token's bytes (``None`` at the first position).

    The teacher's last token there ends where the text was cut, and a teacher token ending
    somewhere tells the teacher that what follows does not merge with it: "3" as a token says
    the number has ended when the teacher would write "35" as one token. So the last token is
    backed off and every teacher path that writes its bytes and goes on is followed (*healing*)
    when the teacher could have merged across the offset (a teacher token extends those bytes)
    and the student could not (no student token extends its last token: its boundary commits
    to nothing). Otherwise the teacher's tokens are taken as they are: with the student's own
    tokenizer this is its tokenization, and the target the teacher's distribution after it.
    ``heal=False`` never backs off, and spells the bytes of a character not complete yet with
    the teacher's byte tokens (no path through them is followed).
    """
    last = pair.teacher.pieces[prefix_ids[-1]] if prefix_ids else b""
    written = last + dangling
    lo, hi = pair.extension_range(written) if prefix_ids else (0, 0)
    spelled = [pair.by_bytes.get(bytes([b]), [-1])[0] for b in dangling]
    committed = student_last is not None and student_last in pair.strict
    if dangling and (committed or not heal) and -1 not in spelled:
        # the student wrote byte tokens it could have merged, or no paths are followed: the
        # teacher's byte tokens as they are
        lo_d, hi_d = pair.extension_range(dangling)
        extended_alike = hi_d - lo_d == pair.student_extensions(dangling)
        settled = committed and dangling == student_last and extended_alike
        return Position([*prefix_ids, *spelled], b"", False, settled)
    if student_last is None or not prefix_ids:  # nothing (or part of a character) written
        return Position(prefix_ids, dangling, False, not dangling, len(dangling))
    if heal and hi > lo and student_last not in pair.strict:
        return Position(prefix_ids[:-1], written, True, True, len(dangling))
    same = written == student_last and hi - lo == pair.student_extensions(student_last)
    settled = (hi == lo or same) and not dangling
    return Position(prefix_ids, dangling, False, settled, len(dangling))


def row_positions(
    pair: PairMap,
    teacher_tokenizer: Any,
    student_tokenizer: Any,
    completion_ids: Sequence[int],
    stops: Collection[int],
    heal: bool = True,
) -> tuple[list[Position], int]:
    """Each position of a student completion (a final token in ``stops`` is its EOS: the text
    ends before it) as :func:`position` conditions it: the teacher tokenizes the text written
    before each offset (whole characters; the bytes of one not complete yet are ``dangling``).
    With the student's own tokenizer the teacher reads the student's tokens instead (as
    ``teacher=hf`` does; its tokenization of a text cut somewhere can differ from the student's
    of the whole: a whitespace run is split by what follows it, a sampled tokenization need not
    be canonical). Also returns the teacher's token count of the whole text."""
    if pair.identical:  # the student's tokens are the teacher's: read them as they are
        ended = bool(completion_ids) and completion_ids[-1] in stops
        text_ids = list(completion_ids[:-1] if ended else completion_ids)
        return [Position(text_ids[:i], b"", False, True) for i in range(len(completion_ids))], len(
            text_ids
        )
    text, offsets = student_bytes(pair, student_tokenizer, completion_ids, stops)
    string = text.decode("utf-8")
    char_bytes = np.fromiter((len(c.encode()) for c in string), dtype=np.int64, count=len(string))
    char_starts = np.concatenate([[0], np.cumsum(char_bytes)])
    chars_N = np.searchsorted(char_starts, np.asarray(offsets, dtype=np.int64), side="right") - 1
    cuts = sorted(set(chars_N.tolist()) | {len(string)})
    backend = teacher_tokenizer.backend_tokenizer  # one Rust call per row, no Python wrapper
    encoded = backend.encode_batch([string[:c] for c in cuts], add_special_tokens=False)
    prefix = dict(zip(cuts, (e.ids for e in encoded), strict=True))
    if sum(len(pair.teacher.pieces[i]) for i in prefix[len(string)]) != len(text):
        raise OPDError(
            "The teacher's tokens of a completion do not spell its bytes (a normalizing "
            "tokenizer?), which teacher.target=byte_prefix needs; use teacher.target=sequence."
        )
    result = []
    for i, (offset, c) in enumerate(zip(offsets, chars_N.tolist(), strict=True)):
        last = pair.student.pieces[completion_ids[i - 1]] if i else None
        dangling = text[int(char_starts[c]) : offset]
        result.append(position(pair, prefix[c], dangling, last, heal=heal))
    return result, len(prefix[len(string)])


def student_bytes(
    pair: PairMap, tokenizer: Any, completion_ids: Sequence[int], stops: Collection[int]
) -> tuple[bytes, list[int]]:
    """The bytes a student completion writes (a final EOS excluded) and the byte offset before
    each of its tokens. A completion that is no valid UTF-8 (a broken sampler's byte pieces) is
    taken as its decoder writes it, replacement characters included."""
    ended = bool(completion_ids) and completion_ids[-1] in stops
    text_ids = list(completion_ids[:-1] if ended else completion_ids)
    pieces = [pair.student.pieces[i] for i in text_ids]
    text = b"".join(pieces)
    try:
        text.decode("utf-8")
    except UnicodeDecodeError:
        from opd_hf.char_spans import token_pieces

        pieces = [p.encode() for p in token_pieces(tokenizer, text_ids)]
        text = b"".join(pieces)
    offsets, at = [], 0
    for piece in pieces:
        offsets.append(at)
        at += len(piece)
    return text, offsets + [at] * ended


def plan_row(
    plan: BatchPlan,
    pair: PairMap,
    prompt_ids: Sequence[int],
    positions: Sequence[Position],
    depth: int,
) -> None:
    """Add one rollout to ``plan``: a target at each of its ``positions``. ``depth`` is how
    many teacher tokens a followed path may spend on the written bytes (0: only tokens that
    extend them)."""
    row = len(plan.rows)
    tree = plan.add_row(prompt_ids)
    for where in positions:
        n = plan.positions
        plan.healed.append(where.healed)
        plan.settled.append(where.settled)
        node = tree.path(where.context)
        context = plan.output(row, node)
        if not where.written:
            plan.full.append((n, context, context))
            continue
        follow(plan, pair, tree, row, n, node, context, where.written, depth + where.dangling)


def follow(
    plan: BatchPlan,
    pair: PairMap,
    tree: TreeRow,
    row: int,
    n: int,
    node: int,
    context: int,
    rest: bytes,
    depth: int,
) -> None:
    """Position ``n``: from trie ``node`` (reached from output ``context`` by a path of teacher
    tokens), the teacher paths that write ``rest`` and go on."""
    output = plan.output(row, node)
    lo, hi = pair.extension_range(rest)
    if hi > lo:
        plan.ext.append((n, output, context, lo, hi, len(rest)))
    for length, ids in pair.prefix_tokens(rest):
        first, others = ids[0], ids[1:]
        for other in others:  # byte-fallback spellings: not followed
            plan.cut.append((n, output, context, other))
        if depth <= 0 or not leads_anywhere(pair, rest[length:], depth - 1):
            plan.cut.append((n, output, context, first))
            continue
        child = tree.add(node, first)
        if length == len(rest):
            plan.full.append((n, plan.output(row, child), context))
        else:
            follow(plan, pair, tree, row, n, child, context, rest[length:], depth - 1)


def leads_anywhere(pair: PairMap, rest: bytes, depth: int) -> bool:
    """Whether a branch token after which ``rest`` is still to be written, with ``depth``
    tokens left, can contribute (else its path counts as not followed, without a branch)."""
    if not rest:
        return True
    lo, hi = pair.extension_range(rest)
    return hi > lo or (depth > 0 and bool(pair.prefix_tokens(rest)))


def tree_masks(
    rows: Sequence[TreeRow], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
    """Left-padded ``ids_BW``, ``position_ids_BW`` (a node's depth), the attention pattern
    ``visible_BWW`` (query, key; True: a node sees itself and its ancestors) and each row's
    padding, for one forward of ``rows``' tries."""
    width = max(len(r.ids) for r in rows)
    B = len(rows)
    ids_BW = torch.full((B, width), pad_id, dtype=torch.long)
    parent_BW = torch.full((B, width), -1, dtype=torch.long)
    pads = []
    for b, r in enumerate(rows):
        pad = width - len(r.ids)
        pads.append(pad)
        ids_BW[b, pad:] = torch.tensor(r.ids)
        parents = torch.tensor(r.parents)
        parent_BW[b, pad:] = torch.where(parents >= 0, parents + pad, -1)
    visible_BWW = torch.eye(width, dtype=torch.bool).repeat(B, 1, 1)  # pads see themselves
    positions_BW = torch.zeros((B, width), dtype=torch.long)
    rows_B1 = torch.arange(B).unsqueeze(1)
    queries_BW = torch.arange(width).expand(B, width)
    ancestor_BW = parent_BW.clone()
    while bool((ancestor_BW >= 0).any()):  # one level of ancestors per round
        live_BW = ancestor_BW >= 0
        visible_BWW[
            rows_B1.expand(B, width)[live_BW], queries_BW[live_BW], ancestor_BW[live_BW]
        ] = True
        positions_BW += live_BW.long()
        ancestor_BW = torch.where(
            live_BW, parent_BW.gather(1, ancestor_BW.clamp(min=0)), torch.full_like(ancestor_BW, -1)
        )
    return ids_BW, positions_BW, visible_BWW, pads


def tree_logprobs(
    model: Any, rows: Sequence[TreeRow], nodes: Sequence[tuple[int, int]], pad_id: int
) -> torch.Tensor:
    """Log-probabilities (fp32) of the teacher's next token after each (row, node) of
    ``nodes``, from one forward of ``rows`` with every node seeing only its ancestors (a 4D
    mask; rows without a branch go through the model's own causal mask). (len(nodes), V)."""
    from opd_core.api import forward_accepts

    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    ids_BW, positions_BW, visible_BWW, pads = tree_masks(rows, pad_id)
    padded = [pads[r] + c for r, c in nodes]
    keep_X = torch.tensor(sorted(set(padded)), dtype=torch.long)
    where = {c: x for x, c in enumerate(keep_X.tolist())}
    chains = all(r.parents == list(range(-1, len(r.ids) - 1)) for r in rows)
    mask: torch.Tensor | dict[str, torch.Tensor]
    if chains:  # no branch anywhere: the model's own causal mask over left padding
        mask = torch.zeros(ids_BW.shape, dtype=torch.long)
        for b, pad in enumerate(pads):
            mask[b, pad:] = 1
    else:
        mask = attention_masks(model, visible_BWW, positions_BW, dtype)
    kwargs: dict[str, Any] = {}
    if forward_accepts(model, "logits_to_keep"):
        kwargs["logits_to_keep"] = keep_X.to(device)
    logits_BXV = model(
        input_ids=ids_BW.to(device),
        attention_mask={k: m.to(device) for k, m in mask.items()}
        if isinstance(mask, dict)
        else mask.to(device),
        position_ids=positions_BW.to(device),
        use_cache=False,
        **kwargs,
    ).logits
    if not kwargs:
        logits_BXV = logits_BXV[:, keep_X.to(device)]
    rows_N = torch.tensor([r for r, _ in nodes], dtype=torch.long, device=device)
    cols_N = torch.tensor([where[c] for c in padded], dtype=torch.long, device=device)
    return torch.log_softmax(logits_BXV[rows_N, cols_N].float(), dim=-1)


def attention_masks(
    model: Any, visible_BWW: torch.Tensor, positions_BW: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor | dict[str, torch.Tensor]:
    """Additive 4D masks (0: attend, dtype's minimum: not) of the pattern, one per layer type
    when the model has several (a sliding-window layer also drops keys a window away)."""
    config = (
        model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    )

    def additive(visible: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(visible.shape, dtype=dtype)
        return out.masked_fill_(~visible, torch.finfo(dtype).min).unsqueeze(1)

    layer_types = getattr(config, "layer_types", None)
    if not layer_types:
        return additive(visible_BWW)
    masks = {}
    window = getattr(config, "sliding_window", None)
    for kind in set(layer_types):
        visible = visible_BWW
        if kind == "sliding_attention" and window:
            gap_BWW = positions_BW.unsqueeze(2) - positions_BW.unsqueeze(1)
            visible = visible & (gap_BWW < window)
        masks[kind] = additive(visible)
    return masks


@dataclass(frozen=True)
class Targets:
    """Every planned position's target over the student's vocabulary plus the residual."""

    probs_NS: torch.Tensor
    """(N, V_student + 1) float64: the target distribution, the residual bucket last."""
    residual_N: torch.Tensor
    short_N: torch.Tensor
    dropped_N: torch.Tensor
    """(N,) each: approximated mass (module docstring); ``dropped`` is a share of the followed
    paths plus the not-followed ones."""
    healed_N: torch.Tensor
    """(N,) bool: the context backed off the teacher's last token (healing)."""
    settled_N: torch.Tensor
    """(N,) bool: the context is exact (:attr:`Position.settled`)."""

    @property
    def exact_N(self) -> torch.Tensor:
        """(N,) bool: the context is exact and at most :data:`EXACT_TOL` of the target is
        approximated."""
        approximated_N = self.residual_N + self.short_N + self.dropped_N
        return (approximated_N <= EXACT_TOL) & self.settled_N


def assemble_targets(plan: BatchPlan, pair: PairMap, logprobs_RV: torch.Tensor) -> Targets:
    """The targets of ``plan`` from the teacher's log-probabilities at its outputs (row ``r`` of
    ``logprobs_RV`` is output ``r``, :meth:`BatchPlan.output_nodes`'s order), in torch ops over
    the flattened contributions."""
    device = logprobs_RV.device
    N, S1 = plan.positions, pair.student.size + 1
    probs_NS = torch.zeros((N, S1), dtype=torch.float64, device=device)
    short_N = torch.zeros(N, dtype=torch.float64, device=device)
    cut_N = torch.zeros(N, dtype=torch.float64, device=device)
    logw_R = path_log_weights(plan, logprobs_RV)
    map_V, short_V = pair.map_V.to(device), pair.short_V.to(device).double()
    if plan.full:
        full = torch.tensor(plan.full, dtype=torch.long, device=device)
        chunk = max(1, (1 << 24) // logprobs_RV.shape[1])
        for part in full.split(chunk):
            n_F, r_F, c_F = part.unbind(1)
            weight_F = logw_R[r_F] - logw_R[c_F]
            mass_FV = (logprobs_RV[r_F].double() + weight_F.unsqueeze(1)).exp()
            index_FV = (n_F.unsqueeze(1) * S1 + map_V.unsqueeze(0)).expand_as(mass_FV)
            probs_NS.view(-1).scatter_add_(0, index_FV.reshape(-1), mass_FV.reshape(-1))
            short_N.index_add_(0, n_F, mass_FV @ short_V)
    if plan.ext:
        ext = torch.tensor(plan.ext, dtype=torch.long, device=device)
        n_E, r_E, c_E, lo_E, hi_E, shift_E = ext.unbind(1)
        sizes_E = hi_E - lo_E
        which_X = torch.repeat_interleave(torch.arange(len(ext), device=device), sizes_E)
        starts_E = torch.cumsum(sizes_E, 0) - sizes_E
        rank_X = lo_E[which_X] + torch.arange(len(which_X), device=device) - starts_E[which_X]
        token_X = pair.sorted_ids.to(device)[rank_X]
        pair.fill(token_X.cpu())
        flat_X = pair.shift_offsets_V.to(device)[token_X] + shift_E[which_X]
        target_X = pair.shift_flat.to(device)[flat_X]
        weight_E = logw_R[r_E] - logw_R[c_E]
        mass_X = (logprobs_RV[r_E[which_X], token_X].double() + weight_E[which_X]).exp()
        probs_NS.view(-1).index_add_(0, n_E[which_X] * S1 + target_X, mass_X)
        short_X = pair.short_flat.to(device)[flat_X].double()
        short_N.index_add_(0, n_E[which_X], mass_X * short_X)
    if plan.cut:
        cut = torch.tensor(plan.cut, dtype=torch.long, device=device)
        n_C, r_C, c_C, token_C = cut.unbind(1)
        weight_C = logw_R[r_C] - logw_R[c_C]
        mass_C = (logprobs_RV[r_C, token_C].double() + weight_C).exp()
        cut_N.index_add_(0, n_C, mass_C)
    total_N = probs_NS.sum(-1)
    empty_N = total_N <= 0  # every followed path underflowed: all residual
    probs_NS[empty_N, -1] = 1.0
    total_N = torch.where(empty_N, torch.ones_like(total_N), total_N)
    probs_NS /= total_N.unsqueeze(1)
    return Targets(
        probs_NS=probs_NS,
        residual_N=probs_NS[:, -1],
        short_N=short_N / total_N,
        dropped_N=cut_N / (total_N + cut_N),
        healed_N=torch.tensor(plan.healed, dtype=torch.bool, device=device),
        settled_N=torch.tensor(plan.settled, dtype=torch.bool, device=device),
    )


def path_log_weights(plan: BatchPlan, logprobs_RV: torch.Tensor) -> torch.Tensor:
    """(R,) float64: per output, the teacher's log-probability of its node's tokens after its
    row's prompt (0 at the prompt's last node), summed down the trie level by level; the
    difference of two is a path's log-probability from one node to its descendant."""
    device = logprobs_RV.device
    parents, tokens, levels = [], [], []
    for row, tree in enumerate(plan.rows):
        start, base = tree.prompt_end, plan.bases[row]
        parent_X = torch.tensor(tree.parents[start:], dtype=torch.long) - start + base
        parent_X[0] = -1
        parents.append(parent_X)
        tokens.append(torch.tensor(tree.ids[start:], dtype=torch.long))
        levels.append(torch.tensor(tree.depths[start:], dtype=torch.long) - tree.depths[start])
    if not parents:
        return torch.zeros(0, dtype=torch.float64, device=device)
    parent_R = torch.cat(parents).to(device)
    token_R, level_R = torch.cat(tokens).to(device), torch.cat(levels).to(device)
    own_R = logprobs_RV[parent_R.clamp(min=0), token_R].double()
    logw_R = torch.zeros(len(parent_R), dtype=torch.float64, device=device)
    for level in range(1, int(level_R.max()) + 1):
        at = (level_R == level).nonzero().squeeze(1)
        logw_R[at] = logw_R[parent_R[at]] + own_R[at]
    return logw_R
