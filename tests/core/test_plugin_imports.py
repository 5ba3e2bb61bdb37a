"""Layout rules, checked on the source: a plugin imports only ``opd_core`` and its own modules,
``opd_core`` imports no plugin, and no plugin's modules import each other in a cycle."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = sorted(p for p in (ROOT / "plugins").iterdir() if (p / "__init__.py").is_file())
PLUGIN_NAMES = {p.name for p in PLUGINS}


def module_name(path: Path, package_dir: Path) -> str:
    """The dotted name of ``path`` inside the package rooted at ``package_dir``."""
    parts = [package_dir.name, *path.relative_to(package_dir).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, name: str) -> Iterator[tuple[int, str]]:
    """``(line, module)`` for every import in the file, lazy ones inside functions included."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                yield node.lineno, f"{base}.{node.module}" if node.module else base
            else:
                assert node.module is not None
                yield node.lineno, node.module


def package_files(package_dir: Path) -> list[Path]:
    return sorted(package_dir.rglob("*.py"))


@pytest.mark.parametrize("plugin", PLUGINS, ids=lambda p: p.name)
def test_a_plugin_imports_only_opd_core_and_itself(plugin: Path) -> None:
    foreign = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in package_files(plugin)
        for line, module in imports(path, module_name(path, plugin))
        if module.split(".")[0] in PLUGIN_NAMES - {plugin.name}
    ]
    assert not foreign, "move what plugins share into opd_core:\n" + "\n".join(foreign)


def test_opd_core_imports_no_plugin() -> None:
    core = ROOT / "opd_core"
    found = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in package_files(core)
        for line, module in imports(path, module_name(path, core))
        if module.split(".")[0] in PLUGIN_NAMES
    ]
    assert not found, "\n".join(found)


def submodule_graph(plugin: Path) -> dict[str, set[str]]:
    """Which of the plugin's submodules each of its submodules imports (``__init__`` left out:
    a package importing its own parts is how packages work)."""
    names = {module_name(p, plugin) for p in package_files(plugin) if p.name != "__init__.py"}
    graph: dict[str, set[str]] = {}
    for path in package_files(plugin):
        name = module_name(path, plugin)
        if name in names:
            graph[name] = {m for _, m in imports(path, name) if m in names and m != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a list of modules, or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


@pytest.mark.parametrize("plugin", PLUGINS, ids=lambda p: p.name)
def test_a_plugins_modules_import_each_other_without_cycles(plugin: Path) -> None:
    cycle = find_cycle(submodule_graph(plugin))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_checks_see_a_foreign_import_and_a_cycle(tmp_path: Path) -> None:
    plugin = tmp_path / "opd_fake"
    plugin.mkdir()
    (plugin / "__init__.py").write_text("")
    (plugin / "a.py").write_text("def f():\n    from opd_fake.b import g\n    import opd_hf.x\n")
    (plugin / "b.py").write_text("from .a import f\n")
    found = [m for p in package_files(plugin) for _, m in imports(p, module_name(p, plugin))]
    assert sorted(found) == ["opd_fake.a", "opd_fake.b", "opd_hf.x"]
    assert find_cycle(submodule_graph(plugin)) == ["opd_fake.a", "opd_fake.b", "opd_fake.a"]
