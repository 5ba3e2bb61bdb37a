"""Benchmark layout rules, checked on the source: a benchmark script imports no other script and
not the trainer (what scripts share lives in ``benchmarks/bench_common``), declares its result
files as ``RESULTS = ResultFiles.of(__file__)`` and writes no other, and every file in
``docs/results/`` is named after the script that writes it (and every link to one resolves)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
SCRIPTS = sorted(BENCHMARKS.glob("*.py"))
SCRIPT_NAMES = {p.stem for p in SCRIPTS}
COMMON = sorted((BENCHMARKS / "bench_common").glob("*.py"))
RESULTS = ROOT / "docs" / "results"
RESULT_KINDS = (".md", ".json", ".png")
RESULT_MENTION = re.compile(r"docs/results/([\w-]+)\.")
"""``docs/results/<name>.`` in a script's text (docstrings included)."""


def tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


def imported(path: Path) -> Iterator[tuple[int, str]]:
    """``(line, module)`` of every import, lazy ones included; ``from a import b`` yields both
    ``a`` and ``a.b`` (``b`` may be a module)."""
    for node in ast.walk(tree(path)):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.lineno, node.module
            yield from ((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)


def named_after(filename: str, script: str) -> bool:
    """Whether a result file belongs to ``script``: ``<script>.<kind>`` or
    ``<script>_<part>.<kind>``."""
    stem, kind = Path(filename).stem, Path(filename).suffix
    return kind in RESULT_KINDS and (stem == script or stem.startswith(f"{script}_"))


def declared_results(path: Path) -> str | None:
    """The script name that ``RESULTS = ResultFiles.of(__file__)`` (the script's own) or
    ``RESULTS = ResultFiles("<name>")`` declares; None without a declaration."""
    for node in tree(path).body:
        if not (
            isinstance(node, ast.Assign)
            and [getattr(t, "id", None) for t in node.targets] == ["RESULTS"]
            and isinstance(node.value, ast.Call)
        ):
            continue
        call = node.value
        arg = call.args[0] if len(call.args) == 1 else None
        if ast.unparse(call.func) == "ResultFiles.of" and ast.unparse(arg) == "__file__":
            return path.stem
        if ast.unparse(call.func) == "ResultFiles" and isinstance(arg, ast.Constant):
            return str(arg.value)
        raise AssertionError(f"{path.name}:{node.lineno}: RESULTS = {ast.unparse(call)}")
    return None


def result_files_calls(path: Path) -> list[ast.Call]:
    """Every ``ResultFiles(...)`` / ``ResultFiles.of(...)`` call in the file."""
    return [
        node
        for node in ast.walk(tree(path))
        if isinstance(node, ast.Call)
        and ast.unparse(node.func) in ("ResultFiles", "ResultFiles.of")
    ]


@pytest.mark.parametrize(
    "path", SCRIPTS + COMMON, ids=lambda p: p.relative_to(BENCHMARKS).as_posix()
)
def test_a_benchmark_imports_no_other_script_and_not_the_trainer(path: Path) -> None:
    others = SCRIPT_NAMES - {path.stem} if path.parent == BENCHMARKS else SCRIPT_NAMES
    bad = [
        f"line {line}: {module}"
        for line, module in imported(path)
        if module.split(".")[0] in others
        or (module.startswith("benchmarks.") and module.split(".")[1] in SCRIPT_NAMES)
        or module == "opd_core.trainer"
        or module.startswith("opd_core.trainer.")
    ]
    assert not bad, f"{path.name} imports another benchmark or the trainer: {bad}"


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_a_script_declares_result_files_named_after_it(path: Path) -> None:
    assert declared_results(path) == path.stem, (
        f"{path.name}: declare `RESULTS = ResultFiles.of(__file__)` and write results through it"
    )
    calls = result_files_calls(path)
    assert len(calls) == 1, f"{path.name} builds result files other than its own RESULTS"
    assert "RESULTS_DIR" not in path.read_text(encoding="utf-8")


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_a_script_names_only_its_own_results(path: Path) -> None:
    mentioned = set(RESULT_MENTION.findall(path.read_text(encoding="utf-8")))
    assert mentioned <= {path.stem}, f"{path.name} names results of {mentioned - {path.stem}}"


def test_shared_code_reads_results_of_existing_scripts_only() -> None:
    for path in COMMON:
        for call in result_files_calls(path):
            name = call.args[0]
            if isinstance(name, ast.Constant):
                assert name.value in SCRIPT_NAMES, f"{path.name}: no benchmarks/{name.value}.py"


def test_every_result_file_is_named_after_a_script() -> None:
    files = sorted(p.name for p in RESULTS.iterdir() if p.is_file())
    orphans = [f for f in files if not any(named_after(f, s) for s in SCRIPT_NAMES)]
    assert files and not orphans, f"result files named after no benchmarks/*.py: {orphans}"


def test_every_link_to_a_result_file_resolves() -> None:
    links = [
        (doc, target)
        for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
        for target in re.findall(r"\]\(((?:docs/)?results/[^)#]+)\)", doc.read_text("utf-8"))
    ]
    links += [
        (doc, f"results/{target}")
        for doc in sorted(RESULTS.glob("*.md"))
        for target in re.findall(r"!\[[^]]*\]\(([^)/]+)\)", doc.read_text("utf-8"))
    ]
    base = {True: ROOT, False: ROOT / "docs"}
    broken = [f"{d.name}: {t}" for d, t in links if not (base[t.startswith("docs/")] / t).is_file()]
    assert links and not broken, f"links to missing result files: {broken}"


def test_the_layout_check_catches_a_result_not_named_after_its_script() -> None:
    assert named_after("vs_trl.md", "vs_trl") and named_after("horizon_steps.png", "horizon")
    assert not named_after("performance.md", "vs_trl") and not named_after("horizons.md", "horizon")


@pytest.mark.slow
@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_every_script_answers_help(path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(path), "--help"], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout
