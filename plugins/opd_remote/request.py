"""A ``/v1/completions`` request to the teacher server, validated field by field."""

from __future__ import annotations

import json
from dataclasses import dataclass
from http import HTTPStatus

from opd_remote.limits import ServerLimits, flag

MAX_TOP_K = 100


class RequestError(Exception):
    """A request the server refuses, with the HTTP status to answer."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class CompletionsRequest:
    """A validated ``/v1/completions`` body."""

    sequences: list[list[int]]
    top_k: int
    max_tokens: int
    echo: bool


def parse_request(
    body: bytes, vocab_size: int, max_len: int, limits: ServerLimits | None = None
) -> CompletionsRequest:
    """Validate a completions request; a :class:`RequestError` (400, 413) names the bad field."""
    limits = limits or ServerLimits()
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"body is not valid JSON: {err}") from err
    if not isinstance(payload, dict):
        raise RequestError(HTTPStatus.BAD_REQUEST, "body must be a JSON object")
    prompt = payload.get("prompt")
    if prompt is None:
        raise RequestError(HTTPStatus.BAD_REQUEST, "missing field 'prompt' (token id lists)")
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        prompt = [prompt]
    if not (
        isinstance(prompt, list)
        and prompt
        and all(isinstance(s, list) and s and all(isinstance(t, int) for t in s) for s in prompt)
    ):
        raise RequestError(
            HTTPStatus.BAD_REQUEST,
            "'prompt' must be a non-empty list of token ids or of token id lists "
            "(this server scores token ids; tokenize text with the model's tokenizer)",
        )
    if len(prompt) > limits.max_sequences:
        raise RequestError(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            f"{len(prompt)} sequences in one request; this server takes at most "
            f"{limits.max_sequences} ({flag('max_sequences')}): send smaller batches",
        )
    total = sum(len(ids) for ids in prompt)
    if total > limits.max_tokens:
        raise RequestError(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            f"{total} tokens in one request; this server takes at most {limits.max_tokens} "
            f"({flag('max_tokens')}): send smaller batches",
        )
    for row, ids in enumerate(prompt):
        if len(ids) > max_len:
            raise RequestError(
                HTTPStatus.BAD_REQUEST, f"prompt {row} has {len(ids)} tokens; at most {max_len}"
            )
        if min(ids) < 0 or max(ids) >= vocab_size:
            raise RequestError(
                HTTPStatus.BAD_REQUEST, f"prompt {row} has token ids outside [0, {vocab_size})"
            )
    top_k = payload.get("prompt_logprobs", payload.get("logprobs"))
    top_k = 0 if top_k is None else top_k
    if not isinstance(top_k, int) or isinstance(top_k, bool) or not 0 <= top_k <= MAX_TOP_K:
        raise RequestError(
            HTTPStatus.BAD_REQUEST, f"'prompt_logprobs' must be an integer in [0, {MAX_TOP_K}]"
        )
    max_tokens = payload.get("max_tokens", 1)
    if max_tokens not in (0, 1) or isinstance(max_tokens, bool):
        raise RequestError(
            HTTPStatus.BAD_REQUEST, "'max_tokens' must be 0 or 1: this server only scores"
        )
    return CompletionsRequest(prompt, top_k, int(max_tokens), bool(payload.get("echo", False)))
