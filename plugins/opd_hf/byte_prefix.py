"""Byte-prefix matching (BPM): a teacher with another tokenizer gives the student a next-token
target over the student's own vocabulary at every completion position.

At student position ``t`` the student has written the bytes ``b_<t`` of its completion. The
teacher reads the same text in its own tokens (its canonical tokenization of the whole
completion) and is asked at that byte offset:

- **on a teacher token boundary** the teacher's next-token distribution there (its context is
  its tokenization of exactly ``b_<t``) is mapped onto the student's vocabulary: each teacher
  token's probability goes to the *longest student token whose bytes are a prefix of the
  teacher token's bytes*; a teacher EOS goes to the student's EOS; what maps nowhere (a teacher
  special token, bytes no student token starts) is the *residual*;
- **inside a teacher token** (the student has written ``p``, the first ``k`` bytes of teacher
  token ``tau_j``) the teacher's context is its tokens before ``tau_j`` and the target is its
  distribution over what follows ``p``, conditioned on ``p``: the teacher paths that write ``p``
  and go on are followed (one token that extends ``p``, whose remaining bytes are mapped as above;
  a token that is a prefix of ``p`` and what the teacher says after it, which needs the teacher's
  output after that token: a *branch* token, scored in the same forward with a tree attention
  mask), and the result is renormalised over the followed paths. Paths of more than
  ``branch_depth`` teacher tokens inside ``p`` are not followed; their first tokens' probability
  is reported (``dropped``, an upper bound of what they would add).

What is approximated, and measured per position (:class:`TargetMetrics`):

- ``residual``: teacher mass that maps to no student token (kept as its own bucket: the top-k
  objectives' tail holds it);
- ``short``: teacher mass on tokens that a longer student-only token extends (the student's
  longer token would have needed the teacher's next tokens as well; BPM gives it nothing);
- ``dropped``: inside a teacher token, the followed paths' competitors not followed;
- always (not measured): the teacher's context is one tokenization of the text (its canonical
  one), not a sum over every tokenization of it.

A position is *exact* when those three add up to at most :data:`EXACT_TOL`. With the student's
own tokenizer every position is a boundary and every teacher token maps to itself: the target is
the teacher's distribution, as ``teacher=hf`` gives it.

The tables (:class:`PairMap`) are built once per tokenizer pair; per batch the alignment of each
row is Python over its tokens' byte offsets (numpy) and the targets are torch ops over the
flattened positions (:func:`assemble_targets`).
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Sequence
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
    decoder = json.loads(backend.to_str()).get("decoder") or {}
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


@dataclass
class PairMap:
    """Teacher token -> student token tables for one tokenizer pair, built once."""

    student: VocabBytes
    teacher: VocabBytes
    map_V: torch.Tensor
    """(V_teacher,) int64: the student token a teacher token's probability goes to, at a
    position where the teacher token starts (``residual`` for none)."""
    short_V: torch.Tensor
    """(V_teacher,) bool: a student token that no teacher token spells extends this teacher
    token's bytes (its mass is ``short``)."""
    shift_offsets_V: torch.Tensor
    """(V_teacher + 1,) int64: where each teacher token's rows start in the ``*_flat`` tables."""
    shift_flat: torch.Tensor
    """(sum of teacher token lengths,) int64: at ``shift_offsets_V[v] + s``, the longest student
    token that is a prefix of teacher token ``v``'s bytes from byte ``s`` on (``residual``)."""
    short_flat: torch.Tensor
    """Same layout, bool: a longer student token extends those bytes (conservatively ``short``)."""
    sorted_bytes: list[bytes]
    """Every non-special teacher token's bytes, sorted (prefix ranges by bisection)."""
    sorted_ids: torch.Tensor
    """(n,) int64: the teacher ids in :attr:`sorted_bytes`'s order."""
    by_bytes: dict[bytes, list[int]]
    """Teacher ids of each byte string, the regular token first (byte-fallback ones after)."""
    student_eos: int

    @property
    def residual(self) -> int:
        """Index of the residual bucket: one past the student's vocabulary."""
        return self.student.size

    def extension_range(self, prefix: bytes) -> tuple[int, int]:
        """``[lo, hi)`` in sorted order: the teacher tokens whose bytes strictly extend
        ``prefix``."""
        lo = bisect.bisect_right(self.sorted_bytes, prefix)
        bound = successor(prefix)
        hi = len(self.sorted_bytes) if bound is None else bisect.bisect_left(self.sorted_bytes, bound)
        return lo, max(lo, hi)

    def prefix_tokens(self, rest: bytes) -> list[tuple[int, list[int]]]:
        """``(length, ids)`` of the teacher tokens spelling ``rest[:length]``, for every
        ``length`` from 1 to ``len(rest)`` that some token spells (regular id first)."""
        return [
            (n, self.by_bytes[rest[:n]]) for n in range(1, len(rest) + 1) if rest[:n] in self.by_bytes
        ]


