"""The lm_eval evaluator on a real tiny model: scores equal the model's own log-likelihoods."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import TinyModels, tiny_run_overrides
from opd_core import OPDError
from opd_core.modeling import LoadedModel, ModelSpec
from opd_core.plugin_manager import make_plugin_manager
from opd_hf.teacher import HFTeacher
from opd_lmeval.evaluator import LMEvalEvaluator
from opd_lmeval.results import flatten_results

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parents[3]
# (question, choices, index of the gold choice); choices of unequal length so that acc and
# acc_norm (log-likelihood per character) can disagree
QUESTIONS = [
    ("3+4=", ["7", "12", "6"], 0),
    ("9-5=", ["14", "4", "45"], 1),
    ("2*3=", ["5", "23", "6"], 2),
    ("8+1=", ["9", "81", "10"], 0),
    ("7-7=", ["1", "0", "77"], 1),
    ("6*2=", ["8", "62", "12"], 2),
    ("5+5=", ["10", "55", "0"], 0),
    ("4*4=", ["8", "16", "44"], 1),
    ("9+0=", ["90", "0", "9"], 2),
    ("1+8=", ["9", "18", "7"], 0),
    ("3*3=", ["6", "9", "33"], 1),
    ("8-2=", ["10", "82", "6"], 2),
]


class FakeCtx:
    """The parts of RunContext the evaluator reads: the hook relay and the student."""

    def __init__(self, student: LoadedModel) -> None:
        self.pm = make_plugin_manager()
        self.hook = self.pm.hook
        self.student = student
        self.device = CPU
        self.precision = "fp32"


def load(path: Path) -> LoadedModel:
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return LoadedModel(model, AutoTokenizer.from_pretrained(path), ModelSpec(str(path)))


def write_questions(path: Path) -> Path:
    with path.open("w") as handle:
        for question, choices, gold in QUESTIONS:
            handle.write(json.dumps({"question": question, "choices": choices, "gold": gold}))
            handle.write("\n")
    return path


def task_config(name: str, data: Path) -> dict[str, Any]:
    """A multiple-choice lm-eval task over ``data``, as its YAML would hold it."""
    return {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "{{question}}",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{gold}}",
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
    }


def write_yaml_task(folder: Path, name: str, data: Path) -> Path:
    """The same task as a YAML file in ``folder`` (JSON is valid YAML)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.yaml").write_text(json.dumps(task_config(name, data), indent=2))
    return folder


@torch.no_grad()
def expected_accuracy(loaded: LoadedModel, count: int = len(QUESTIONS)) -> tuple[float, float]:
    """acc and acc_norm over the first ``count`` questions, computed here from the model's
    log-likelihood of each " <choice>" after the question."""
    model, tokenizer = loaded.model.eval(), loaded.tokenizer
    right = right_norm = 0
    for question, choices, gold in QUESTIONS[:count]:
        context_ids = tokenizer(question, add_special_tokens=False)["input_ids"]
        scores = []
        for choice in choices:
            choice_ids = tokenizer(" " + choice, add_special_tokens=False)["input_ids"]
            ids_T = torch.tensor(context_ids + choice_ids)
            logprobs_TV = model(ids_T[None]).logits[0].float().log_softmax(-1)
            positions = torch.arange(len(context_ids) - 1, len(ids_T) - 1)
            scores.append(float(logprobs_TV[positions, ids_T[positions + 1]].sum()))
        right += max(range(len(choices)), key=lambda i: scores[i]) == gold
        normed = [s / len(c) for s, c in zip(scores, choices, strict=True)]
        right_norm += max(range(len(choices)), key=lambda i: normed[i]) == gold
    return right / count, right_norm / count


@pytest.fixture
def questions(tmp_path: Path) -> Path:
    return write_questions(tmp_path / "questions.jsonl")


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Nothing may reach the Hub; datasets caches its JSON conversion in the test's folder."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets_cache"))


