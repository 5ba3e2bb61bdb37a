"""``teacher=remote``: the teacher's per-token log-probabilities from an HTTP server."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from opd_core import Generator, OPDError, RolloutBatch, TeacherScores, hookimpl
from opd_core.api import RunContext
from opd_remote.client import CompletionsClient


class RemoteTeacher:
    """Scores rollouts through ``/v1/completions`` with ``prompt_logprobs``: the API of
    ``python -m opd_remote.serve`` and of ``vllm serve``. Sequences go as token ids (the server's
    model must share the student's tokenizer), ``batch_size`` per request; connection errors,
    timeouts and 5xx are retried with exponential backoff, so a run waits out a server restart.

    The teacher is not evaluated (a remote server cannot be handed to the evaluators), and its
    FLOPs are counted only if a plugin answers ``opd_model_shape`` for it.
    """

    def __init__(
        self,
        url: str,
        model: str | None = None,
        api_key: str | None = None,
        batch_size: int = 16,
        timeout_s: float = 60.0,
        max_retries: int = 6,
        backoff_s: float = 0.5,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {url!r}")
        if batch_size <= 0 or timeout_s <= 0 or max_retries < 0 or backoff_s < 0:
            raise ValueError("batch_size and timeout_s must be positive, retries and backoff >= 0")
        self.client = CompletionsClient(url, api_key, timeout_s, max_retries, backoff_s)
        self.model = model
        self.batch_size = batch_size

    def setup(self, ctx: RunContext) -> None:
        if self.model is None:
            reply = self.client.get("/v1/models")
            try:
                self.model = str(reply["data"][0]["id"])
            except (KeyError, IndexError, TypeError) as err:
                raise self._malformed("/v1/models lists no model") from err

    @hookimpl
    def opd_score_rollouts(self, rollouts: RolloutBatch, top_k: int) -> TeacherScores:
        mask_BT = rollouts.attention_mask_BT.bool()
        starts = (~mask_BT).long().cumprod(1).sum(1).tolist()  # left padding before each row
        lengths = mask_BT.sum(1).tolist()
        rows = [
            rollouts.input_ids_BT[b, s : s + n].tolist()
            for b, (s, n) in enumerate(zip(starts, lengths, strict=True))
        ]
        shape_BT = rollouts.input_ids_BT.shape
        logprobs_BT = torch.zeros(shape_BT)
        topk_ids_BTK = torch.zeros((*shape_BT, top_k), dtype=torch.long)
        topk_logprobs_BTK = torch.zeros((*shape_BT, top_k))
        for first in range(0, len(rows), self.batch_size):
            batch = rows[first : first + self.batch_size]
            for offset, positions in enumerate(self._prompt_logprobs(batch, top_k)):
                b = first + offset
                lps, ids, top_lps = parse_positions(positions, rows[b], top_k, self._malformed)
                span = slice(starts[b] + 1, starts[b] + lengths[b])  # token 0 has no score
                logprobs_BT[b, span] = torch.tensor(lps)
                if top_k:
                    topk_ids_BTK[b, span] = torch.tensor(ids, dtype=torch.long)
                    topk_logprobs_BTK[b, span] = torch.tensor(top_lps)
        completion_BT = rollouts.completion_mask_BT
        return TeacherScores(
            logprobs_BT=logprobs_BT * completion_BT,
            topk_ids_BTK=topk_ids_BTK if top_k else None,
            topk_logprobs_BTK=topk_logprobs_BTK * completion_BT[..., None] if top_k else None,
        )

    def _prompt_logprobs(self, batch: list[list[int]], top_k: int) -> list[Any]:
        reply = self.client.post(
            "/v1/completions",
            {
                "model": self.model,
                "prompt": batch,
                "max_tokens": 1,
                "temperature": 0.0,
                "prompt_logprobs": top_k,
            },
        )
        choices = reply.get("choices")
        if not isinstance(choices, list) or len(choices) != len(batch):
            raise self._malformed(f"expected {len(batch)} choices")
        try:
            ordered = sorted(choices, key=lambda c: int(c["index"]))
            return [c["prompt_logprobs"] for c in ordered]
        except (KeyError, TypeError, ValueError) as err:
            raise self._malformed("choices lack index or prompt_logprobs") from err

    def _malformed(self, what: str) -> OPDError:
        return OPDError(
            f"The teacher server at {self.client.url} sent a malformed reply: {what}. Is it "
            "`python -m opd_remote.serve` or `vllm serve` (with --max-logprobs >= the top-k)?"
        )

    @hookimpl
    def opd_eval_generator(self, role: str) -> Generator | None:
        return None


def parse_positions(
    positions: Any, tokens: Sequence[int], top_k: int, malformed: Any
) -> tuple[list[float], list[list[int]], list[list[float]]]:
    """One sequence's ``prompt_logprobs``: the actual tokens' log-probs (positions 1..n-1) and
    the top-k ids and log-probs by rank."""
    if not isinstance(positions, list) or len(positions) != len(tokens):
        raise malformed(f"prompt_logprobs must hold {len(tokens)} positions")
    actual_lps: list[float] = []
    top_ids: list[list[int]] = []
    top_lps: list[list[float]] = []
    try:
        for entry, token in zip(positions[1:], tokens[1:], strict=True):  # JSON, per position
            actual_lps.append(float(entry[str(token)]["logprob"]))
            if top_k:
                ranked = sorted(entry.items(), key=lambda item: int(item[1]["rank"]))[:top_k]
                if len(ranked) < top_k or int(ranked[-1][1]["rank"]) > top_k:
                    raise malformed(f"a position has fewer than {top_k} top log-probs")
                top_ids.append([int(i) for i, _ in ranked])
                top_lps.append([float(v["logprob"]) for _, v in ranked])
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise malformed(f"a position lacks the sampled token's log-prob ({err})") from err
    return actual_lps, top_ids, top_lps