def build_pair_map(
    student: VocabBytes,
    teacher: VocabBytes,
    student_eos: int,
    teacher_eos: Sequence[int],
) -> PairMap:
    """The tables of one tokenizer pair (Python over the vocabularies, once per run)."""
    residual = student.size
    lookup: dict[bytes, int] = {}  # regular student tokens override byte-fallback duplicates
    for first in (True, False):
        for index, piece in enumerate(student.pieces):
            if piece and not student.special[index] and student.fallback[index] == first:
                lookup[piece] = index
    longest = max((len(p) for p in lookup), default=0)
    student_specials = {
        piece: index for index, piece in enumerate(student.pieces) if student.special[index] and piece
    }
    teacher_set = {p for i, p in enumerate(teacher.pieces) if p and not teacher.special[i]}
    student_sorted = sorted(lookup)

    def longest_prefix(piece: bytes) -> int:
        for n in range(min(len(piece), longest), 0, -1):
            found = lookup.get(piece[:n])
            if found is not None:
                return found
        return residual

    def extended(piece: bytes) -> bool:
        """Whether some student token strictly extends ``piece``."""
        at = bisect.bisect_right(student_sorted, piece)
        return at < len(student_sorted) and student_sorted[at].startswith(piece)

    # a teacher token is "short" when a student token that no teacher token spells extends it
    short = [False] * teacher.size
    teacher_ids = {p: i for i, p in enumerate(teacher.pieces) if p and not teacher.special[i]}
    for piece in lookup:
        if piece in teacher_set:
            continue
        for n in range(1, len(piece)):
            index = teacher_ids.get(piece[:n])
            if index is not None:
                short[index] = True
    map_V = torch.full((teacher.size,), residual, dtype=torch.long)
    offsets = [0]
    flat: list[int] = []
    flat_short: list[bool] = []
    eos = set(teacher_eos)
    for index, piece in enumerate(teacher.pieces):
        if teacher.special[index]:
            same = student_specials.get(piece)
            if same is not None:
                map_V[index] = same
            elif index in eos:
                map_V[index] = student_eos
            offsets.append(offsets[-1])
            continue
        for start in range(len(piece)):
            flat.append(longest_prefix(piece[start:]))
            flat_short.append(extended(piece[start:]))
        offsets.append(len(flat))
        if piece:
            map_V[index] = flat[offsets[-2]]
    by_bytes: dict[bytes, list[int]] = {}
    for index, piece in enumerate(teacher.pieces):
        if piece and not teacher.special[index]:
            ids = by_bytes.setdefault(piece, [])
            ids.insert(len(ids) if teacher.fallback[index] else 0, index)
    order = sorted(
        (i for i, p in enumerate(teacher.pieces) if p and not teacher.special[i]),
        key=lambda i: teacher.pieces[i],
    )
    return PairMap(
        student=student,
        teacher=teacher,
        map_V=map_V,
        short_V=torch.tensor(short, dtype=torch.bool),
        shift_offsets_V=torch.tensor(offsets, dtype=torch.long),
        shift_flat=torch.tensor(flat, dtype=torch.long),
        short_flat=torch.tensor(flat_short, dtype=torch.bool),
        sorted_bytes=[teacher.pieces[i] for i in order],
        sorted_ids=torch.tensor(order, dtype=torch.long),
        by_bytes=by_bytes,
        student_eos=student_eos,
    )


@dataclass
class TreeRow:
    """One rollout in the teacher's tokens: prompt and completion, then the branch tokens."""

    ids: list[int]
    """Teacher prompt + completion tokens, then one token per branch node."""
    n_main: int
    """Number of prompt + completion tokens at the start of ``ids``."""
    anchors: list[int] = field(default_factory=list)
    """Per branch token: how many main tokens it sees (the prompt and the completion tokens
    before the teacher token the student's boundary falls in)."""
    parents: list[int] = field(default_factory=list)
    """Per branch token: the index in ``ids`` of the branch token before it on its path, or -1."""

    def positions(self) -> list[int]:
        """Position id of every token: main tokens count up, a branch token sits where its
        path's token would be."""
        depth = [0] * len(self.anchors)
        for e, parent in enumerate(self.parents):
            depth[e] = 1 if parent < 0 else depth[parent - self.n_main] + 1
        return [*range(self.n_main), *(a + d - 1 for a, d in zip(self.anchors, depth, strict=True))]


