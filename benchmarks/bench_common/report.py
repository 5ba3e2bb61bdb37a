"""A benchmark's report: Markdown (a header recording the command, tables) and the same numbers
as JSON, written next to each other and named after the script (:class:`ResultFiles`)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bench_common.costs import RatioEstimate
from bench_common.paths import ResultFiles


def produced_by(command: str, *details: str) -> str:
    """The report's opening: ``Produced by `<command>` (<details>; ...)``."""
    return f"Produced by `{command}`" + (f" ({'; '.join(details)})" if details else "")


def load_text(load: Sequence[float]) -> str:
    """The load average before and after a timed run, as a report states it."""
    return f"load average {load[0]:.1f} before, {load[1]:.1f} after"


def markdown_table(header: str, rows: Iterable[str]) -> list[str]:
    """A Markdown table from its header and rows written as cells joined by ``" | "`` (no outer
    bars): ``"method | final"``, ``f"{key} | {final:.1%}"``. A row with another number of cells
    than the header is refused."""
    width = header.count(" | ") + 1
    lines = [f"| {header} |", "|" + "---|" * width]
    for row in rows:
        if row.count(" | ") + 1 != width:
            raise ValueError(f"a row of {row.count(' | ') + 1} cells under {width} columns: {row}")
        lines.append(f"| {row} |")
    return lines


def targets_line(met: Mapping[str, bool], prefix: str = "Targets") -> str:
    """``Targets: <name> yes, <name> NO``."""
    return f"{prefix}: " + ", ".join(f"{name} {'yes' if ok else 'NO'}" for name, ok in met.items())


def cost_text(value: float | None, measure: str) -> str:
    """A cost to a target as a table cell: ``not reached`` for None, FLOPs as ``1.23e+15``,
    seconds as ``42 s``, steps as ``125``."""
    if value is None:
        return "not reached"
    if measure == "flops":
        return f"{value:.2e}"
    return f"{value:.0f} s" if measure == "seconds" else f"{value:.0f}"


def percent(value: float | None, missing: str = "n/a") -> str:
    """``value`` (a fraction) in percent with one decimal, ``missing`` for None."""
    return missing if value is None else f"{value:.1%}"


def write_report(
    files: ResultFiles, markdown: Sequence[str], record: Mapping[str, Any] | None = None
) -> None:
    """Write ``markdown`` (lines) to ``files.md`` and ``record`` to ``files.json``, and print
    the Markdown."""
    files.folder.mkdir(parents=True, exist_ok=True)
    text = "\n".join(markdown)
    files.md.write_text(text)
    if record is not None:
        files.json.write_text(json.dumps(record, indent=1, default=str) + "\n")
    print(text)


def sft_over_opd_record(r: RatioEstimate) -> dict[str, Any]:
    """A ratio of SFT's cost over OPD's (SFT the slower side) under the names reports use."""
    return {
        "target": r.target,
        "sft_flops": r.slower_cost,
        "opd_flops": r.faster_cost,
        "sft_over_opd": r.ratio,
        "ci95": r.ci95,
        "both_reached_share": r.reached_share,
    }


def sft_over_opd_cell(r: Mapping[str, Any]) -> str:
    """A :func:`sft_over_opd_record` as a table cell: ``1.23x (0.90-1.60)``, or why there is
    no ratio."""
    if r["opd_flops"] == 0.0 or r["sft_flops"] == 0.0:
        return "the start is already there"
    if r["sft_over_opd"] is None:
        missing = [k for k in ("opd_flops", "sft_flops") if r[k] is None]
        return "not reached by " + " and ".join(k.split("_")[0].upper() for k in missing)
    ci = r["ci95"]
    interval = f" ({ci[0]:.2f}-{ci[1]:.2f})" if ci else " (CI: some resamples miss the target)"
    return f"{r['sft_over_opd']:.2f}x{interval}"
