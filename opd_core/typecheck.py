"""Check config values against the types they fill: dataclass fields and factory parameters.

Hydra hands over whatever the command line parsed (``train.steps=abc`` is the string ``'abc'``,
``resume=maybe`` too, ``loss.top_k=nan`` a float), so every value is checked against its
annotation before anything is built: integers are integers (not ``2.5``, not ``true``), numbers
are finite, booleans are ``true``/``false``. A mismatch is one :class:`OPDError` sentence naming
the key, the value and what it should be.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Union

from opd_core.errors import OPDError


def invalid(key: str, value: object, expected: str) -> OPDError:
    """The project's sentence for a bad config value."""
    return OPDError(f"Invalid {key}={_show(value)}: expected {expected}.")


def field_types(cls: type) -> dict[str, Any]:
    """The resolved annotation of each field of dataclass ``cls``."""
    hints = _hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls)}


def parameter_types(factory: Callable[..., Any]) -> dict[str, Any]:
    """The resolved annotation of each parameter of a factory (a class or a function)."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    hints = _hints(target)
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return {}
    return {name: hints.get(name, Any) for name in params}


def check_value(key: str, value: Any, annotation: Any) -> Any:
    """Return ``value`` (lists become tuples where a tuple is expected) or raise naming ``key``."""
    problem = _mismatch(value, annotation)
    if problem is not None:
        raise invalid(key, value, problem)
    return _convert(value, annotation)


def check_finite(key: str, value: Any) -> None:
    """Refuse NaN and infinities inside any float (also nested in lists and mappings)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise invalid(key, value, "a finite number")
    if isinstance(value, Mapping):
        for k, v in value.items():
            check_finite(f"{key}.{k}", v)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_finite(f"{key}[{i}]", v)


# -------------------------------------------------------------------- helpers


def _hints(target: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(target)
    except Exception:  # an annotation naming a type only imported for type checkers
        return {}


def _mismatch(value: Any, annotation: Any) -> str | None:
    """``None`` when ``value`` fits ``annotation``, else what was expected (for the sentence)."""
    if annotation is Any or annotation is inspect.Parameter.empty:
        return None
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if value is None and len(options) < len(args):
            return None
        problems = [_mismatch(value, a) for a in options]
        if any(p is None for p in problems):
            return None
        described = " or ".join(p for p in problems if p)
        return f"{described} or null" if len(options) < len(args) else described
    if origin is typing.Literal:
        return None if value in args else "one of " + ", ".join(map(str, args))
    if annotation is bool:
        return None if isinstance(value, bool) else "true or false"
    if annotation is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else "an integer"
    if annotation is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if ok and math.isfinite(value) else "a finite number"
    if annotation is str:
        return None if isinstance(value, (str, int, float)) else "a string"
    if origin is tuple:
        return _tuple_mismatch(value, args)
    return None


def _tuple_mismatch(value: Any, args: tuple[Any, ...]) -> str | None:
    if not isinstance(value, (list, tuple)):
        return "a list"
    if len(args) == 2 and args[1] is Ellipsis:
        items = [(v, args[0]) for v in value]
    elif len(value) != len(args):
        return f"a list of {len(args)} values"
    else:
        items = list(zip(value, args, strict=True))
    for item, item_type in items:
        problem = _mismatch(item, item_type)
        if problem is not None:
            return f"a list of {_plural(problem)}"
    return None


def _plural(description: str) -> str:
    words = {"an integer": "integers", "a finite number": "finite numbers", "a string": "strings"}
    return words.get(description, description)


def _convert(value: Any, annotation: Any) -> Any:
    if isinstance(value, list):
        return tuple(value)
    wants_str = annotation is str or str in typing.get_args(annotation)
    if wants_str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
