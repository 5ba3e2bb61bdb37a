"""IFEval prompts: JSONL records (``key``, ``prompt``, ``instruction_id_list``, ``kwargs``) as
chat prompts, and fixed subsets of them."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from opd_core import OPDError, Prompt

SOURCE = "ifeval"
Row = TypeVar("Row")


def ifeval_path(path: str | None) -> Path:
    """``path``, or (when ``None``) the 541 IFEval prompts fetched by ``opd_assets``."""
    if path is None:
        from opd_assets import fetch_ifeval_prompts

        return fetch_ifeval_prompts()
    resolved = Path(path).expanduser()
    if not resolved.is_file():
        raise OPDError(
            f"IFEval prompt file {path} does not exist; fix: point path at a JSONL file with "
            "IFEval's fields (key, prompt, instruction_id_list, kwargs), or set it to null for "
            "the 541 IFEval prompts."
        )
    return resolved


def load_prompts(path: str | None) -> list[Prompt]:
    """Every record of the IFEval file at ``path`` (see :func:`ifeval_path`) as a chat prompt."""
    from opd_assets import read_ifeval_prompts

    return [to_prompt(record) for record in read_ifeval_prompts(ifeval_path(path))]


def to_prompt(record: Mapping[str, Any]) -> Prompt:
    """One IFEval record as a one-turn chat prompt; the instructions ride in ``metadata``."""
    return Prompt(
        id=f"ifeval-{record['key']}",
        messages=({"role": "user", "content": str(record["prompt"])},),
        metadata={
            "key": record["key"],
            "instruction_id_list": list(record["instruction_id_list"]),
            "kwargs": [dict(k) for k in record["kwargs"]],
        },
        source=SOURCE,
    )


def ifeval_doc(prompt: Prompt) -> dict[str, Any]:
    """The record lm-eval's IFEval scorer expects, rebuilt from a :func:`to_prompt` prompt."""
    if "instruction_id_list" not in prompt.metadata:
        raise OPDError(
            f"Prompt '{prompt.id}' carries no IFEval instructions; fix: score only prompts of "
            "the ifeval task (or an IFEval JSONL file)."
        )
    return {
        "key": prompt.metadata["key"],
        "prompt": prompt.messages[-1]["content"],
        "instruction_id_list": list(prompt.metadata["instruction_id_list"]),
        "kwargs": [dict(k) for k in prompt.metadata["kwargs"]],
    }


def choose(rows: Sequence[Row], limit: int | None, seed: int | None) -> list[Row]:
    """A fixed subset of ``limit`` rows (all when ``None``) in file order: the first ones when
    ``seed`` is ``None``, else a sample drawn with ``seed``."""
    if limit is None or limit >= len(rows):
        return list(rows)
    if seed is None:
        return list(rows[:limit])
    picked = sorted(random.Random(seed).sample(range(len(rows)), limit))
    return [rows[i] for i in picked]