def test_inline_task_scores_the_live_student(tiny_models: TinyModels, questions: Path) -> None:
    student = load(tiny_models.teacher)  # the briefly trained model: not a coin toss
    evaluator = LMEvalEvaluator(inline=task_config("toy_mc", questions), batch_size=5)
    evaluator.setup(FakeCtx(student))  # type: ignore[arg-type]
    student.model.train()
    rng_before = torch.get_rng_state()

    result = evaluator.opd_evaluate(generator=None, role="student", step=0)  # type: ignore[arg-type]

    assert result is not None and result.target == "student" and result.evaluator == "lm_eval"
    assert student.model.training is True  # train mode put back
    assert torch.equal(torch.get_rng_state(), rng_before)  # lm-eval's seeding undone
    acc, acc_norm = expected_accuracy(student)
    assert result.metrics["lm_eval/toy_mc/acc"] == pytest.approx(acc)
    assert result.metrics["lm_eval/toy_mc/acc_norm"] == pytest.approx(acc_norm)
    assert result.metrics["lm_eval/toy_mc/examples"] == len(QUESTIONS)
    assert "lm_eval/toy_mc/acc_stderr" in result.metrics  # closed form for a mean

    # the same object, changed in place, is what the next evaluation scores (no reload)
    torch.manual_seed(3)
    with torch.no_grad():
        for param in student.model.parameters():
            param.add_(0.5 * torch.randn_like(param))
    perturbed = expected_accuracy(student)
    assert perturbed != (acc, acc_norm)  # the perturbation changes the answer
    again = evaluator.opd_evaluate(generator=None, role="student", step=1)  # type: ignore[arg-type]
    assert again is not None
    assert again.metrics["lm_eval/toy_mc/acc"] == pytest.approx(perturbed[0])
    assert again.metrics["lm_eval/toy_mc/acc_norm"] == pytest.approx(perturbed[1])


def test_yaml_folder_scores_the_teacher_through_opd_eval_model(
    tiny_models: TinyModels, questions: Path, tmp_path: Path
) -> None:
    folder = write_yaml_task(tmp_path / "tasks", "folder_mc", questions)
    student = load(tiny_models.student)
    teacher = HFTeacher(model={"path": str(tiny_models.teacher), "dtype": "float32"})
    ctx = FakeCtx(student)
    teacher.setup(ctx)  # type: ignore[arg-type]
    ctx.pm.register(teacher)  # the HF teacher answers opd_eval_model for the teacher
    assert ctx.hook.opd_eval_model(role="teacher") is teacher.loaded
    evaluator = LMEvalEvaluator(
        include_path=str(folder), roles=["student", "teacher"], limit=8, bootstrap_iters=0
    )
    evaluator.setup(ctx)  # type: ignore[arg-type]

    scores = {
        role: evaluator.opd_evaluate(generator=None, role=role, step=0)  # type: ignore[arg-type]
        for role in ("student", "teacher")
    }

    expected = {
        "student": expected_accuracy(student, count=8),
        "teacher": expected_accuracy(teacher.loaded, count=8),
    }
    assert expected["student"] != expected["teacher"]  # so a swapped model would be caught
    for role, result in scores.items():
        assert result is not None and result.target == role
        acc, acc_norm = expected[role]
        assert result.metrics["lm_eval/folder_mc/acc"] == pytest.approx(acc)
        assert result.metrics["lm_eval/folder_mc/acc_norm"] == pytest.approx(acc_norm)
        assert result.metrics["lm_eval/folder_mc/examples"] == 8
        assert "lm_eval/folder_mc/acc_stderr" not in result.metrics  # bootstrap_iters=0


def test_results_flatten_to_numbers_by_task_and_metric() -> None:
    results = {
        "gsm8k": {
            "alias": "gsm8k",
            "exact_match,strict-match": 0.25,
            "exact_match_stderr,strict-match": 0.05,
            "exact_match,flexible-extract": 0.5,
            "exact_match_stderr,flexible-extract": "N/A",
            "sample_len": 40,
        },
        "toy": {"acc,none": 1, "acc_norm,none": float("nan"), "name": "toy"},
    }
    assert flatten_results(results) == {
        "lm_eval/gsm8k/exact_match/strict-match": 0.25,
        "lm_eval/gsm8k/exact_match_stderr/strict-match": 0.05,
        "lm_eval/gsm8k/exact_match/flexible-extract": 0.5,
        "lm_eval/gsm8k/examples": 40.0,
        "lm_eval/toy/acc": 1.0,
    }


