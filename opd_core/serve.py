"""A teacher server: per-token log-probabilities over HTTP, in the API ``vllm serve`` answers.

    python -m opd_core.serve --model /models/teacher --port 8000 [--api-key TOKEN]

Implements the part of the OpenAI-style completions API that distillation needs, the way vLLM
answers it, so the ``teacher=remote`` client talks to this server or to a real ``vllm serve``:

- ``POST /v1/completions`` with ``prompt`` (a list of token ids, or a list of such lists),
  ``max_tokens`` 0 or 1, ``prompt_logprobs`` K (vLLM's parameter; ``logprobs`` is accepted as
  its alias) and optional ``echo``. Each choice carries ``prompt_logprobs``: ``null`` for the
  first token, then per position ``{"<token id>": {"logprob", "rank", "decoded_token"}}`` for
  the actual token and the K most likely ones.
- ``GET /v1/models`` and ``GET /health``.

Binds 127.0.0.1 unless told otherwise; with ``--api-key`` (or ``OPD_SERVE_API_KEY``) every
request needs ``Authorization: Bearer <key>``. Malformed requests get a 4xx with a JSON error.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import torch

from opd_core.errors import OPDError
from opd_core.modeling import LoadedModel, ModelSpec, load_model, pad_left, position_ids_from_mask

log = logging.getLogger("opd_core.serve")

MAX_TOP_K = 100


class RequestError(Exception):
    """A request the server refuses, with the HTTP status to answer."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ScoreRequest:
    """A validated ``/v1/completions`` body."""

    sequences: list[list[int]]
    top_k: int
    max_tokens: int
    echo: bool


def parse_request(body: bytes, vocab_size: int, max_len: int) -> ScoreRequest:
    """Validate a completions request; a :class:`RequestError` (400) names the bad field."""
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
    return ScoreRequest(prompt, top_k, int(max_tokens), bool(payload.get("echo", False)))


class Scorer:
    """The teacher model and the batched forward that answers a request."""

    def __init__(self, loaded: LoadedModel, name: str, batch_size: int) -> None:
        self.model = loaded.model.eval().requires_grad_(False)
        self.tokenizer = loaded.tokenizer
        self.name = name
        self.batch_size = batch_size
        self.vocab_size = int(self.model.get_output_embeddings().weight.shape[0])
        self.max_len = int(getattr(self.model.config, "max_position_embeddings", 32768))
        self.device = next(self.model.parameters()).device
        self.lock = threading.Lock()  # one forward at a time: the model is shared

    @torch.no_grad()
    def prompt_logprobs(
        self, sequences: Sequence[list[int]], top_k: int
    ) -> tuple[list[list[dict[str, Any] | None]], list[int]]:
        """vLLM-style ``prompt_logprobs`` of each sequence, and the greedy next token of each."""
        results: list[list[dict[str, Any] | None]] = []
        next_tokens: list[int] = []
        for start in range(0, len(sequences), self.batch_size):
            chunk = sequences[start : start + self.batch_size]
            ids_BT, mask_BT = pad_left(chunk, pad_id=0)
            with self.lock:
                logits_BTV = self.model(
                    input_ids=ids_BT.to(self.device),
                    attention_mask=mask_BT.to(self.device),
                    position_ids=position_ids_from_mask(mask_BT).to(self.device),
                    use_cache=False,
                ).logits.float()
            next_tokens += logits_BTV[:, -1].argmax(-1).tolist()
            # position s of the first T - 1 outputs predicts token s + 1
            logprobs_BSV = torch.log_softmax(logits_BTV[:, :-1], dim=-1)
            for row, seq in enumerate(chunk):
                results.append(self._positions(logprobs_BSV[row], ids_BT[row], len(seq), top_k))
        return results, next_tokens

    def _positions(
        self, logprobs_SV: torch.Tensor, ids_T: torch.Tensor, length: int, top_k: int
    ) -> list[dict[str, Any] | None]:
        """The per-position entries of one left-padded sequence of ``length`` real tokens."""
        width = ids_T.shape[0]
        real_SV = logprobs_SV[width - length :]  # predictions of tokens 1..length-1
        actual_S = ids_T[width - length + 1 :].to(real_SV.device)
        actual_lp_S = real_SV.gather(-1, actual_S[:, None]).squeeze(-1)
        rank_S = (real_SV > actual_lp_S[:, None]).sum(-1) + 1
        top_lp_SK, top_ids_SK = real_SV.topk(top_k, dim=-1) if top_k else (None, None)
        actual, actual_lp, ranks = actual_S.tolist(), actual_lp_S.tolist(), rank_S.tolist()
        top_ids = top_ids_SK.tolist() if top_ids_SK is not None else [[]] * len(actual)
        top_lps = top_lp_SK.tolist() if top_lp_SK is not None else [[]] * len(actual)
        seen = sorted({*actual, *(i for row in top_ids for i in row)})
        names = dict(zip(seen, self.tokenizer.convert_ids_to_tokens(seen), strict=True))
        out: list[dict[str, Any] | None] = [None]
        for s, token in enumerate(actual):  # JSON serialisation: one dict per position
            entry = {
                str(i): {"logprob": lp, "rank": k + 1, "decoded_token": names[i]}
                for k, (i, lp) in enumerate(zip(top_ids[s], top_lps[s], strict=True))
            }
            entry[str(token)] = {
                "logprob": actual_lp[s],
                "rank": ranks[s],
                "decoded_token": names[token],
            }
            out.append(entry)
        return out


