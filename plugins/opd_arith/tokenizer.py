"""An offline-trained tokenizer for the arithmetic demo, with a chat template.

The tokenizer is a byte-level BPE whose pre-tokenizer isolates every character first, so each
digit, operator and space is one token (tiny models learn arithmetic far more easily on single
digits than on merged number chunks); any text still encodes, through its bytes.

Chat rendering (what ``apply_chat_template`` produces)::

    <|bos|><|user|>5+(2*3)<|assistant|>2*3=6 5+6=11 #11<|eos|>

``add_generation_prompt=True`` ends the text with ``<|assistant|>``; the model then writes the
solution and EOS. A tokenizer built with more ``roles`` (the tool-use demo's ``tool``) renders
them the same way, ``<|tool|>2146``, with no EOS after a turn that is not the assistant's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
ROLES = ("system", "user", "assistant")
"""The chat roles of the demo's tokenizer."""
ROLE_TOKENS = tuple(f"<|{role}|>" for role in ROLES)
SPECIAL_TOKENS = (PAD, BOS, EOS, *ROLE_TOKENS)


def chat_template(roles: Sequence[str] = ROLES) -> str:
    """The chat template over ``roles``: each turn ``<|role|>content``, EOS after an assistant
    turn, ``<|assistant|>`` as the generation prompt; another role raises."""
    names = ", ".join(f"'{role}'" for role in roles)
    return (
        "{{ bos_token }}"
        "{% for message in messages %}"
        f"{{% if message['role'] not in [{names}] %}}"
        "{{ raise_exception('Unknown chat role: ' + message['role']) }}"
        "{% endif %}"
        "<|{{ message['role'] }}|>{{ message['content'] }}"
        "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )


CHAT_TEMPLATE = chat_template()


def _train_bpe(
    texts: Iterable[str], vocab_size: int, role_tokens: Sequence[str] = ROLE_TOKENS
) -> Tokenizer:
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
        special_tokens=[PAD, BOS, EOS, *role_tokens],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def build_tokenizer(
    texts: Iterable[str],
    out_dir: Path | str | None = None,
    vocab_size: int = 320,
    roles: Sequence[str] = ROLES,
    words: Sequence[str] = (),
) -> PreTrainedTokenizerFast:
    """Train the demo tokenizer on ``texts`` and save it to ``out_dir`` when given.

    The result has ``<|bos|>``/``<|eos|>``/``<|pad|>`` tokens, a ``<|role|>`` token per chat role
    of ``roles``, left padding and the chat template above;
    ``AutoTokenizer.from_pretrained(out_dir)`` reloads it unchanged. ``words`` (markup such as
    ``<calc>``) become one token each, ordinary ones: decoding without special tokens keeps them.
    """
    role_tokens = tuple(f"<|{role}|>" for role in roles)
    fast = wrap_tokenizer(_train_bpe(texts, vocab_size, role_tokens), roles=roles)
    if words:
        fast.add_tokens(list(words))
    if out_dir is not None:
        fast.save_pretrained(str(out_dir))
    return fast


def wrap_tokenizer(
    tokenizer_object: Any, eos_token: str = EOS, roles: Sequence[str] = ROLES
) -> PreTrainedTokenizerFast:
    """A trained ``tokenizers`` object as the demo's transformers tokenizer: its special tokens,
    left padding and the chat template over ``roles``."""
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer_object,
        bos_token=BOS,
        eos_token=eos_token,
        pad_token=PAD,
        additional_special_tokens=[f"<|{role}|>" for role in roles],
        padding_side="left",
        chat_template=chat_template(roles),
        clean_up_tokenization_spaces=False,
        model_max_length=512,
    )
