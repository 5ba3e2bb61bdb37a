"""An offline-trained tokenizer for the arithmetic demo, with a chat template.

The tokenizer is a byte-level BPE whose pre-tokenizer isolates every character first, so each
digit, operator and space is one token (tiny models learn arithmetic far more easily on single
digits than on merged number chunks); any text still encodes, through its bytes.

Chat rendering (what ``apply_chat_template`` produces)::

    <|bos|><|user|>5+(2*3)<|assistant|>2*3=6 5+6=11 #11<|eos|>

``add_generation_prompt=True`` ends the text with ``<|assistant|>``; the model then writes the
solution and EOS.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
SPECIAL_TOKENS = (PAD, BOS, EOS, *ROLE_TOKENS)

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('Unknown chat role: ' + message['role']) }}"
    "{% endif %}"
    "<|{{ message['role'] }}|>{{ message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _train_bpe(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Train a character-isolating byte-level BPE on ``texts``."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def build_tokenizer(
    texts: Iterable[str], out_dir: Path | str | None = None, vocab_size: int = 320
) -> PreTrainedTokenizerFast:
    """Train the demo tokenizer on ``texts`` and save it to ``out_dir`` when given.

    The result has ``<|bos|>``/``<|eos|>``/``<|pad|>`` tokens, left padding and the chat template
    above; ``AutoTokenizer.from_pretrained(out_dir)`` reloads it unchanged.
    """
    fast = wrap_tokenizer(_train_bpe(texts, vocab_size))
    if out_dir is not None:
        fast.save_pretrained(str(out_dir))
    return fast


def wrap_tokenizer(tokenizer_object: Any, eos_token: str = EOS) -> PreTrainedTokenizerFast:
    """A trained ``tokenizers`` object as the demo's transformers tokenizer: its special tokens,
    left padding and chat template."""
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer_object,
        bos_token=BOS,
        eos_token=eos_token,
        pad_token=PAD,
        additional_special_tokens=list(ROLE_TOKENS),
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
        model_max_length=512,
    )
