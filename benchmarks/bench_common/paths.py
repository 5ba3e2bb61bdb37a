"""Where benchmarks read and write: the repository, ``outputs/``, and each script's result files.

A script's result files are named after it: ``benchmarks/horizon.py`` writes
``docs/results/horizon.md``, ``horizon.json`` and ``horizon.png`` (a second figure adds a part:
``compare_objectives_steps.png``). A script declares ``RESULTS = ResultFiles.of(__file__)`` and
writes only through it (``tests/test_benchmarks_layout.py`` checks both).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The repository (benchmarks run from here)."""
RESULTS_DIR = ROOT / "docs" / "results"
OUTPUTS = ROOT / "outputs"
"""Run folders and work files (not committed)."""


@dataclass(frozen=True)
class ResultFiles:
    """The result files of the script ``name`` in ``folder``."""

    name: str
    folder: Path = RESULTS_DIR

    @classmethod
    def of(cls, script: str | Path) -> ResultFiles:
        """The result files of the script at ``script`` (pass ``__file__``)."""
        return cls(Path(script).stem)

    def part(self, part: str) -> ResultFiles:
        """The files of one of several reports of the script (``<name>_<part>.md``, ...)."""
        return dataclasses.replace(self, name=f"{self.name}_{part}")

    def under(self, folder: Path) -> ResultFiles:
        """The same files in ``folder`` (a ``--quick`` check writes outside ``docs/``)."""
        return dataclasses.replace(self, folder=folder)

    @property
    def md(self) -> Path:
        return self.folder / f"{self.name}.md"

    @property
    def json(self) -> Path:
        return self.folder / f"{self.name}.json"

    def png(self, part: str = "") -> Path:
        """The figure, or with ``part`` one of several (``<name>_<part>.png``)."""
        return self.folder / self.png_name(part)

    def png_name(self, part: str = "") -> str:
        return f"{self.name}_{part}.png" if part else f"{self.name}.png"

    def image(self, alt: str, part: str = "") -> str:
        """The Markdown line that shows the figure next to the ``.md`` file."""
        return f"![{alt}]({self.png_name(part)})"
