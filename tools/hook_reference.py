"""Regenerate the reference section of docs/hooks.md: the hooks from opd_core/hookspecs.py and
the data types they pass (tools/type_reference.py).

python tools/hook_reference.py          # rewrite docs/hooks.md
python tools/hook_reference.py --check  # exit 1 if it is out of date (the tests do this)
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

from type_reference import type_reference

from opd_core import hookspecs

DOCS = Path(__file__).resolve().parents[1] / "docs" / "hooks.md"
HEADING = "## Reference\n"


def hook_names() -> list[str]:
    """Hooks in the order hookspecs.py defines them (the order of a run)."""
    source = inspect.getsource(hookspecs)
    names = [n for n in dir(hookspecs) if n.startswith("opd_")]
    return sorted(names, key=lambda n: source.index(f"def {n}("))


def section(name: str) -> str:
    function = getattr(hookspecs, name)
    options = getattr(function, "opd_core_spec", {}) or {}
    marks = [m for m in ("firstresult", "historic") if options.get(m)]
    first = "".join(f" *({'first result' if m == 'firstresult' else m})*" for m in marks)
    signature = str(inspect.signature(function)).replace("'", "")
    doc = inspect.getdoc(function) or ""
    return f"### `{name}`{first}\n\n```python\ndef {name}{signature}\n```\n\n{doc}\n"


def reference() -> str:
    hooks = "\n".join(section(n) for n in hook_names())
    return HEADING + "\n" + hooks + "\n" + type_reference()


def updated(text: str) -> str:
    """``text`` with everything from the reference heading on replaced."""
    return text[: text.index(HEADING)] + reference()


if __name__ == "__main__":
    current = DOCS.read_text()
    new = updated(current)
    if "--check" in sys.argv[1:]:
        sys.exit(0 if new == current else 1)
    DOCS.write_text(new)
