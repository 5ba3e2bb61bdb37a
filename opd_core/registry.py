"""The registry of named components that configs choose from.

Plugins fill it through :func:`opd_core.hookspecs.opd_register_components`. A config node such as
``{name: reverse_kl, coef: 1.0}`` picks the factory registered as ``("advantage", "reverse_kl")``
and calls it with the remaining keys as keyword arguments. Binding those keys to the factory's
signature validates a config without building anything heavy.

A factory may be given as a ``"module:attr"`` string: its module is imported only when a config
chooses the component, so registering every built-in costs no import of their dependencies.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from opd_core.errors import OPDError, unknown_choice
from opd_core.typecheck import check_finite, check_value, parameter_types


@dataclass(frozen=True)
class Kind:
    """A kind of component: its registry name, config group and where the config holds it."""

    name: str
    """The registry kind (``registry.add(name, ...)``) and config group (``conf/<name>/``)."""
    node: str
    """The composed config's key: the node itself, or a mapping of nodes when ``many``."""
    many: bool = False
    """A list chosen with ``<name>=[a,b]``, each node at ``<node>.<option>``."""
    optional: bool = False
    """A run may leave the node ``null`` (no such component): a single-turn task has no
    ``environment``, a loss that reads no advantages no ``advantage``
    (:mod:`opd_core.objective`)."""


COMPONENT_KINDS: tuple[Kind, ...] = (
    Kind("task", "task"),
    Kind("teacher", "teacher"),
    Kind("sampler", "sampler"),
    Kind("prompts", "prompts"),
    Kind("advantage", "advantage", optional=True),
    Kind("loss", "loss"),
    Kind("evaluator", "evaluators", many=True),
    Kind("logger", "loggers", many=True),
    Kind("environment", "environment", optional=True),
)
"""Every component kind, the one list the registry, the config and the trainer read."""

KINDS: tuple[str, ...] = tuple(kind.name for kind in COMPONENT_KINDS)
"""Component kinds by registry name."""


@dataclass(frozen=True)
class Entry:
    """One registered factory."""

    kind: str
    name: str
    target: Callable[..., Any] | str
    """The factory, or its ``"module:attr"`` path (imported on first use)."""
    provider: str
    """The module that provides it, for error messages."""

    @property
    def factory(self) -> Callable[..., Any]:
        """The factory, imported now if it was registered by path."""
        if callable(self.target):
            return self.target
        return import_factory(self.kind, self.name, self.target)


def import_factory(kind: str, name: str, path: str) -> Callable[..., Any]:
    """The object a ``"module:attr"`` path names; a bad path is one sentence naming it."""
    module_name, _, attr = path.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise OPDError(
            f"{kind} '{name}' is registered as '{path}', which cannot be imported "
            f"({type(err).__name__}: {err}); fix the plugin's registration or install "
            "what it needs."
        ) from err
    except Exception as err:  # the plugin module itself raised while importing
        first_line = (str(err).strip().splitlines() or [""])[0]
        raise OPDError(
            f"Plugin module '{module_name}' (providing {kind} '{name}') failed while importing "
            f"({type(err).__name__}: {first_line}); fix the module or uninstall the plugin."
        ) from err
    if not callable(factory):
        raise OPDError(f"{kind} '{name}' is registered as '{path}', which is not callable.")
    return factory


class Registry:
    """Named component factories, by kind."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], Entry] = {}

    def add(self, kind: str, name: str, factory: Callable[..., Any] | str) -> None:
        """Register ``factory`` (or its ``"module:attr"`` path, imported when chosen) as component
        ``name`` of ``kind``; names are unique per kind."""
        if isinstance(factory, str) and ":" not in factory:
            raise OPDError(
                f"Cannot register {kind} '{name}' as '{factory}': a factory path is 'module:attr'."
            )
        provider = (
            factory.partition(":")[0]
            if isinstance(factory, str)
            else getattr(factory, "__module__", "?")
        )
        if kind not in KINDS:
            raise OPDError(
                f"Cannot register '{name}': unknown component kind '{kind}'. "
                f"Kinds are: {', '.join(KINDS)}."
            )
        key = (kind, name)
        if key in self._entries and self._entries[key].target != factory:
            other = self._entries[key].provider
            raise OPDError(
                f"Two plugins register {kind} '{name}' ({other} and {provider}); "
                "uninstall one of them or rename its component."
            )
        self._entries[key] = Entry(kind, name, factory, provider)

    def names(self, kind: str) -> list[str]:
        """Registered names of ``kind``, sorted."""
        return sorted(name for (k, name) in self._entries if k == kind)

    def entry(self, kind: str, name: str) -> Entry:
        """The entry for ``name``; an unknown name lists the available ones."""
        try:
            return self._entries[(kind, name)]
        except KeyError:
            raise unknown_choice(kind, name, self.names(kind)) from None

    def bind(self, kind: str, node: Mapping[str, Any]) -> tuple[Entry, dict[str, Any]]:
        """Check a config node against its factory's signature; return the entry and kwargs."""
        if "name" not in node:
            raise OPDError(
                f"The {kind} config has no 'name' key; set {kind}.name to one of: "
                f"{', '.join(self.names(kind))}."
            )
        entry = self.entry(kind, str(node["name"]))
        kwargs = {k: v for k, v in node.items() if k != "name"}
        params = inspect.signature(entry.factory).parameters
        accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        unknown = [] if accepts_any else sorted(set(kwargs) - set(params))
        if unknown:
            valid = ", ".join(sorted(p for p in params if p != "self"))
            raise OPDError(
                f"{kind} '{entry.name}' has no option {', '.join(unknown)}; "
                f"its options are: {valid or '(none)'}."
            )
        missing = sorted(
            p.name
            for p in params.values()
            if p.default is inspect.Parameter.empty
            and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
            and p.name not in kwargs
        )
        if missing:
            raise OPDError(
                f"{kind} '{entry.name}' needs {', '.join(missing)}; "
                f"set {', '.join(f'{kind}.{m}=...' for m in missing)}."
            )
        types = parameter_types(entry.factory)
        for key, value in kwargs.items():
            check_value(f"{kind}.{key}", value, types.get(key, Any))
            check_finite(f"{kind}.{key}", value)
        return entry, kwargs

    def build(self, kind: str, node: Mapping[str, Any]) -> Any:
        """Construct the component a config node describes (cheap: no weights are loaded)."""
        entry, kwargs = self.bind(kind, node)
        try:
            return entry.factory(**kwargs)
        except (ValueError, TypeError) as err:
            raise OPDError(f"Invalid {kind} '{entry.name}' config: {err}") from err

    def entries(self) -> list[Entry]:
        """Every registered entry."""
        return list(self._entries.values())
