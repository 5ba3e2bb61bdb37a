"""The data-type part of docs/hooks.md: every field a plugin receives, from the dataclasses.

Fields and their types come from the class source (``name: type`` lines, with the docstring
written under a field as its description), so the reference says what the code says.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from types import ModuleType

from opd_core import context, flops, modeling, types

TYPES: tuple[tuple[ModuleType, str], ...] = (
    (types, "Prompt"),
    (types, "EpisodeStart"),
    (types, "EnvReply"),
    (types, "EpisodeSummary"),
    (types, "GenerationParams"),
    (types, "RolloutBatch"),
    (types, "ScoreRequest"),
    (types, "TeacherScores"),
    (types, "Advantages"),
    (types, "PolicyOutput"),
    (types, "LossOutput"),
    (types, "EvalResult"),
    (types, "Generator"),
    (types, "RolloutPrefetcher"),
    (context, "RunContext"),
    (context, "Component"),
    (modeling, "ModelSpec"),
    (modeling, "LoadedModel"),
    (flops, "ModelShape"),
)
"""The types hooks and components hand to plugins, in the order a step meets them."""

HEADING = "## Data types\n"


def members(cls: type) -> list[tuple[str, str, str]]:
    """``(name, type or signature, description)`` of each field (or protocol method)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    out: list[tuple[str, str, str]] = []
    for index, node in enumerate(body):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            following = body[index + 1] if index + 1 < len(body) else None
            doc = ""
            if isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant):
                doc = str(following.value.value)
            out.append((node.target.id, ast.unparse(node.annotation), doc))
        elif isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            if any(ast.unparse(d) == "property" for d in node.decorator_list):
                returns = ast.unparse(node.returns) if node.returns else ""
                out.append((node.name, f"{returns} (property)", ast.get_docstring(node) or ""))
            elif getattr(cls, "_is_protocol", False):  # a protocol: its methods are the API
                signature = ast.unparse(node.args).replace("self, ", "").replace("self", "")
                returns = f" -> {ast.unparse(node.returns)}" if node.returns else ""
                out.append((node.name, f"({signature}){returns}", ast.get_docstring(node) or ""))
    return out


def cell(text: str) -> str:
    """Markdown-table-safe one-line text."""
    return " ".join(text.split()).replace("|", "\\|")


def section(module: ModuleType, name: str) -> str:
    cls = getattr(module, name)
    doc = inspect.getdoc(cls) or ""
    rows = [f"| `{n}` | `{cell(t)}` | {cell(d)} |" for n, t, d in members(cls)]
    table = "| field | type | meaning |\n|---|---|---|\n" + "\n".join(rows) if rows else ""
    return f"### `{module.__name__}.{name}`\n\n{doc}\n\n{table}\n".rstrip() + "\n"


def type_reference() -> str:
    return HEADING + "\n" + "\n".join(section(m, n) for m, n in TYPES)
