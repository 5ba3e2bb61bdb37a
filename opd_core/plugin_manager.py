"""The plugin manager: loads built-in and third-party plugins the same way.

Every plugin, built-in or not, is found through the ``opd_core`` entry-point group
(``[project.entry-points.opd_core]`` in a package's ``pyproject.toml``). A misspelled hook name
in a plugin fails loudly (``check_pending``).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pluggy

from opd_core import hookspecs
from opd_core.errors import OPDError
from opd_core.registry import Registry

if TYPE_CHECKING:
    from hydra.core.config_store import ConfigStore
    from hydra.core.override_parser.types import Override

ENTRY_POINT_GROUP = "opd_core"
COMPONENT_PREFIX = "opd-component-"
"""Configured components are registered as ``opd-component-<kind>`` plugins."""
KERNEL_CONFIGS = "opd_core.config"
"""The name of the kernel's own plugin, which stores the core sections' defaults."""


class KernelConfigs:
    """The kernel's own config node, stored like a plugin's: ``opd_core_defaults``, the
    defaults of ``train``, ``eval``, ... read from their dataclasses
    (:func:`opd_core.config.core_defaults`), which ``conf/config.yaml`` lists first."""

    @hookspecs.hookimpl
    def opd_register_configs(self, store: ConfigStore) -> None:
        from opd_core.config import store_core_defaults

        store_core_defaults(store)


def make_plugin_manager(
    extra_plugins: Iterable[Any] = (), disabled: Iterable[str] = ()
) -> pluggy.PluginManager:
    """A plugin manager with the hook specs, every installed plugin but the ``disabled`` ones
    (by entry-point name, never imported), and ``extra_plugins``."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(KernelConfigs(), name=KERNEL_CONFIGS)
    disable_plugins(pm, disabled)
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


