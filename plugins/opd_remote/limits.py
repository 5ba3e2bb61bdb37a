"""What the teacher server accepts from one client, and for how long it waits on one.

Every limit has a command-line flag (``python -m opd_remote.serve --help``); a request over a
limit is refused with a JSON error naming the limit and its flag, before the server reads or
scores more than the limit allows.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class ServerLimits:
    """The server's limits; the defaults fit a client sending 16 sequences of 8k tokens."""

    max_body_bytes: int = 32 * 2**20
    """Largest request body; a larger ``Content-Length`` is refused (413) without reading it."""
    max_sequences: int = 256
    """Sequences (prompts) in one request (413 above it)."""
    max_tokens: int = 512 * 1024
    """Tokens summed over a request's sequences (413 above it)."""
    max_connections: int = 64
    """Connections served at once; one more is answered 503 at once (clients retry it)."""
    backlog: int = 128
    """Connections the operating system queues before the server accepts them."""
    idle_timeout_s: float = 10.0
    """A connection that sends nothing for this long is closed."""
    read_timeout_s: float = 60.0
    """A request (headers and body) must arrive within this long of the connection opening
    (408), however slowly it trickles in."""

    def __post_init__(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) <= 0:
                raise ValueError(f"--{f.name.replace('_', '-')} must be positive")


def flag(name: str) -> str:
    """The command-line flag of limit ``name``."""
    return "--" + name.replace("_", "-")
