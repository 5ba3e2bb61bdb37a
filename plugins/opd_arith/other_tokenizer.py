"""The demo's teacher with another tokenizer, for ``teacher=cross_tokenizer`` on the demo.

Same architecture and SFT data as the demo's teacher (``DemoSpec``), but over a byte-level
BPE that merges across characters (``11``, ``=6``, `` #``), with its own vocabulary and its own
EOS token (``</s>``): the student's token ids mean nothing to it, so only the cross-tokenizer
path can use it. ``demo://arithmetic/teacher_bpe`` builds it on first use and caches it next to
the demo's models::

    python -m opd_core objective=opd +task=arithmetic +teacher=cross_tokenizer \\
        teacher.model.path=demo://arithmetic/teacher_bpe
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from opd_arith.build import DemoSpec, make_model
from opd_arith.sft import sft
from opd_arith.tokenizer import BOS, PAD, ROLE_TOKENS, wrap_tokenizer
from opd_core.api import cache_lock

EOS_BPE = "</s>"


def build_merging_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on ``texts`` whose merges cross characters, with the demo's chat
    template and special tokens except EOS (``</s>``)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS_BPE, *ROLE_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return wrap_tokenizer(tokenizer, eos_token=EOS_BPE)


BPE_TEACHER_STEPS = 700
"""SFT steps of ``demo://arithmetic/teacher_bpe``: more than the demo teacher's 500, so that it
solves about as many held-out problems as the demo teacher. Measured (greedy, the 500 held-out
problems of ``python -m opd_arith.measure --num-eval 500 --bpe-teacher-steps 700 1000 1500``):
500 steps 85.2% (an earlier measurement, through ``opd_core``'s evaluator), 700 steps 93.0%,
1000 steps 98.6%, 1500 steps 98.8%; the demo teacher 92.6%."""


def build_bpe_teacher(
    spec: DemoSpec,
    cache_dir: Path,
    vocab_size: int = 512,
    progress: bool = True,
    steps: int | None = None,
) -> Path:
    """The folder of the teacher of ``spec`` trained over :func:`build_merging_tokenizer` for
    ``steps`` SFT steps (None: the spec's ``teacher_steps``), built once into
    ``cache_dir/<digest>-bpe<vocab_size>-steps<steps>`` (atomically, under a lock)."""
    steps = spec.teacher_steps if steps is None else steps
    root = Path(cache_dir) / f"{spec.digest()}-bpe{vocab_size}-steps{steps}"
    with cache_lock(root, "building the demo's other-tokenizer teacher"):
        if root.is_dir():
            return root
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
        try:
            problems = spec.train_problems()
            texts = [f"{p.question} {p.solution}" for p in problems]
            tokenizer = build_merging_tokenizer(texts, vocab_size)
            model = make_model(spec.teacher, tokenizer, seed=spec.seed)
            if progress:
                print(f"[opd_arith] building the BPE teacher into {root} (first use)", flush=True)
            sft(
                model,
                tokenizer,
                problems,
                steps=steps,
                batch_size=spec.batch_size,
                lr=spec.teacher_lr,
                seed=spec.seed,
                progress=progress,
                name="teacher_bpe",
            )
            model.save_pretrained(str(tmp))
            tokenizer.save_pretrained(str(tmp))
            os.replace(tmp, root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return root
