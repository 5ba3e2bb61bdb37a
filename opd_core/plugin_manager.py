"""The plugin manager: loads built-in and third-party plugins the same way.

Every plugin, built-in or not, is found through the ``opd_core`` entry-point group
(``[project.entry-points.opd_core]`` in a package's ``pyproject.toml``). A misspelled hook name
in a plugin fails loudly (``check_pending``).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

import pluggy

from opd_core import hookspecs
from opd_core.errors import OPDError
from opd_core.registry import Registry

ENTRY_POINT_GROUP = "opd_core"


def make_plugin_manager(extra_plugins: Iterable[Any] = ()) -> pluggy.PluginManager:
    """A plugin manager with the hook specs, every installed plugin, and ``extra_plugins``."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    try:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    except Exception as err:  # a broken third-party package must not look like our bug
        raise OPDError(
            f"The installed opd_core plugin {broken_entry_point() or '?'} failed to import "
            f"({type(err).__name__}: {_first_line(err)}); fix or uninstall the package that "
            "provides it (pip list | grep opd)."
        ) from err
    for plugin in extra_plugins:
        register_plugin(pm, plugin)
    check_hooks(pm)
    return pm


def register_plugin(pm: pluggy.PluginManager, plugin: Any, name: str | None = None) -> None:
    """Register a plugin object or an importable module path such as ``"mypkg.plugin"``."""
    if isinstance(plugin, str):
        try:
            plugin = importlib.import_module(plugin)
        except ImportError as err:
            raise OPDError(
                f"Cannot import plugin module '{plugin}' ({err}); check the name in "
                "the 'plugins' config list and that its package is installed."
            ) from err
        except Exception as err:
            raise OPDError(
                f"Plugin module '{plugin}' failed while importing ({type(err).__name__}: "
                f"{_first_line(err)}); fix the module or remove it from the 'plugins' list."
            ) from err
    pm.register(plugin, name=name)


def broken_entry_point() -> str | None:
    """``name = module`` (and its package) of the first entry point that fails to import."""
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception:
            package = f" from package {ep.dist.name}" if ep.dist is not None else ""
            return f"'{ep.name}' ({ep.value}{package})"
    return None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def check_hooks(pm: pluggy.PluginManager) -> None:
    """Fail if a plugin implements a hook that does not exist (usually a typo)."""
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as err:
        raise OPDError(
            f"A plugin implements an unknown hook: {err}. Hook names are listed in "
            "opd_core/hookspecs.py (docs/hooks.md)."
        ) from err


def build_registry(pm: pluggy.PluginManager) -> Registry:
    """Ask every plugin to register its components."""
    registry = Registry()
    pm.hook.opd_register_components(registry=registry)
    return registry
