"""Layout rules, checked on the source: a plugin imports opd-core only through its plugin API
(``opd_core`` and ``opd_core.api``), other plugins only where its ``DEPENDS_ON`` declares them
(acyclically), its own modules without cycles; the kernel imports neither the library
(``opd_core.lib``, reached through the API) nor any plugin."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = sorted(p for p in (ROOT / "plugins").iterdir() if (p / "__init__.py").is_file())
PLUGIN_NAMES = {p.name for p in PLUGINS}
EXAMPLE = ROOT / "examples" / "opd-example-task" / "opd_example_task"
PLUGIN_API = {"opd_core", "opd_core.api"}
KERNEL = sorted(p for p in (ROOT / "opd_core").glob("*.py") if p.name != "api.py")


def declared_dependencies(plugin: Path) -> set[str]:
    """The plugins that ``plugin``'s ``__init__`` names in ``DEPENDS_ON``."""
    tree = ast.parse((plugin / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "DEPENDS_ON" for t in node.targets
        ):
            return set(ast.literal_eval(node.value))
    return set()


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
def test_a_plugin_imports_only_itself_and_the_plugins_it_declares(plugin: Path) -> None:
    allowed = declared_dependencies(plugin) | {plugin.name}
    assert declared_dependencies(plugin) <= PLUGIN_NAMES
    foreign = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in package_files(plugin)
        for line, module in imports(path, module_name(path, plugin))
        if module.split(".")[0] in PLUGIN_NAMES - allowed
    ]
    assert not foreign, (
        "move what plugins share into opd_core.api, or declare the dependency in the plugin's "
        "DEPENDS_ON:\n" + "\n".join(foreign)
    )


def test_declared_plugin_dependencies_have_no_cycle() -> None:
    graph = {p.name: declared_dependencies(p) for p in PLUGINS}
    assert find_cycle(graph) is None


@pytest.mark.parametrize("plugin", [*PLUGINS, EXAMPLE], ids=lambda p: p.name)
def test_a_plugin_reaches_opd_core_only_through_the_plugin_api(plugin: Path) -> None:
    outside = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in package_files(plugin)
        for line, module in imports(path, module_name(path, plugin))
        if module.split(".")[0] == "opd_core" and module not in PLUGIN_API
    ]
    assert not outside, (
        "plugins import opd_core and opd_core.api only (the trainer, the plugin manager and the "
        "overlap machinery are the kernel's own):\n" + "\n".join(outside)
    )


def test_the_kernel_does_not_import_the_library() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in KERNEL
        for line, module in imports(path, f"opd_core.{path.stem}")
        if module.startswith("opd_core.lib")
    ]
    assert not found, "\n".join(found)


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
    (plugin / "a.py").write_text(
        "def f():\n    from opd_fake.b import g\n    import opd_hf.x\n    import opd_core.trainer\n"
    )
    (plugin / "b.py").write_text("from .a import f\n")
    found = [m for p in package_files(plugin) for _, m in imports(p, module_name(p, plugin))]
    assert sorted(found) == ["opd_core.trainer", "opd_fake.a", "opd_fake.b", "opd_hf.x"]
    assert find_cycle(submodule_graph(plugin)) == ["opd_fake.a", "opd_fake.b", "opd_fake.a"]