def test_bad_task_configs_name_the_fix(
    tiny_models: TinyModels, questions: Path, tmp_path: Path
) -> None:
    ctx = FakeCtx(load(tiny_models.student))
    with pytest.raises(OPDError, match=r"include_path=.* is not a folder"):
        LMEvalEvaluator(include_path=str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(OPDError, match="holds no lm-eval task"):
        LMEvalEvaluator(include_path=str(tmp_path / "empty")).setup(ctx)  # type: ignore[arg-type]
    with pytest.raises(OPDError, match="has no doc_to_text"):
        config = task_config("broken", questions)
        del config["doc_to_text"]
        LMEvalEvaluator(inline=config)
    with pytest.raises(OPDError, match=r"cannot load an inline task 'gone'.*data files exist"):
        config = task_config("gone", tmp_path / "missing.jsonl")
        LMEvalEvaluator(inline=config).setup(ctx)  # type: ignore[arg-type]
    with pytest.raises(OPDError, match="no task to run"):
        LMEvalEvaluator(tasks=[])


def test_missing_lm_eval_names_the_extra(
    tiny_models: TinyModels, questions: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval now raises ImportError
    evaluator = LMEvalEvaluator(inline=task_config("toy_mc", questions))
    with pytest.raises(OPDError, match=r"pip install 'opd-core\[eval\]'"):
        evaluator.setup(FakeCtx(load(tiny_models.student)))  # type: ignore[arg-type]


@pytest.mark.slow
def test_unknown_task_name_lists_close_names(tiny_models: TinyModels) -> None:
    evaluator = LMEvalEvaluator(tasks=["arc_easyy"])  # reads lm-eval's whole task index (~12 s)
    with pytest.raises(OPDError, match=r"no task, group or tag named 'arc_easyy'.*arc_easy"):
        evaluator.setup(FakeCtx(load(tiny_models.student)))  # type: ignore[arg-type]


@pytest.mark.slow
def test_run_logs_lm_eval_metrics_of_the_student_and_teacher(
    tiny_models: TinyModels, tmp_path: Path
) -> None:
    folder = write_yaml_task(tmp_path / "tasks", "run_mc", write_questions(tmp_path / "q.jsonl"))
    out = tmp_path / "run"
    overrides = [o for o in tiny_run_overrides(tiny_models, out, steps=2) if "eval.every" not in o]
    overrides += [
        "eval.every=1",
        "eval.teacher=true",
        "evaluator=[task_accuracy,lm_eval]",
        f"evaluators.lm_eval.include_path={folder}",
        "evaluators.lm_eval.tasks=[run_mc]",
        "evaluators.lm_eval.limit=null",
        "evaluators.lm_eval.roles=[student,teacher]",
    ]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(tmp_path / "datasets_cache"),
    }
    result = subprocess.run(
        [sys.executable, "-m", "opd_core", *overrides],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert "eval/lm_eval/run_mc/acc" in records[0]  # eval.every=1: after step 1
    assert "eval/accuracy" in records[0]  # task_accuracy's, beside it
    summary = json.loads((out / "summary.json").read_text())
    for entry in ("student_before", "teacher", "student_after"):
        assert {"accuracy", "lm_eval/run_mc/acc", "lm_eval/run_mc/acc_norm"} <= set(
            summary[entry]
        ), entry
    # the numbers are those of the models themselves, before and after training
    before = load(tiny_models.student)
    after = load(Path(summary["checkpoint"]) / "model")
    teacher = load(tiny_models.teacher)
    for entry, model in (
        ("student_before", before),
        ("student_after", after),
        ("teacher", teacher),
    ):
        acc, acc_norm = expected_accuracy(model)
        assert summary[entry]["lm_eval/run_mc/acc"] == pytest.approx(acc), entry
        assert summary[entry]["lm_eval/run_mc/acc_norm"] == pytest.approx(acc_norm), entry