@dataclass
class BatchPlan:
    """Every position's target as sums over teacher outputs, for a batch of rows.

    An *output* is a (row, column) of the teacher forward: the distribution of the token after
    that column's context. A *node* is a branch token (its path weight multiplies what follows).
    Contributions add, to position ``n``, an output's mass times its node's path probability:
    ``full`` maps every teacher token (:attr:`PairMap.map_V`), ``ext`` only the tokens strictly
    extending a byte string (sorted range ``[lo, hi)``, mapped from byte ``shift`` on), ``cut``
    sums the mass of single tokens whose paths are not followed.
    """

    rows: list[TreeRow] = field(default_factory=list)
    outputs: dict[tuple[int, int], int] = field(default_factory=dict)
    node_output: list[int] = field(default_factory=list)
    """Per node: the output its token is drawn from (its parent's distribution)."""
    node_token: list[int] = field(default_factory=list)
    node_parent: list[int] = field(default_factory=list)
    """Per node: the node before it on its path, or -1 (the path starts at the root)."""
    node_depth: list[int] = field(default_factory=list)
    """Per node: its path's length before it (0: drawn from the root output)."""
    node_columns: list[tuple[int, int]] = field(default_factory=list)
    """Per node: the (row, column) of its branch token."""
    full: list[tuple[int, int, int]] = field(default_factory=list)
    """(position, output, node or -1)."""
    ext: list[tuple[int, int, int, int, int, int]] = field(default_factory=list)
    """(position, output, node or -1, lo, hi, shift)."""
    cut: list[tuple[int, int, int, int]] = field(default_factory=list)
    """(position, output, node or -1, teacher id)."""
    positions: int = 0
    boundary: list[bool] = field(default_factory=list)
    """Per position: the student's offset is a teacher token boundary."""

    def output(self, row: int, column: int) -> int:
        """The index of output (``row``, ``column``), added on first use."""
        return self.outputs.setdefault((row, column), len(self.outputs))


