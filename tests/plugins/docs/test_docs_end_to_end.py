"""The company-documents experiments as users run them: SFT on the documents (stage 1 of the
personalization experiment) and on-policy context distillation (``+experiment=docs_context``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import TinyModels, run_opd_core
from opd_core.metrics import read_metrics
from opd_core.modeling import gather_logprobs, next_token_logits
from opd_docs.data import document_prompts, read_documents
from opd_docs.synthetic import write_company
from opd_hf.offpolicy import supervised_rollouts

CHAT = [
    {"messages": [{"role": "user", "content": "2+3"}, {"role": "assistant", "content": "2+3=5"}]},
    {"prompt": "4*2", "response": "4*2=8"},
]


def document_nll(model_dir: Path, docs: Path, tokenizer_dir: Path) -> float:
    """Mean negative log-likelihood of the document tokens (128-token chunks, plain text)."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    prompts = document_prompts(read_documents(docs), count, max_tokens=128)
    texts = [p.reference or "" for p in prompts]
    batch = supervised_rollouts(tokenizer, prompts, texts, torch.arange(len(prompts)), 256, "data")
    with torch.no_grad():
        logits_BSV = next_token_logits(model, batch.input_ids_BT, batch.attention_mask_BT)
        logprobs_BT = gather_logprobs(logits_BSV, batch.input_ids_BT)
    mask_BT = batch.completion_mask_BT.float()
    return float(-(logprobs_BT * mask_BT).sum() / mask_BT.sum())


@pytest.mark.slow
def test_docs_sft_learns_the_documents_and_logs_qa_accuracy(
    tiny_models: TinyModels, tmp_path: Path
) -> None:
    write_company(tmp_path / "company", seed=0, num_products=2, num_people=2)
    chat = tmp_path / "chat.jsonl"
    chat.write_text("".join(json.dumps(r) + "\n" for r in CHAT))
    out = tmp_path / "run"
    run_opd_core(
        [
            "+experiment=docs_sft",
            "+task=company_docs",
            "+teacher=hf",
            f"teacher.model.path={tiny_models.teacher}",
            f"student.model.path={tiny_models.student}",
            f"task.docs_dir={tmp_path / 'company' / 'docs'}",
            f"task.chat_path={chat}",
            "task.max_tokens=64",  # chunk and answer fit the tiny student (128 positions)
            f"evaluators.qa_accuracy.path={tmp_path / 'company' / 'qa.jsonl'}",
            "evaluators.qa_accuracy.max_examples=8",
            "evaluators.qa_accuracy.max_new_tokens=12",
            "train.steps=8",
            "train.prompts_per_step=8",
            "train.max_new_tokens=80",
            "train.lr=1e-2",
            "train.warmup_steps=0",
            "eval.every=4",
            "eval.teacher=false",
            "progress=false",
            f"hydra.run.dir={out}",
        ]
    )
    metrics = read_metrics(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == list(range(1, 9))
    assert "eval/qa_accuracy" in metrics[3] and metrics[3]["eval/qa_examples"] == 8
    assert all(m["flops_step/student_sampling"] == 0.0 for m in metrics)  # nothing sampled
    assert all(m["flops_step/student_training"] > 0 for m in metrics)
    summary = json.loads((out / "summary.json").read_text())
    for entry in ("student_before", "student_after"):
        assert 0.0 <= summary[entry]["qa_accuracy"] <= 1.0
    docs = tmp_path / "company" / "docs"
    before = document_nll(tiny_models.student, docs, tiny_models.student)
    after = document_nll(Path(summary["checkpoint"]) / "model", docs, tiny_models.student)
    assert after < 0.8 * before, f"document NLL {before:.3f} -> {after:.3f}"


def test_docs_context_shows_each_part_to_the_initial_student_only(
    tiny_models: TinyModels, tmp_path: Path
) -> None:
    """``+experiment=docs_context`` on the tiny student: its frozen initial weights score the
    sampled parts with the requested part in their prompt, which the student never sees."""
    write_company(tmp_path / "company", seed=0, num_products=2, num_people=2)
    docs, out = tmp_path / "company" / "docs", tmp_path / "run"
    run_opd_core(
        [
            "+experiment=docs_context",
            f"student.model.path={tiny_models.student}",
            f"task.docs_dir={docs}",
            "task.docs_fraction=1.0",  # document parts only: every teacher prompt has a context
            "task.max_tokens=24",  # part, request and answer fit the tiny student (128 positions)
            "evaluator=[qa_accuracy]",
            f"evaluators.qa_accuracy.path={tmp_path / 'company' / 'qa.jsonl'}",
            "evaluators.qa_accuracy.max_examples=4",
            "evaluators.qa_accuracy.max_new_tokens=8",
            "evaluators.qa_accuracy.teacher_context_dir=null",  # every document: too long here
            "train.steps=2",
            "train.prompts_per_step=6",
            "train.micro_batch_size=6",
            "train.max_new_tokens=24",
            "train.warmup_steps=0",
            "eval.teacher=false",
            "progress=false",
            f"hydra.run.dir={out}",
        ]
    )
    tokenizer = AutoTokenizer.from_pretrained(tiny_models.student)

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    requests = document_prompts(read_documents(docs), count, max_tokens=24, doc_format="chat")
    longest_student_prompt = max(
        len(
            tokenizer.apply_chat_template([dict(m) for m in p.messages], add_generation_prompt=True)
        )
        for p in requests
    )
    metrics = read_metrics(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2]
    assert all(m["teacher/context_prompt_tokens"] > longest_student_prompt for m in metrics)
    # at step 1 the student is the teacher's weights: only the shown part makes them differ
    assert abs(metrics[0]["teacher_reverse_kl"]) > 1e-5  # else only rounding
    summary = json.loads((out / "summary.json").read_text())
    assert summary["student_after"]["qa_examples"] == 4
