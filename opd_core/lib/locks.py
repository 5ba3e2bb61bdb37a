"""One process at a time builds or fetches a cached asset; the others wait, then reuse it.

A Hydra multirun on the joblib launcher, torchrun ranks and two terminals may all need the same
cache entry at once. :func:`cache_lock` is an exclusive file lock (``filelock``) named after the
entry's absolute path; whoever holds it builds, the rest wait for it and find the entry complete.
A lock held by a process that died is released by the operating system, so nothing stays stuck.

Lock files live in the machine's temporary folder, not in the cache (which holds only complete
entries), so they serialise the processes of one machine; ``OPD_CORE_LOCK_DIR`` moves them, e.g.
onto a shared filesystem that several nodes build into. Without the lock, concurrent builders still
cannot corrupt an entry (each builds in a temporary folder renamed into place), they only repeat
the work.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

log = logging.getLogger("opd_core")


def lock_path(entry: Path) -> Path:
    """The lock file guarding ``entry``: ``<lock dir>/<name>-<hash of its absolute path>.lock``."""
    folder = os.environ.get("OPD_CORE_LOCK_DIR") or Path(
        tempfile.gettempdir(), f"opd_core-locks-{os.getuid()}"
    )
    digest = hashlib.sha256(str(entry.absolute()).encode()).hexdigest()[:16]
    return Path(folder) / f"{entry.name}-{digest}.lock"


@contextmanager
def cache_lock(entry: Path, what: str = "") -> Iterator[None]:
    """Hold the lock of cache ``entry``; say so once when another process holds it first."""
    path = lock_path(entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        message = f"waiting for another process to finish {what or entry} (lock {path})"
        log.info(message)
        print(f"[opd_core] {message}", flush=True)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()