def command_line_plugins(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """``plugins=[...]`` and ``disable_plugins=[...]`` of a command line, read before Hydra
    composes it so that those plugins' ``opd_register_configs`` count (sweeps and anything
    Hydra would refuse are left to Hydra)."""
    found: dict[str, list[str]] = {"plugins": [], "disable_plugins": []}
    for override in parsed_overrides(args):
        key = override.key_or_group
        if key in found and not override.is_sweep_override():
            found[key] = strings(override.value())
    return found["plugins"], found["disable_plugins"]


def parsed_overrides(args: Sequence[str]) -> Iterator[Override]:
    """The ``key=value`` arguments of a command line that parse (Hydra reports the others)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue
        try:
            yield parser.parse_override(arg)
        except Exception:
            continue


def strings(value: Any) -> list[str]:
    """A config value as a list of strings (one string, or the strings of a list)."""
    values = [value] if isinstance(value, str) or not isinstance(value, Sequence) else value
    return [str(v) for v in values if isinstance(v, str)]


def config_file_plugins(args: Sequence[str], conf_dir: Path) -> list[str]:
    """The ``plugins`` listed by the config files a command line names, read before Hydra
    composes it: the primary ``config.yaml`` and each ``group=option`` file (a sweep's every
    option) whose package is ``_global_`` (``# @package _global_``, as experiments are), from
    ``conf_dir``, ``--config-dir`` and the ConfigStore. Files pulled in by another file's
    defaults list are not read: the file that lists plugins is named on the command line."""
    wanted = ["config"]
    for override in parsed_overrides(args):
        if override.is_delete():
            continue
        if override.is_sweep_override():
            options = list(override.sweep_string_iterator())
        else:
            options = strings(override.value())
        wanted += [f"{override.key_or_group}/{option}" for option in options]
    found: list[str] = []
    for folder in [*config_dirs(args), conf_dir]:  # the command line's folder comes first
        if not folder.is_dir():  # Hydra says so when it composes
            continue
        for plugin in listed_plugins(folder, wanted):
            if plugin not in found:
                found.append(plugin)
    return found


def config_dirs(args: Sequence[str]) -> list[Path]:
    """The ``--config-dir DIR`` (``-cd DIR``, ``--config-dir=DIR``) of a command line."""
    found = []
    for index, arg in enumerate(args):
        if arg in ("--config-dir", "-cd") and index + 1 < len(args):
            found.append(Path(args[index + 1]).resolve())
        elif arg.startswith("--config-dir="):
            found.append(Path(arg.partition("=")[2]).resolve())
    return found


def listed_plugins(folder: Path, paths: Sequence[str]) -> list[str]:
    """``plugins`` of the global config files at ``paths`` (``group/option``) in ``folder``
    or the ConfigStore."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    found: list[str] = []
    with initialize_config_dir(config_dir=str(folder), version_base="1.3"):
        sources = GlobalHydra.instance().config_loader().get_sources()
        for path in paths:
            source = next((s for s in sources if s.is_config(path)), None)
            if source is None:  # not a config file (a value override), or Hydra reports it
                continue
            loaded = source.load_config(path)
            config = loaded.config
            if not isinstance(config, Mapping):
                continue
            if path == "config" or loaded.header.get("package") == "_global_":
                found += strings(config.get("plugins"))
    return found


def register_configs(
    pm: pluggy.PluginManager, store: ConfigStore, args: Sequence[str], conf_dir: Path
) -> None:
    """Every plugin's ``opd_register_configs``, then those of the plugins the named config
    files list (registered now, so their own configs can list more, until none is new).

    The hook is historic: a plugin registered later still stores its configs on registration.
    """
    pm.hook.opd_register_configs.call_historic(kwargs={"store": store})
    while True:
        new = [p for p in config_file_plugins(args, conf_dir) if not is_registered(pm, p)]
        if not new:
            return
        for module in new:
            register_plugin(pm, module)
        check_hooks(pm)


def is_registered(pm: pluggy.PluginManager, module: str) -> bool:
    """Whether the module named ``module`` is one of ``pm``'s plugins."""
    return any(getattr(p, "__name__", None) == module for p in pm.get_plugins())


def register_plugin(pm: pluggy.PluginManager, plugin: Any, name: str | None = None) -> None:
    """Register a plugin object or an importable module path such as ``"mypkg.plugin"``; a
    module already registered (an installed plugin named again in ``plugins=[...]``) is left
    as it is."""
    if isinstance(plugin, str) and is_registered(pm, plugin):
        return
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


def installed_plugin_names() -> list[str]:
    """Entry-point names of the installed plugins (``hf``, ``report``, ...), sorted."""
    from importlib.metadata import entry_points

    return sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def disable_plugins(pm: pluggy.PluginManager, names: Iterable[str]) -> None:
    """Turn installed plugins off by entry-point name (``disable_plugins=[...]``, like pytest's
    ``-p no:NAME``); an unknown name lists the installed ones."""
    names = list(names)
    if not names:
        return
    installed = installed_plugin_names()
    for name in names:
        if name not in installed:
            raise OPDError(
                f"disable_plugins names '{name}', which is not an installed plugin; "
                f"installed: {', '.join(installed)}."
            )
        pm.set_blocked(name)


def check_stage_answers(pm: pluggy.PluginManager) -> None:
    """Refuse two plugins answering one stage hook at the same precedence.

    Each stage (:data:`opd_core.hookspecs.STAGES`) is answered by the component the config
    chose; another plugin takes over only by saying ``tryfirst=True`` (or stays a fallback with
    ``trylast=True``). Wrappers do not answer and are not counted.
    """
    for stage in hookspecs.STAGES:
        by_order: dict[str, list[str]] = {}
        for impl in getattr(pm.hook, stage).get_hookimpls():
            if impl.wrapper or impl.hookwrapper:
                continue
            order = "tryfirst" if impl.tryfirst else "trylast" if impl.trylast else "plain"
            by_order.setdefault(order, []).append(describe_plugin(impl.plugin_name, impl.plugin))
        for order, answering in by_order.items():
            if len(answering) > 1:
                marked = "" if order == "plain" else f" (both {order})"
                raise OPDError(
                    f"Both {answering[-1]} and {answering[-2]} answer {stage}{marked}; mark the "
                    "one that should answer first @hookimpl(tryfirst=True), or turn the other "
                    "off (drop it from plugins=[...] or disable_plugins=[name])."
                )


def describe_plugin(name: str, plugin: Any) -> str:
    """A plugin as an error message names it: the configured component, or its module/class."""
    if name.startswith(COMPONENT_PREFIX):
        return f"the configured {name[len(COMPONENT_PREFIX) :]} ({type(plugin).__name__})"
    if isinstance(plugin, ModuleType):
        return f"plugin {name} ({plugin.__name__})" if name != plugin.__name__ else name
    return f"plugin {type(plugin).__name__}"


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
