"""Small wheels built by the tests: a zip with chosen members, like the real asset wheels."""

from __future__ import annotations

import zipfile
from pathlib import Path


def make_wheel(folder: Path, package: str, version: str, members: dict[str, bytes]) -> Path:
    """Write ``<package>-<version>-py3-none-any.whl`` holding ``members`` and minimal metadata.

    The metadata (``METADATA``, ``WHEEL``, ``RECORD``) is enough for ``pip download`` to accept
    the file from a local ``--find-links`` folder.
    """
    name = package.replace("-", "_")
    path = folder / f"{name}-{version}-py3-none-any.whl"
    dist_info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for member, data in members.items():
            archive.writestr(member, data)
        archive.writestr(
            f"{dist_info}/METADATA",
            f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n",
        )
        archive.writestr(
            f"{dist_info}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: opd-core-tests\nRoot-Is-Purelib: true\n"
            "Tag: py3-none-any\n",
        )
        archive.writestr(f"{dist_info}/RECORD", "")
    return path
