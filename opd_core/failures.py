"""Turn any exception that ends a run into the one sentence the command line prints.

:class:`~opd_core.errors.OPDError` already is that sentence. Everything else is described here:
Hydra's own errors (an unknown config option, a misspelled key, an override it cannot parse),
operating-system errors (a read-only or full disk), memory, and bugs. A bug raised inside a hook
names the plugin and the hook it was in, found in the traceback's pluggy frame. Tracebacks are
shown only when asked for with ``OPD_DEBUG=1`` (or Hydra's ``HYDRA_FULL_ERROR=1``).
"""

from __future__ import annotations

import dataclasses
import errno
import os
import re
from pathlib import Path
from types import TracebackType
from typing import Any

from opd_core.errors import OPDError, unknown_choice

DEBUG_VARIABLES = ("OPD_DEBUG", "HYDRA_FULL_ERROR")
PREFIX = "opd_core: error: "


def debug_requested() -> bool:
    """Whether the user asked for tracebacks (``OPD_DEBUG=1`` or ``HYDRA_FULL_ERROR=1``)."""
    return any(os.environ.get(v, "") not in ("", "0", "false") for v in DEBUG_VARIABLES)


def describe(err: BaseException) -> str:
    """One sentence (one line) saying what went wrong and what to do about it."""
    return " ".join(_describe(err).split())


def _describe(err: BaseException) -> str:
    if isinstance(err, OPDError):
        return str(err)
    hydra_message = describe_hydra_error(err)
    if hydra_message is not None:
        return hydra_message
    if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError":
        return (
            f"Out of memory ({_first_line(err)}); lower train.micro_batch_size, "
            "train.prompts_per_step or the max_new_tokens settings, or use a smaller model."
        )
    if isinstance(err, UnicodeDecodeError):
        return (
            f"A data file is not UTF-8 text ({_first_line(err)}); convert it to UTF-8 "
            "(iconv -t utf-8) or point the task at the right file."
        )
    if isinstance(err, OSError) and err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        where = err.filename or "a file"
        return (
            f"Cannot write {where} ({err.strerror}); run in a writable folder or choose "
            "one with hydra.run.dir=/path/to/writable/folder."
        )
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return f"The disk is full writing {err.filename or 'a file'}; free space and rerun."
    if isinstance(err, OSError) and err.filename:
        return (
            f"Cannot use {err.filename} ({err.strerror or type(err).__name__}); check the path, "
            "or choose another run folder with hydra.run.dir=/path/to/folder."
        )
    return describe_bug(err)


# -------------------------------------------------------------------- bugs


@dataclasses.dataclass(frozen=True)
class HookSite:
    """Where in the hook machinery an exception was raised."""

    hook: str
    plugin: str


def hook_site(tb: TracebackType | None) -> HookSite | None:
    """The innermost hook call in a traceback, and the plugin whose implementation raised."""
    found: HookSite | None = None
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name == "_multicall" and "pluggy" in frame.f_code.co_filename:
            impl = frame.f_locals.get("hook_impl")
            hook = str(frame.f_locals.get("hook_name", "?"))
            if impl is not None:
                found = HookSite(hook=hook, plugin=plugin_label(impl))
        tb = tb.tb_next
    return found


def plugin_label(impl: Any) -> str:
    """A plugin's name for a user: its module, and its registration name when that differs."""
    plugin = getattr(impl, "plugin", None)
    name = str(getattr(impl, "plugin_name", "?"))
    module = getattr(plugin, "__name__", None) or type(plugin).__module__
    return module if module == name else f"{module} ({name})"


def describe_bug(err: BaseException) -> str:
    """A bug: the plugin and hook it was in when a hook raised, else where it was raised."""
    what = f"{type(err).__name__}: {_first_line(err)}" if str(err) else type(err).__name__
    site = hook_site(err.__traceback__)
    debug = "rerun with OPD_DEBUG=1 for the traceback"
    if site is not None:
        return (
            f"Plugin {site.plugin} failed in hook {site.hook} ({what}); this is a bug in that "
            f"plugin: {debug} and report it to its authors."
        )
    return f"Unexpected {what} at {innermost(err.__traceback__)}; {debug} and report it as a bug."


def innermost(tb: TracebackType | None) -> str:
    """``file:line`` of the innermost frame of a traceback."""
    last = None
    while tb is not None:
        last, tb = tb, tb.tb_next
    if last is None:
        return "an unknown place"
    return f"{Path(last.tb_frame.f_code.co_filename).name}:{last.tb_lineno}"


