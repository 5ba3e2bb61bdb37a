"""A teacher server: per-token log-probabilities over HTTP, in the API ``vllm serve`` answers.

    python -m opd_remote.serve --model /models/teacher --port 8000 [--api-key TOKEN]

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
import time
from collections.abc import Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opd_core.errors import OPDError
from opd_core.modeling import ModelSpec, load_model
from opd_remote.request import RequestError, parse_request
from opd_remote.scorer import Scorer, completion_response

log = logging.getLogger("opd_remote.serve")


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
        prog="python -m opd_remote.serve", description="Serve a teacher's per-token log-probs."
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
        raise SystemExit(f"opd_remote.serve: error: {err}") from None
    log.info("serving %s on http://%s:%d", args.model, args.host, args.port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
