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
request needs ``Authorization: Bearer <key>``. Every answer, errors included, is JSON. Hostile
or broken clients meet limits (:class:`opd_remote.limits.ServerLimits`, one flag each): body
bytes, sequences and tokens per request, connections served at once (the rest queue in a
backlog), and idle and read timeouts.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import fields
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opd_core.api import ModelSpec, OPDError
from opd_remote.limits import ServerLimits, flag
from opd_remote.request import RequestError, parse_request
from opd_remote.scorer import Scorer, completion_response

log = logging.getLogger("opd_remote.serve")


class AlreadyAnswered(Exception):
    """The read deadline answered 408 while the handler was still reading."""


def json_bytes(status: int, message: str) -> bytes:
    """The JSON error body every status carries: ``{"error": {"message", "code"}}``."""
    return json.dumps({"error": {"message": message, "code": int(status)}}).encode()


def make_handler(
    scorer: Scorer, api_key: str | None, limits: ServerLimits | None = None
) -> type[BaseHTTPRequestHandler]:
    """The request handler class bound to ``scorer``, the bearer token (if any) and ``limits``.

    One request per connection (HTTP/1.0); every read waits at most ``idle_timeout_s`` and the
    whole request must arrive within ``read_timeout_s`` of the connection opening.
    """
    bound = limits or ServerLimits()

    class Handler(BaseHTTPRequestHandler):
        server_version = "opd-core-teacher/1"
        timeout = bound.idle_timeout_s  # set on the socket: the longest wait for one read

        def setup(self) -> None:
            super().setup()
            self._reading = True
            self._guard = threading.Lock()
            self._deadline = threading.Timer(bound.read_timeout_s, self._read_timed_out)
            self._deadline.daemon = True
            self._deadline.start()

        def finish(self) -> None:
            self._deadline.cancel()
            super().finish()

        def do_GET(self) -> None:
            self._answer(self._get)

        def do_POST(self) -> None:
            self._answer(self._post)

        def _get(self) -> dict[str, Any]:
            self._done_reading()
            if self.path == "/health":
                return {"status": "ok"}
            if self.path == "/v1/models":
                return {"object": "list", "data": [{"id": scorer.name, "object": "model"}]}
            raise RequestError(HTTPStatus.NOT_FOUND, f"no route {self.path}")

        def _post(self) -> dict[str, Any]:
            if self.path != "/v1/completions":
                raise RequestError(HTTPStatus.NOT_FOUND, f"no route {self.path}")
            body = self._read_body()
            self._done_reading()
            request = parse_request(body, scorer.vocab_size, scorer.max_len, bound)
            return completion_response(scorer, request)

        def _read_body(self) -> bytes:
            """The body, refused before reading past ``max_body_bytes`` or stalling."""
            raw = self.headers.get("Content-Length")
            if raw is None:
                raise RequestError(HTTPStatus.LENGTH_REQUIRED, "a POST needs a Content-Length")
            if not re.fullmatch(r"[0-9]{1,20}", raw.strip()):
                raise RequestError(
                    HTTPStatus.BAD_REQUEST, f"Content-Length {raw[:40]!r} is not a byte count"
                )
            length = int(raw)
            if length > bound.max_body_bytes:
                raise RequestError(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    f"a body of {length} bytes; this server takes at most "
                    f"{bound.max_body_bytes} ({flag('max_body_bytes')}): send smaller batches",
                )
            chunks: list[bytes] = []
            received = 0
            while received < length:
                try:
                    chunk = self.rfile.read(min(length - received, 2**16))
                except TimeoutError:
                    raise RequestError(
                        HTTPStatus.REQUEST_TIMEOUT,
                        f"no data for {bound.idle_timeout_s:g} s ({flag('idle_timeout_s')})",
                    ) from None
                if not chunk:
                    break
                chunks.append(chunk)
                received += len(chunk)
            if received < length:
                self._done_reading()  # a deadline that fired has answered already
                raise RequestError(
                    HTTPStatus.BAD_REQUEST, f"the body ended after {received} of {length} bytes"
                )
            return b"".join(chunks)

        def _done_reading(self) -> None:
            """Stop the read deadline; if it already fired, its 408 was the answer."""
            with self._guard:
                self._deadline.cancel()
                reading, self._reading = self._reading, False
            if not reading:
                raise AlreadyAnswered

        def _read_timed_out(self) -> None:
            with self._guard:
                if not self._reading:
                    return
                self._reading = False
            message = (
                f"the request did not arrive within {bound.read_timeout_s:g} s "
                f"({flag('read_timeout_s')})"
            )
            data = json_bytes(HTTPStatus.REQUEST_TIMEOUT, message)
            head = (
                "HTTP/1.0 408 Request Timeout\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
            )
            try:
                self.connection.sendall(head.encode() + data)
                self.connection.shutdown(socket.SHUT_RDWR)  # the blocked read returns now
            except OSError:
                pass
            log.info("%s: request timed out", self.client_address[0])

        def _answer(self, route: Any) -> None:
            started = time.perf_counter()
            try:
                self._authorize()
                status, body = HTTPStatus.OK, route()
            except AlreadyAnswered:
                self.close_connection = True
                return
            except RequestError as err:
                status, body = err.status, {"error": {"message": str(err), "code": err.status}}
                self.close_connection = True
            except Exception as err:  # a bug must answer 500, not kill the connection
                log.exception("request failed")
                status = HTTPStatus.INTERNAL_SERVER_ERROR
                body = {"error": {"message": f"internal error: {err}", "code": status}}
            self._send_json(status, json.dumps(body).encode())
            log.info(
                "%s %s -> %d (%.3fs)",
                self.command,
                self.path,
                status,
                time.perf_counter() - started,
            )

        def _send_json(
            self, status: int, data: bytes, headers: dict[str, str] | None = None
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def send_error(
            self, code: int, message: str | None = None, explain: str | None = None
        ) -> None:
            """http.server's own errors (bad request line, unknown method, ...) as JSON too."""
            headers = {"Connection": "close"}
            if code == HTTPStatus.NOT_IMPLEMENTED and self.command:  # no do_<METHOD>
                code, message = (
                    HTTPStatus.METHOD_NOT_ALLOWED,
                    (f"method {self.command} is not allowed here; use GET or POST"),
                )
                headers["Allow"] = "GET, POST"
            self.close_connection = True
            if self.request_version == "HTTP/0.9":  # a garbled request line: answer with headers
                self.request_version = "HTTP/1.0"
            try:
                self._deadline.cancel()
                self._reading = False
                text = message or HTTPStatus(code).phrase
                self._send_json(code, json_bytes(code, text), headers)
            except OSError:
                pass

        def _authorize(self) -> None:
            authorized = self.headers.get("Authorization") == f"Bearer {api_key}"
            if api_key and self.path != "/health" and not authorized:
                raise RequestError(HTTPStatus.UNAUTHORIZED, "missing or wrong bearer token")

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per request comes from _answer

    return Handler


class TeacherServer(ThreadingHTTPServer):
    """A threading HTTP server that serves at most ``limits.max_connections`` at once.

    Further connections wait in the listen backlog (``limits.backlog``) for a free slot; one that
    waited ``read_timeout_s`` without getting one is answered 503 (clients retry it).
    """

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        limits: ServerLimits,
    ) -> None:
        self.limits = limits
        self.request_queue_size = limits.backlog  # listen()'s backlog (the default is 5)
        self.slots = threading.BoundedSemaphore(limits.max_connections)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(timeout=self.limits.read_timeout_s):
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def _refuse(self, request: socket.socket) -> None:
        message = (
            f"the server is busy with {self.limits.max_connections} connections "
            f"({flag('max_connections')}); retry shortly"
        )
        data = json_bytes(HTTPStatus.SERVICE_UNAVAILABLE, message)
        head = (
            "HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
        )
        try:
            request.settimeout(1.0)
            request.recv(2**16)  # read the request, so closing does not reset the connection
            request.sendall(head.encode() + data)
        except OSError:
            pass
        self.shutdown_request(request)


def serve(
    scorer: Scorer,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    limits: ServerLimits | None = None,
) -> TeacherServer:
    """A server bound to ``host:port`` (not yet serving: call ``serve_forever``)."""
    limits = limits or ServerLimits()
    return TeacherServer((host, port), make_handler(scorer, api_key, limits), limits)


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
    defaults = ServerLimits()
    for f in fields(ServerLimits):
        kind = int if isinstance(getattr(defaults, f.name), int) else float
        parser.add_argument(flag(f.name), type=kind, default=getattr(defaults, f.name))
    args = parser.parse_args(argv)
    try:
        limits = ServerLimits(**{f.name: getattr(args, f.name) for f in fields(ServerLimits)})
    except ValueError as err:
        parser.error(str(err))
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")

    from opd_core.api import load_model_outside_a_run, pick_device

    try:
        device = pick_device(args.device)
        loaded = load_model_outside_a_run(
            ModelSpec(args.model, dtype=args.dtype), "teacher", device
        )
        server = serve(
            Scorer(loaded, args.name or args.model, args.batch_size),
            args.host,
            args.port,
            args.api_key,
            limits,
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