def completion_response(scorer: Scorer, request: ScoreRequest) -> dict[str, Any]:
    """The ``/v1/completions`` reply, in vLLM's layout."""
    prompt_logprobs, next_tokens = scorer.prompt_logprobs(request.sequences, request.top_k)
    choices = []
    for index, (seq, positions, token) in enumerate(
        zip(request.sequences, prompt_logprobs, next_tokens, strict=True)
    ):
        text = scorer.tokenizer.decode([token]) if request.max_tokens else ""
        if request.echo:
            text = scorer.tokenizer.decode(seq) + text
        choices.append(
            {
                "index": index,
                "text": text,
                "logprobs": None,
                "finish_reason": "length",
                "prompt_logprobs": positions,
                "prompt_token_ids": seq,
            }
        )
    prompt_tokens = sum(len(s) for s in request.sequences)
    return {
        "id": f"cmpl-{time.time_ns()}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": scorer.name,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": request.max_tokens * len(choices),
            "total_tokens": prompt_tokens + request.max_tokens * len(choices),
        },
    }


def make_handler(scorer: Scorer, api_key: str | None) -> type[BaseHTTPRequestHandler]:
    """The request handler class bound to ``scorer`` (and the bearer token, if any)."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "opd-core-teacher/1"

        def do_GET(self) -> None:
            self._answer(self._get)

        def do_POST(self) -> None:
            self._answer(self._post)

        def _get(self) -> dict[str, Any]:
            if self.path == "/health":
                return {"status": "ok"}
            if self.path == "/v1/models":
                return {"object": "list", "data": [{"id": scorer.name, "object": "model"}]}
            raise RequestError(HTTPStatus.NOT_FOUND, f"no route {self.path}")

        def _post(self) -> dict[str, Any]:
            if self.path != "/v1/completions":
                raise RequestError(HTTPStatus.NOT_FOUND, f"no route {self.path}")
            length = int(self.headers.get("Content-Length") or 0)
            request = parse_request(self.rfile.read(length), scorer.vocab_size, scorer.max_len)
            return completion_response(scorer, request)

        def _answer(self, route: Any) -> None:
            started = time.perf_counter()
            try:
                self._authorize()
                status, body = HTTPStatus.OK, route()
            except RequestError as err:
                status, body = err.status, {"error": {"message": str(err), "code": err.status}}
            except Exception as err:  # a bug must answer 500, not kill the connection
                log.exception("request failed")
                status = HTTPStatus.INTERNAL_SERVER_ERROR
                body = {"error": {"message": f"internal error: {err}", "code": status}}
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            log.info(
                "%s %s -> %d (%.3fs)",
                self.command,
                self.path,
                status,
                time.perf_counter() - started,
            )

        def _authorize(self) -> None:
            authorized = self.headers.get("Authorization") == f"Bearer {api_key}"
            if api_key and self.path != "/health" and not authorized:
                raise RequestError(HTTPStatus.UNAUTHORIZED, "missing or wrong bearer token")

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per request comes from _answer

    return Handler


def serve(
    scorer: Scorer, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None
) -> ThreadingHTTPServer:
    """A server bound to ``host:port`` (not yet serving: call ``serve_forever``)."""
    return ThreadingHTTPServer((host, port), make_handler(scorer, api_key))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m opd_core.serve", description="Serve a teacher's per-token log-probs."
    )
    parser.add_argument("--model", required=True, help="folder, Hub id, or demo://... address")
    parser.add_argument("--name", help="model name in replies (default: --model)")
    parser.add_argument("--host", default="127.0.0.1", help="default loopback only")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api-key", default=os.environ.get("OPD_SERVE_API_KEY"))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")

    from opd_core.plugin_manager import make_plugin_manager
    from opd_core.trainer import pick_device

    try:
        device = pick_device(args.device)
        loaded = load_model(
            make_plugin_manager().hook, ModelSpec(args.model, dtype=args.dtype), "teacher", device
        )
        server = serve(
            Scorer(loaded, args.name or args.model, args.batch_size),
            args.host,
            args.port,
            args.api_key,
        )
    except (OPDError, OSError) as err:
        raise SystemExit(f"opd_core.serve: error: {err}") from None
    log.info("serving %s on http://%s:%d", args.model, args.host, args.port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