# -------------------------------------------------------------------- Hydra


_NOT_FOUND = re.compile(r"Could not (?:find|load) '(?P<path>[^']+)'")

_OBJECTIVE = (
    "(one config group now picks the loss and, when the loss reads advantages, the advantage "
    "function; docs/objectives.md)"
)
RETIRED_OPTIONS: dict[str, str] = {
    **{
        f"experiment/{old}": f"+experiment={old} was replaced by objective={new} {_OBJECTIVE}."
        for old, new in (
            ("opd", "opd"),
            ("reverse_kl_topk", "reverse_kl_topk"),
            ("reverse_kl_truncated", "reverse_kl_truncated"),
            ("entropy_aware_kl", "entropy_aware_kl"),
            ("forward_kl", "forward_kl"),
            ("jsd", "jsd"),
            ("mixed", "mixed"),
            ("rl", "grpo"),
            ("sft", "sft"),
        )
    },
    "advantage/uniform": (
        "advantage=uniform was removed: leave the advantage out (a loss that reads no "
        "advantages needs none, and loss=cross_entropy without one is SFT: objective=sft)."
    ),
}
"""The sentence for a removed config option (by ``group/option``) that names what replaced it,
so an old command line gets the new spelling rather than a list of options."""
_NOT_IN_STRUCT = re.compile(r"Could not override '(?P<key>[^']+)'\.\s*To append")


def describe_hydra_error(err: BaseException) -> str | None:
    """Hydra's multi-line messages as one sentence; ``None`` for an error Hydra did not raise."""
    from hydra.errors import HydraException, OverrideParseException

    if not isinstance(err, HydraException):
        return None
    text = str(err)
    found = _NOT_FOUND.search(text)
    if found is not None and found["path"] in RETIRED_OPTIONS:
        return RETIRED_OPTIONS[found["path"]]
    if found is not None:
        group, _, option = found["path"].rpartition("/")
        listed = re.findall(r"^\t(\S+)$", text, flags=re.MULTILINE)
        return str(unknown_choice(group, option, listed or group_options(group)))
    missing_key = _NOT_IN_STRUCT.search(text)
    if missing_key is not None:
        return unknown_key_message(missing_key["key"])
    if isinstance(err, OverrideParseException):
        return (
            f"Cannot parse an override ({_first_line(err)}); write key=value, quoting values "
            "with spaces or brackets (https://hydra.cc/docs/advanced/override_grammar/basic)."
        )
    lines = [ln.strip() for ln in text.split("Config search path")[0].splitlines() if ln.strip()]
    lines = [ln.rstrip(".") for ln in lines]
    return "; ".join([lines[0], *(ln[:1].lower() + ln[1:] for ln in lines[1:])]) + "."


def unknown_key_message(key: str) -> str:
    """A misspelled key: what its section accepts, when the section is one of the core ones."""
    section = key.rpartition(".")[0]
    accepted = section_keys(section)
    if accepted:
        return (
            f"Unknown config key {key}; {section} accepts: {', '.join(accepted)} "
            "(python -m opd_core --cfg job prints the whole config)."
        )
    return (
        f"Unknown config key {key}; check its spelling (python -m opd_core --cfg job prints "
        f"every key), or add a key a plugin reads with +{key}=..."
    )


def section_keys(section: str) -> list[str]:
    """The keys a core config section accepts (empty for component sections)."""
    from opd_core.config import (
        CheckpointConfig,
        DivergenceConfig,
        EvalConfig,
        RunConfig,
        StudentConfig,
        TrainConfig,
    )
    from opd_core.modeling import ModelSpec

    schemas: dict[str, type] = {
        "": RunConfig,
        "train": TrainConfig,
        "eval": EvalConfig,
        "checkpoint": CheckpointConfig,
        "divergence": DivergenceConfig,
        "student": StudentConfig,
        "student.model": ModelSpec,
    }
    schema = schemas.get(section)
    return [f.name for f in dataclasses.fields(schema)] if schema is not None else []


def group_options(group: str) -> list[str]:
    """The options of a config group: the shipped YAML files and what plugins stored."""
    from hydra.core.config_store import ConfigStore

    from opd_core.config import CONF_DIR

    names = {p.stem for p in (CONF_DIR / group).glob("*.yaml")}
    node: Any = ConfigStore.instance().repo
    for part in group.split("/"):
        node = node.get(part, {}) if isinstance(node, dict) else {}
    if isinstance(node, dict):
        names |= {k.removesuffix(".yaml") for k in node}
    return sorted(names)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
