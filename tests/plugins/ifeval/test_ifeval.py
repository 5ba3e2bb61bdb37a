"""The IFEval task and evaluator: lm-eval's scorer on canned responses, checked by hand."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import TinyModels
from opd_core import GenerationParams, OPDError, Prompt
from opd_core.plugin_manager import build_registry, make_plugin_manager
from opd_hf.generation import HFGenerator
from opd_ifeval.data import choose, load_prompts
from opd_ifeval.evaluator import IFEvalEvaluator
from opd_ifeval.scoring import IFEvalScorer
from opd_ifeval.task import IFEvalTask

# Four records of google/IFEval (Apache-2.0), as the IFEval JSONL holds them.
RECORDS: list[dict[str, Any]] = [
    {
        "key": 1287,
        "prompt": "How did a man named John of Brienne become the King of Jerusalem? Explain in "
        "a Zen-like style. Your answer should use all lowercase letters and must also contain "
        "exactly 3 bullet points in markdown format. Use * to indicate bullets, like:\n* xyz\n"
        "* abc\n* opq",
        "instruction_id_list": [
            "detectable_format:number_bullet_lists",
            "change_case:english_lowercase",
        ],
        "kwargs": [{"num_bullets": 3}, {}],
    },
    {
        "key": 2380,
        "prompt": 'Please write a summary of the following advertiser page: "We insist on '
        "having the most talented team of web developers, content writers, graphic designers "
        "and online marketers in the industry. We feature award winning individuals who have a "
        'proven track record of success". Use markdowns and target moms. Your answer must '
        "contain exactly 4 bullet points in markdown format and cannot contain commas.",
        "instruction_id_list": ["detectable_format:number_bullet_lists", "punctuation:no_comma"],
        "kwargs": [{"num_bullets": 4}, {}],
    },
    {
        "key": 136,
        "prompt": "A nucleus is a cluster of protons and neutrons. Elaborate on this. Write "
        "exactly 9 very short bullet points. Limit the number of words you use (less than 100 "
        "words). An example:\n* A nucleus is a cluster of protons and neutrons\n* A proton is "
        "....\n\nPlease follow the format of the example above.",
        "instruction_id_list": [
            "detectable_format:number_bullet_lists",
            "length_constraints:number_words",
        ],
        "kwargs": [{"num_bullets": 9}, {"relation": "less than", "num_words": 100}],
    },
    {
        "key": 1001,
        "prompt": "I am planning a trip to Japan, and I would like thee to write an itinerary "
        "for my journey in a Shakespearean style. You are not allowed to use any commas in your "
        "response.",
        "instruction_id_list": ["punctuation:no_comma"],
        "kwargs": [{}],
    },
]

# One canned response per record, and what each instruction's check says, by hand.
RESPONSES = {
    # 3 bullets (yes), all lowercase English (yes)
    "ifeval-1287": "* the river flows gently through the quiet green valley\n"
    "* the children are playing in the warm summer sun\n"
    "* the old man reads a book by the window",
    # 4 bullets (yes), no comma (no: line 2 has one, and so does every loose variant)
    "ifeval-2380": "* Moms love this team\n* Great writers, great designers\n"
    "* Award winning people\n* A proven record of success",
    # 9 bullets (no: 2, and fewer in every loose variant), under 100 words (yes: 7)
    "ifeval-136": "* A nucleus is small\n* It holds protons",
    # no comma: strict no (the first line has one); loose yes (without the first line)
    "ifeval-1001": "Sure, here is my itinerary.\nOn the first day we walk among the temples of "
    "Kyoto\nOn the second day we rest by the sea",
}
STRICT = {"ifeval-1287": [1, 1], "ifeval-2380": [1, 0], "ifeval-136": [0, 1], "ifeval-1001": [0]}
LOOSE = {"ifeval-1287": [1, 1], "ifeval-2380": [1, 0], "ifeval-136": [0, 1], "ifeval-1001": [1]}


def expected_scores(ids: Sequence[str]) -> dict[str, float]:
    """Prompt level: share of prompts with every instruction followed; instruction level: share
    of all instructions followed (7 for the four records, not a mean of per-prompt shares)."""
    out = {}
    for level, table in (("strict", STRICT), ("loose", LOOSE)):
        rows = [table[i] for i in ids]
        out[f"prompt_level_{level}_acc"] = sum(all(r) for r in rows) / len(rows)
        out[f"inst_level_{level}_acc"] = sum(map(sum, rows)) / sum(map(len, rows))
    return out


class CannedGenerator:
    """A generator answering each prompt with its canned response."""

    name = "canned"

    def __init__(self) -> None:
        self.params: list[GenerationParams] = []

    def generate(self, prompts: Sequence[Prompt], params: GenerationParams) -> list[str]:
        self.params.append(params)
        return [RESPONSES[p.id] for p in prompts]


@pytest.fixture
def records_file(tmp_path: Path) -> Path:
    path = tmp_path / "ifeval.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    return path


@pytest.fixture(scope="module")
def scorer() -> IFEvalScorer:
    return IFEvalScorer()


def test_scorer_on_canned_responses_matches_the_hand_count(
    scorer: IFEvalScorer, records_file: Path
) -> None:
    prompts = load_prompts(str(records_file))
    ids = [p.id for p in prompts]
    verdicts = scorer.judge(prompts, [RESPONSES[i] for i in ids])
    assert [v["inst_level_strict_acc"] for v in verdicts] == [
        [bool(x) for x in STRICT[i]] for i in ids
    ]
    assert [v["inst_level_loose_acc"] for v in verdicts] == [
        [bool(x) for x in LOOSE[i]] for i in ids
    ]
    scores = scorer.scores(prompts, [RESPONSES[i] for i in ids])
    assert scores == pytest.approx(
        {
            "prompt_level_strict_acc": 1 / 4,
            "inst_level_strict_acc": 4 / 7,
            "prompt_level_loose_acc": 2 / 4,
            "inst_level_loose_acc": 5 / 7,
        }
    )
    assert scores == pytest.approx(expected_scores(ids))


def test_evaluator_scores_what_the_generator_answers(records_file: Path) -> None:
    evaluator = IFEvalEvaluator(path=str(records_file), max_new_tokens=64, temperature=0.0)
    evaluator.setup(ctx=None)  # type: ignore[arg-type]
    generator = CannedGenerator()
    result = evaluator.opd_evaluate(generator=generator, role="student", step=0)
    assert result.evaluator == "ifeval" and result.target == "student"
    ids = [r["key"] for r in RECORDS]
    expected = expected_scores([f"ifeval-{k}" for k in ids])
    assert result.metrics == pytest.approx(
        {**{f"ifeval/{k}": v for k, v in expected.items()}, "ifeval/examples": 4.0}
    )
    assert generator.params == [GenerationParams(max_new_tokens=64, temperature=0.0)]


def test_evaluator_scores_only_its_roles(records_file: Path) -> None:
    student_only = IFEvalEvaluator(path=str(records_file), roles=["student"])
    student_only.setup(ctx=None)  # type: ignore[arg-type]
    generator = CannedGenerator()
    assert student_only.opd_evaluate(generator=generator, role="teacher", step=0) is None
    assert generator.params == []  # the teacher was not asked to answer
    both = IFEvalEvaluator(path=str(records_file))
    both.setup(ctx=None)  # type: ignore[arg-type]
    assert both.opd_evaluate(generator=generator, role="teacher", step=0).target == "teacher"
    with pytest.raises(ValueError, match=r"roles must be \[student\], \[teacher\] or both"):
        IFEvalEvaluator(path=str(records_file), roles=["students"])


def test_evaluator_limit_takes_a_fixed_subset(records_file: Path) -> None:
    first = IFEvalEvaluator(path=str(records_file), limit=2)
    first.setup(ctx=None)  # type: ignore[arg-type]
    assert [p.id for p in first.prompts] == ["ifeval-1287", "ifeval-2380"]
    result = first.opd_evaluate(generator=CannedGenerator(), role="student", step=0)
    assert result.metrics["ifeval/inst_level_strict_acc"] == pytest.approx(3 / 4)
    drawn = [p.id for p in choose(load_prompts(str(records_file)), 2, seed=1)]
    assert drawn == [p.id for p in choose(load_prompts(str(records_file)), 2, seed=1)]
    assert len(set(drawn)) == 2 and drawn != ["ifeval-1287", "ifeval-2380"]


def test_task_holds_out_eval_prompts_and_grades_strictly(records_file: Path) -> None:
    task = IFEvalTask(path=str(records_file), eval_size=1, seed=0)
    train, held_out = task.opd_task_prompts("train"), task.opd_task_prompts("eval")
    assert len(train) == 3 and len(held_out) == 1
    assert {p.id for p in train} | {p.id for p in held_out} == set(RESPONSES)
    assert held_out[0].messages[0]["role"] == "user" and held_out[0].source == "ifeval"
    prompts = [*train, *held_out]
    grades = task.opd_grade_completions(prompts, [RESPONSES[p.id] for p in prompts])
    assert grades == [float(all(STRICT[p.id])) for p in prompts]
    assert sum(grades) == 1.0  # only ifeval-1287 follows every instruction
    assert all(p.teacher_context is None for p in prompts)
    shown = IFEvalTask(path=str(records_file), eval_size=1, teacher_context="Follow every rule.")
    assert {p.teacher_context for p in shown.opd_task_prompts("train")} == {"Follow every rule."}


def test_task_and_evaluator_are_registered_components(records_file: Path) -> None:
    registry = build_registry(make_plugin_manager())
    task = registry.build("task", {"name": "ifeval", "path": str(records_file), "eval_size": 2})
    assert isinstance(task, IFEvalTask)
    assert isinstance(registry.build("evaluator", {"name": "ifeval", "limit": 3}), IFEvalEvaluator)


def test_bad_inputs_name_the_fix(records_file: Path, tmp_path: Path) -> None:
    with pytest.raises(OPDError, match="does not exist; fix"):
        IFEvalEvaluator(path=str(tmp_path / "missing.jsonl")).setup(ctx=None)  # type: ignore[arg-type]
    bad = tmp_path / "unknown.jsonl"
    bad.write_text(json.dumps({**RECORDS[3], "instruction_id_list": ["punctuation:no_commas"]}))
    with pytest.raises(OPDError, match=r"unknown instruction.*punctuation:no_commas"):
        IFEvalEvaluator(path=str(bad)).setup(ctx=None)  # type: ignore[arg-type]
    with pytest.raises(OPDError, match="eval_size=4 leaves none"):
        IFEvalTask(path=str(records_file), eval_size=4).opd_task_prompts("train")


def test_evaluator_on_a_real_tiny_model(tiny_models: TinyModels, records_file: Path) -> None:
    path = tiny_models.teacher
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    generator = HFGenerator("student", model, AutoTokenizer.from_pretrained(path), batch_size=2)
    evaluator = IFEvalEvaluator(path=str(records_file), limit=2, max_new_tokens=8)
    evaluator.setup(ctx=None)  # type: ignore[arg-type]
    result = evaluator.opd_evaluate(generator=generator, role="student", step=0)
    # greedy: generating again gives the same answers, which the scorer scores the same way
    answers = generator.generate(evaluator.prompts, evaluator.params)
    expected = evaluator.scorer.scores(evaluator.prompts, answers)
    assert result.metrics == pytest.approx(
        {**{f"ifeval/{k}": v for k, v in expected.items()}, "ifeval/examples": 2.0}
    )
