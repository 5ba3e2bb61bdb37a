"""The SFT baseline's sampler encodes the teacher's answers like an SFT dataset."""

from __future__ import annotations

from transformers import AutoTokenizer

from conftest import TinyModels
from opd_hf.offpolicy import encode_answers


def test_answers_end_with_eos_unless_cut_at_the_token_limit(tiny_models: TinyModels) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_models.student)
    short, long = "2+3=5 #5", "1+1=2 2+2=4 4+4=8 8+8=16 #16"
    limit = len(tokenizer(long, add_special_tokens=False)["input_ids"])
    ids_BC, mask_BC = encode_answers(tokenizer, [short, long], max_new_tokens=limit)
    short_ids = tokenizer(short, add_special_tokens=False)["input_ids"]
    assert ids_BC[0, : len(short_ids) + 1].tolist() == [*short_ids, tokenizer.eos_token_id]
    assert mask_BC.sum(1).tolist() == [len(short_ids) + 1, limit]  # the cut answer has no EOS
    assert tokenizer.eos_token_id not in ids_BC[1].tolist()
    assert ids_BC[0, len(short_ids) + 1 :].eq(tokenizer.pad_token_id).all()
