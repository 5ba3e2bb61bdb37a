"""An HTTP client for OpenAI-style completions with prompt log-probabilities, with retries."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from typing import Any

from opd_core.api import OPDError

log = logging.getLogger("opd_core.remote")

RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}


class CompletionsClient:
    """Posts JSON to ``{url}/v1/...``; retries connection errors, timeouts and 5xx with
    exponential backoff (``backoff_s * 2**attempt``), and fails with one clear message."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 6,
        backoff_s: float = 0.5,
    ) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s

    def get(self, path: str) -> dict[str, Any]:
        return self._request(path, None)

    def post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        return self._request(path, json.dumps(payload).encode())

    def _request(self, path: str, body: bytes | None) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url + path, data=body, headers=headers)
        last_error = ""
        started = time.monotonic()
        for attempt in range(self.max_retries + 1):
            if attempt:
                delay = self.backoff_s * 2 ** (attempt - 1)
                log.warning("teacher server: %s; retry %d in %.1fs", last_error, attempt, delay)
                time.sleep(delay)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    return parse_json(response.read(), self.url + path)
            except urllib.error.HTTPError as err:
                detail = err.read().decode(errors="replace")[:300]
                if err.code not in RETRYABLE_STATUS:
                    raise OPDError(
                        f"The teacher server at {self.url} refused {path} with HTTP {err.code}: "
                        f"{detail}" + (" (check teacher.api_key)" if err.code == 401 else "")
                    ) from err
                last_error = f"HTTP {err.code}"
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                last_error = str(getattr(err, "reason", err))
        waited = time.monotonic() - started
        raise OPDError(
            f"The teacher server at {self.url} did not answer {path} after "
            f"{self.max_retries + 1} tries over {waited:.1f} s ({last_error}); start it with "
            "`python -m opd_remote.serve --model <teacher>`, fix teacher.url, or wait longer "
            f"with teacher.max_retries (now {self.max_retries}) and teacher.backoff_s "
            f"(now {self.backoff_s:g})."
        )


def parse_json(data: bytes, where: str) -> dict[str, Any]:
    """The JSON object of a reply; anything else is a clear error."""
    try:
        payload = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise OPDError(f"The teacher server sent a reply to {where} that is not JSON.") from err
    if not isinstance(payload, dict):
        raise OPDError(f"The teacher server sent a reply to {where} that is not a JSON object.")
    return payload
