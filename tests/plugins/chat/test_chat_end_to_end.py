"""Stage 2 of the personalization experiment as users run it: OPD on chat prompts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import TinyModels, run_opd_core
from opd_core.metrics import read_metrics


@pytest.mark.slow
def test_chat_opd_runs_with_a_teacher_on_ifeval_style_prompts(
    tiny_models: TinyModels, tmp_path: Path
) -> None:
    prompts = tmp_path / "input_data.jsonl"
    rows = [{"key": i, "prompt": f"{i}+{i + 1}", "instruction_id_list": []} for i in range(8)]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps({"question": "1+2", "answer": "3"}) + "\n")
    out = tmp_path / "run"
    run_opd_core(
        [
            "+experiment=chat_opd",
            "+task=chat",
            "+teacher=hf",
            f"teacher.model.path={tiny_models.teacher}",
            f"student.model.path={tiny_models.student}",
            f"task.train.path={prompts}",
            f"evaluators.qa_accuracy.path={qa}",
            "evaluators.qa_accuracy.max_new_tokens=8",
            "train.steps=3",
            "train.prompts_per_step=4",
            "train.samples_per_prompt=2",
            "train.max_new_tokens=12",
            "eval.teacher=false",
            "progress=false",
            f"hydra.run.dir={out}",
        ]
    )
    metrics = read_metrics(out / "metrics.jsonl")
    assert len(metrics) == 3
    for record in metrics:
        assert record["teacher_reverse_kl"] > 0  # the teacher scored the student's answers
        assert record["flops_step/teacher_scoring"] > 0
        assert record["flops_step/student_sampling"] > 0
        assert "reward" not in record  # the chat task has no grader
    summary = json.loads((out / "summary.json").read_text())
    assert summary["student_before"]["qa_examples"] == 1.0
    assert "qa_accuracy" in summary["student_after"]
