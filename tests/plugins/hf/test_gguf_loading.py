"""GGUF model files through the transformers loader, on a tiny Llama GGUF the tests write."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from opd_core import OPDError
from opd_core.app import run
from opd_core.checkpoint import latest_checkpoint
from opd_core.modeling import LoadedModel, ModelSpec
from opd_hf.loading import load_hf_model
from tiny_gguf import TinyGGUF, tiny_llama, tiny_tokenizer, write_gguf, write_tiny_gguf

pytest.importorskip("gguf", reason="the gguf package (extra 'gguf') writes the test's GGUF file")

CPU = torch.device("cpu")
TEXT = "Dr. Smith arrived at 5 p.m. on Monday. He left.<|im_end|>"
CHAT = [{"role": "user", "content": "Write a short poem about the sea."}]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyGGUF:
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny-llama.F32.gguf")


@pytest.fixture(scope="module")
def loaded(tiny: TinyGGUF) -> LoadedModel:
    return load_hf_model(ModelSpec(str(tiny.path), dtype="float32"), "student", CPU)


def logits(model: torch.nn.Module, ids_BT: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids_BT).logits  # type: ignore[no-any-return]


def test_gguf_model_gives_the_source_models_logits(tiny: TinyGGUF, loaded: LoadedModel) -> None:
    assert type(loaded.model).__name__ == "LlamaForCausalLM"
    assert loaded.model.dtype == torch.float32
    assert not loaded.model.config.tie_word_embeddings  # the file has its own output.weight
    ids_BT = torch.tensor([tiny.tokenizer(TEXT)["input_ids"]])
    torch.testing.assert_close(logits(loaded.model, ids_BT), logits(tiny.model, ids_BT))


def test_gguf_query_key_layout_matters(tmp_path: Path, tiny: TinyGGUF) -> None:
    """The rotary reordering of q/k is what makes the logits equal: without it they differ."""
    import tiny_gguf

    plain = tmp_path / "plain.gguf"
    original = tiny_gguf._to_rotary_interleaved
    tiny_gguf._to_rotary_interleaved = lambda weights, heads: weights  # type: ignore[assignment]
    try:
        write_gguf(plain, tiny.model, tiny.tokenizer)
    finally:
        tiny_gguf._to_rotary_interleaved = original
    model = load_hf_model(ModelSpec(str(plain), dtype="float32"), "student", CPU).model
    ids_BT = torch.tensor([tiny.tokenizer(TEXT)["input_ids"]])
    assert not torch.allclose(logits(model, ids_BT), logits(tiny.model, ids_BT), atol=1e-4)


def test_gguf_tokenizer_round_trips(tiny: TinyGGUF, loaded: LoadedModel) -> None:
    tokenizer = loaded.tokenizer
    ids = tokenizer(TEXT)["input_ids"]
    assert ids == tiny.tokenizer(TEXT)["input_ids"]
    assert ids[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")  # a special token stays whole
    assert tokenizer.decode(ids) == TEXT
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.padding_side == "left"
    rendered = tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False)
    assert rendered == "<|im_start|>user\nWrite a short poem about the sea.<|im_end|>\n" + (
        "<|im_start|>assistant\n"
    )


def test_gguf_loaded_model_saves_and_reloads_as_a_checkpoint(
    tmp_path: Path, tiny: TinyGGUF, loaded: LoadedModel
) -> None:
    folder = tmp_path / "checkpoint"
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    assert "quantization_config" not in (folder / "config.json").read_text()
    again = load_hf_model(ModelSpec(str(folder), dtype="float32"), "student", CPU)
    ids_BT = torch.tensor([tiny.tokenizer(TEXT)["input_ids"]])
    torch.testing.assert_close(logits(again.model, ids_BT), logits(tiny.model, ids_BT))
    assert again.tokenizer(TEXT)["input_ids"] == tiny.tokenizer(TEXT)["input_ids"]


def test_missing_gguf_file_is_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(OPDError, match=r"model file .*absent\.gguf does not exist; fix: point"):
        load_hf_model(ModelSpec(str(tmp_path / "absent.gguf")), "teacher", CPU)


def test_file_that_is_not_gguf_is_named(tmp_path: Path) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_text('{"model_type": "llama"}')
    with pytest.raises(OPDError, match=r"model\.gguf is not a GGUF file .*teacher\.model\.path"):
        load_hf_model(ModelSpec(str(fake)), "teacher", CPU)


def test_truncated_gguf_file_is_damaged(tmp_path: Path, tiny: TinyGGUF) -> None:
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny.path.read_bytes()[:2000])  # inside the metadata
    with pytest.raises(OPDError, match=r"cut\.gguf is a damaged GGUF file .*download it again"):
        load_hf_model(ModelSpec(str(cut)), "student", CPU)


def test_architecture_transformers_cannot_load_is_named(tmp_path: Path) -> None:
    tokenizer = tiny_tokenizer()
    path = tmp_path / "encoder.gguf"
    write_gguf(path, tiny_llama(len(tokenizer)), tokenizer, arch="bert")
    with pytest.raises(OPDError, match=r"holds a GGUF 'bert' model that transformers cannot load"):
        load_hf_model(ModelSpec(str(path)), "student", CPU)


@pytest.mark.slow
def test_training_run_from_a_gguf_student_checkpoints_a_normal_model(
    tiny: TinyGGUF, compose_config: Callable[[list[str]], DictConfig], tmp_path: Path
) -> None:
    """student.model.path and teacher.model.path accept a .gguf file; checkpoints are plain HF."""
    out = tmp_path / "run"
    cfg = compose_config(
        [
            "+task=arithmetic",
            "+teacher=hf",
            f"teacher.model.path={tiny.path}",
            f"student.model.path={tiny.path}",
            "student.model.dtype=float32",
            "task.train_size=50",
            "task.eval_size=4",
            "train.steps=2",
            "train.prompts_per_step=4",
            "train.samples_per_prompt=2",
            "train.max_new_tokens=8",
            "eval.max_new_tokens=8",
            "eval.every=0",
            "train.warmup_steps=0",
            "progress=false",
            f"hydra.run.dir={out}",
        ]
    )
    run(cfg, out)
    checkpoint = latest_checkpoint(out)
    assert checkpoint is not None
    reloaded = load_hf_model(ModelSpec(str(checkpoint / "model"), dtype="float32"), "student", CPU)
    assert type(reloaded.model).__name__ == "LlamaForCausalLM"
    assert reloaded.tokenizer(TEXT)["input_ids"] == tiny.tokenizer(TEXT)["input_ids"]