def plan_row(
    plan: BatchPlan,
    pair: PairMap,
    prompt_ids: Sequence[int],
    text: bytes,
    teacher_ids: Sequence[int],
    offsets: Sequence[int],
    depth: int,
) -> None:
    """Add one rollout to ``plan``: a target at each student byte offset in ``offsets``.

    ``teacher_ids`` are the teacher's tokens of the completion ``text``; ``depth`` is how many
    teacher tokens a followed path may spend inside a teacher token the student's boundary
    splits (0: only tokens extending the written part)."""
    row = len(plan.rows)
    tree = TreeRow(ids=[*prompt_ids, *teacher_ids], n_main=len(prompt_ids) + len(teacher_ids))
    plan.rows.append(tree)
    lengths = np.fromiter((len(pair.teacher.pieces[i]) for i in teacher_ids), dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    if int(starts[-1]) != len(text):
        raise OPDError(
            "The teacher's tokens of a completion do not spell its bytes (a normalizing "
            "tokenizer?), which teacher.target=byte_prefix needs; use teacher.target=sequence."
        )
    offsets_N = np.asarray(offsets, dtype=np.int64)
    # the teacher token each offset falls in (its index j; j = m: the end of the text)
    j_N = np.searchsorted(starts, offsets_N, side="right") - 1
    base = len(prompt_ids) - 1  # column whose output predicts completion token 0
    for offset, j in zip(offsets_N.tolist(), j_N.tolist(), strict=True):
        n = plan.positions
        plan.positions += 1
        k = offset - int(starts[j])
        root = plan.output(row, base + j)
        plan.boundary.append(k == 0)
        if k == 0:
            plan.full.append((n, root, -1))
            continue
        written = pair.teacher.pieces[teacher_ids[j]][:k]
        follow(plan, pair, tree, row, n, root, -1, written, len(prompt_ids) + j, depth)


def follow(
    plan: BatchPlan,
    pair: PairMap,
    tree: TreeRow,
    row: int,
    n: int,
    output: int,
    node: int,
    rest: bytes,
    anchor: int,
    depth: int,
) -> None:
    """Position ``n``: from ``output`` (reached by path ``node``), the teacher paths that write
    ``rest`` and go on."""
    lo, hi = pair.extension_range(rest)
    if hi > lo:
        plan.ext.append((n, output, node, lo, hi, len(rest)))
    for length, ids in pair.prefix_tokens(rest):
        first, others = ids[0], ids[1:]
        for other in others:  # byte-fallback spellings: not followed
            plan.cut.append((n, output, node, other))
        if depth <= 0 or not leads_anywhere(pair, rest[length:], depth - 1):
            plan.cut.append((n, output, node, first))
            continue
        child = len(plan.node_token)
        plan.node_output.append(output)
        plan.node_token.append(first)
        plan.node_parent.append(node)
        plan.node_depth.append(0 if node < 0 else plan.node_depth[node] + 1)
        column = len(tree.ids)
        tree.ids.append(first)
        tree.anchors.append(anchor)
        tree.parents.append(-1 if node < 0 else plan.node_columns[node][1])
        plan.node_columns.append((row, column))
        child_output = plan.output(row, column)
        if length == len(rest):
            plan.full.append((n, child_output, child))
        else:
            follow(plan, pair, tree, row, n, child_output, child, rest[length:], anchor, depth - 1)


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
    """Left-padded ``ids_BW``, ``position_ids_BW``, the attention pattern ``visible_BWW``
    (query, key; True: attends) and each row's padding, for a tree forward of ``rows``."""
    width = max(len(r.ids) for r in rows)
    ids_BW = torch.full((len(rows), width), pad_id, dtype=torch.long)
    positions_BW = torch.zeros((len(rows), width), dtype=torch.long)
    visible_BWW = torch.eye(width, dtype=torch.bool).repeat(len(rows), 1, 1)  # pads see themselves
    pads = []
    for b, r in enumerate(rows):
        pad = width - len(r.ids)
        pads.append(pad)
        ids_BW[b, pad:] = torch.tensor(r.ids)
        positions_BW[b, pad:] = torch.tensor(r.positions())
        main = slice(pad, pad + r.n_main)
        visible_BWW[b, main, main] = torch.tril(torch.ones(r.n_main, r.n_main, dtype=torch.bool))
        for e, (anchor, parent) in enumerate(zip(r.anchors, r.parents, strict=True)):
            q = pad + r.n_main + e
            visible_BWW[b, q, pad : pad + anchor] = True
            if parent >= 0:  # its path: the parent's visible tokens and the parent
                visible_BWW[b, q] |= visible_BWW[b, pad + parent]
    return ids_BW, positions_BW, visible_BWW, pads


def tree_logprobs(
    model: Any, rows: Sequence[TreeRow], columns: Sequence[tuple[int, int]], pad_id: int
) -> torch.Tensor:
    """Log-probabilities (fp32) of the teacher's next token at each (row, column) of
    ``columns`` (column in the unpadded row), from one forward of ``rows`` with every branch
    token seeing only its path. (len(columns), V)."""
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    ids_BW, positions_BW, visible_BWW, pads = tree_masks(rows, pad_id)
    padded = [pads[r] + c for r, c in columns]
    keep_X = torch.tensor(sorted(set(padded)), dtype=torch.long)
    where = {c: x for x, c in enumerate(keep_X.tolist())}
    mask = attention_masks(model, visible_BWW, positions_BW, dtype)
    from opd_core.api import forward_accepts

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
    rows_N = torch.tensor([r for r, _ in columns], dtype=torch.long, device=device)
    cols_N = torch.tensor([where[c] for c in padded], dtype=torch.long, device=device)
    return torch.log_softmax(logits_BXV[rows_N, cols_N].float(), dim=-1)


def attention_masks(
    model: Any, visible_BWW: torch.Tensor, positions_BW: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor | dict[str, torch.Tensor]:
    """Additive 4D masks (0: attend, dtype's minimum: not) of the pattern, one per layer type
    when the model has several (a sliding-window layer also drops keys a window away)."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config

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
    boundary_N: torch.Tensor
    """(N,) bool: the student's offset is a teacher token boundary."""

    @property
    def exact_N(self) -> torch.Tensor:
        """(N,) bool: at most :data:`EXACT_TOL` of the target is approximated."""
        return (self.residual_N + self.short_N + self.dropped_N) <= EXACT_TOL


def assemble_targets(plan: BatchPlan, pair: PairMap, logprobs_RV: torch.Tensor) -> Targets:
    """The targets of ``plan`` from the teacher's log-probabilities at its outputs (row ``r`` of
    ``logprobs_RV`` is output ``r``), in torch ops over the flattened contributions."""
    device = logprobs_RV.device
    N, S1 = plan.positions, pair.student.size + 1
    probs_NS = torch.zeros((N, S1), dtype=torch.float64, device=device)
    short_N = torch.zeros(N, dtype=torch.float64, device=device)
    cut_N = torch.zeros(N, dtype=torch.float64, device=device)
    logw_D = node_log_weights(plan, logprobs_RV)

    def weights(nodes: torch.Tensor) -> torch.Tensor:
        zero = torch.zeros_like(nodes, dtype=torch.float64)
        return torch.where(nodes >= 0, logw_D[nodes.clamp(min=0)], zero) if len(logw_D) else zero

    map_V, short_V = pair.map_V.to(device), pair.short_V.to(device).double()
    if plan.full:
        full = torch.tensor(plan.full, dtype=torch.long, device=device)
        chunk = max(1, (1 << 24) // logprobs_RV.shape[1])
        for part in full.split(chunk):
            n_F, r_F, node_F = part.unbind(1)
            mass_FV = (logprobs_RV[r_F].double() + weights(node_F).unsqueeze(1)).exp()
            index_FV = (n_F.unsqueeze(1) * S1 + map_V.unsqueeze(0)).expand_as(mass_FV)
            probs_NS.view(-1).scatter_add_(0, index_FV.reshape(-1), mass_FV.reshape(-1))
            short_N.index_add_(0, n_F, mass_FV @ short_V)
    if plan.ext:
        ext = torch.tensor(plan.ext, dtype=torch.long, device=device)
        n_E, r_E, node_E, lo_E, hi_E, shift_E = ext.unbind(1)
        sizes_E = hi_E - lo_E
        which_X = torch.repeat_interleave(torch.arange(len(ext), device=device), sizes_E)
        starts_E = torch.cumsum(sizes_E, 0) - sizes_E
        rank_X = lo_E[which_X] + torch.arange(len(which_X), device=device) - starts_E[which_X]
        token_X = pair.sorted_ids.to(device)[rank_X]
        flat_X = pair.shift_offsets_V.to(device)[token_X] + shift_E[which_X]
        target_X = pair.shift_flat.to(device)[flat_X]
        mass_X = (
            logprobs_RV[r_E[which_X], token_X].double() + weights(node_E)[which_X]
        ).exp()
        probs_NS.view(-1).index_add_(0, n_E[which_X] * S1 + target_X, mass_X)
        short_X = pair.short_flat.to(device)[flat_X].double()
        short_N.index_add_(0, n_E[which_X], mass_X * short_X)
    if plan.cut:
        cut = torch.tensor(plan.cut, dtype=torch.long, device=device)
        n_C, r_C, node_C, token_C = cut.unbind(1)
        mass_C = (logprobs_RV[r_C, token_C].double() + weights(node_C)).exp()
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
        boundary_N=torch.tensor(plan.boundary, dtype=torch.bool, device=device),
    )


def node_log_weights(plan: BatchPlan, logprobs_RV: torch.Tensor) -> torch.Tensor:
    """(nodes,) float64: each branch node's path log-probability (its tokens' teacher
    log-probabilities added along the path), computed level by level."""
    count = len(plan.node_token)
    logw_D = torch.zeros(count, dtype=torch.float64, device=logprobs_RV.device)
    if not count:
        return logw_D
    parent_D = torch.tensor(plan.node_parent, dtype=torch.long, device=logprobs_RV.device)
    own_D = logprobs_RV[
        torch.tensor(plan.node_output, device=logprobs_RV.device),
        torch.tensor(plan.node_token, device=logprobs_RV.device),
    ].double()
    depth_D = torch.tensor(plan.node_depth, dtype=torch.long)
    for level in range(int(depth_D.max()) + 1):
        at = (depth_D == level).nonzero().squeeze(1).to(logprobs_RV.device)
        parents = parent_D[at]
        inherited = torch.where(parents >= 0, logw_D[parents.clamp(min=0)], 0.0)
        logw_D[at] = own_D[at] + inherited
    return logw_D
