"""The demo teacher with another tokenizer: built once, cached, and not the student's vocabulary."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import TINY_TEACHER
from opd_arith import build, other_tokenizer, plugin
from opd_arith.build import DemoSpec
from opd_arith.other_tokenizer import EOS_BPE, build_bpe_teacher, build_merging_tokenizer
from opd_arith.tokenizer import build_tokenizer
from opd_core.modeling import ModelSpec


def test_the_tokenizer_merges_across_characters() -> None:
    texts = ["5+(2*3) 2*3=6 5+6=11 #11", "11+11 11+11=22 #22"] * 50
    tokenizer = build_merging_tokenizer(texts, vocab_size=300)
    demo = build_tokenizer(texts)
    assert len(tokenizer("11+11=22 #22")["input_ids"]) < len(demo("11+11=22 #22")["input_ids"])
    assert tokenizer.eos_token == EOS_BPE and tokenizer.get_vocab() != demo.get_vocab()
    assert tokenizer.decode(tokenizer("7*8=56 #56")["input_ids"]) == "7*8=56 #56"


def test_the_teacher_is_built_once_and_loads(tmp_path: Path) -> None:
    spec = DemoSpec(num_train=200, teacher=TINY_TEACHER, teacher_steps=2, batch_size=8)
    folder = build_bpe_teacher(spec, tmp_path, vocab_size=300, progress=False)
    assert folder == tmp_path / f"{spec.digest()}-bpe300-steps2"  # the spec's teacher_steps
    stamp = (folder / "config.json").stat().st_mtime_ns
    assert build_bpe_teacher(spec, tmp_path, vocab_size=300, progress=False) == folder
    assert (folder / "config.json").stat().st_mtime_ns == stamp  # reused, not rebuilt
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert tokenizer.eos_token == EOS_BPE
    assert model.get_input_embeddings().num_embeddings == len(tokenizer)
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]  # no temporary folder left


def test_the_demo_loader_serves_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = DemoSpec(num_train=200, teacher=TINY_TEACHER, teacher_steps=2, batch_size=8)
    monkeypatch.setenv("OPD_CORE_CACHE", str(tmp_path))
    monkeypatch.setattr(build, "DemoSpec", lambda: spec)  # the loader imports it lazily
    monkeypatch.setattr(other_tokenizer, "BPE_TEACHER_STEPS", 3)
    loaded = plugin.opd_load_model(
        spec=ModelSpec("demo://arithmetic/teacher_bpe"), role="teacher", device=torch.device("cpu")
    )
    assert loaded is not None and loaded.tokenizer.eos_token == EOS_BPE
    assert (tmp_path / "demo_arithmetic" / f"{spec.digest()}-bpe512-steps3").is_dir()
