"""Write a tiny Llama model and its byte-level BPE tokenizer as a GGUF file, offline.

The file holds what transformers' GGUF loader reads: ``llama.*`` shape metadata, a ``gpt2``
(byte-level BPE) tokenizer with its vocabulary, merges, special-token ids, token types and chat
template, and F32 tensors under llama.cpp's names (``blk.N.attn_q.weight``, ...). The query and
key projections are stored in llama.cpp's rotary layout (the two rotary halves of each head
interleaved), which the loader undoes; everything is F32, so a loaded model's logits equal the
source model's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Write a short poem about the sea, in exactly three lines.",
    "Answer with one word: what colour is the sky on a clear day?",
    "Dr. Smith arrived at 5 p.m. on Monday. He left at 6 p.m.",
] * 20
NORMAL, CONTROL = 1, 3  # llama.cpp token types


@dataclass(frozen=True)
class TinyGGUF:
    """A written GGUF file and the model and tokenizer it was written from."""

    path: Path
    model: LlamaForCausalLM
    tokenizer: PreTrainedTokenizerFast


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE (GPT-2 pre-tokenization) with ChatML special tokens and template."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=list(SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(TEXTS, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )


def tiny_llama(vocab_size: int, seed: int = 0) -> LlamaForCausalLM:
    """A random fp32 Llama: 2 layers, grouped-query attention, untied output head."""
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=128,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).float().eval()


def write_tiny_gguf(path: Path, seed: int = 0) -> TinyGGUF:
    """Build a tiny Llama and tokenizer and write them to ``path`` as a GGUF file."""
    tokenizer = tiny_tokenizer()
    model = tiny_llama(len(tokenizer), seed)
    write_gguf(path, model, tokenizer)
    return TinyGGUF(path=path, model=model, tokenizer=tokenizer)


def write_gguf(
    path: Path, model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, arch: str = "llama"
) -> None:
    """Write ``model``'s tensors (F32) and ``tokenizer`` as GGUF metadata to ``path``."""
    import gguf

    config: Any = model.config
    writer = gguf.GGUFWriter(path, arch)
    writer.add_name("tiny-llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(config.head_dim)
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    _add_tokenizer(writer, tokenizer)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    for hf_name, tensor in model.state_dict().items():
        module, _, kind = hf_name.rpartition(".")
        gguf_name = names.get_name(module)
        assert gguf_name is not None, hf_name
        weights = tensor.detach().float().numpy()
        if gguf_name.endswith(".attn_q"):
            weights = _to_rotary_interleaved(weights, config.num_attention_heads)
        elif gguf_name.endswith(".attn_k"):
            weights = _to_rotary_interleaved(weights, config.num_key_value_heads)
        writer.add_tensor(f"{gguf_name}.{kind}", np.ascontiguousarray(weights))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _add_tokenizer(writer: Any, tokenizer: PreTrainedTokenizerFast) -> None:
    """The vocabulary in id order, merges, token types, special ids and the chat template."""
    backend = tokenizer.backend_tokenizer
    vocab = backend.get_vocab(with_added_tokens=True)
    tokens = sorted(vocab, key=vocab.__getitem__)
    assert [vocab[t] for t in tokens] == list(range(len(tokens))), "vocabulary ids have gaps"
    import json

    merges = json.loads(backend.to_str())["model"]["merges"]
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([CONTROL if t in SPECIALS else NORMAL for t in tokens])
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)


def _to_rotary_interleaved(weights: np.ndarray, heads: int) -> np.ndarray:
    """Reorder each head's output rows from HF's half-split rotary layout to llama.cpp's.

    HF rotates dimension ``i`` with ``i + d/2`` within a head of size ``d``; llama.cpp rotates
    ``2i`` with ``2i + 1``. Row ``j`` of half ``h`` moves to row ``2j + h``.
    """
    rows, cols = weights.shape
    half = rows // heads // 2
    by_half = weights.reshape(heads, 2, half, cols)  # (head, which half, row in half, col)
    return by_half.transpose(0, 2, 1, 3).reshape(rows, cols)
