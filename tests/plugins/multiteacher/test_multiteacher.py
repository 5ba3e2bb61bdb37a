"""The multi teacher on tiny real models: rows reach the teacher their prompt is routed to."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import DictConfig

from conftest import TINY_STUDENT, TinyModels, tiny_run_overrides
from opd_arith.build import make_model
from opd_arith.plugin import ArithmeticTask
from opd_arith.tokenizer import build_tokenizer
from opd_core import OPDError, Prompt, hookimpl
from opd_core.app import run
from opd_core.config import RunConfig
from opd_core.context import RunContext
from opd_core.metrics import read_metrics
from opd_core.plugin_manager import make_plugin_manager
from opd_core.registry import Registry
from opd_hf.loading import load_hf_model
from opd_hf.sampler import HFSampler
from opd_hf.teacher import HFTeacher
from opd_multiteacher.teacher import MultiTeacher, route_key

Compose = Callable[[list[str]], DictConfig]
CPU = torch.device("cpu")


class TwoSourceArithmetic(ArithmeticTask):
    """Arithmetic prompts alternately tagged as coming from source ``left`` and ``right``."""

    @hookimpl
    def opd_task_prompts(self, split: str) -> Sequence[Prompt]:
        prompts = super().opd_task_prompts(split)
        return [replace(p, source="left" if i % 2 == 0 else "right") for i, p in enumerate(prompts)]


class TwoSourcesPlugin:
    @hookimpl
    def opd_register_components(self, registry: Registry) -> None:
        registry.add("task", "two_sources", TwoSourceArithmetic)


def teacher_node(path: Path) -> dict[str, Any]:
    return {"name": "hf", "model": {"path": str(path)}, "batch_size": 4}


def make_context(models: TinyModels, compose_config: Compose, tmp_path: Path) -> RunContext:
    config = RunConfig.from_dict(compose_config(tiny_run_overrides(models, tmp_path)))
    student = load_hf_model(config.student.model, "student", CPU)
    pm = make_plugin_manager()
    return RunContext(config, pm.hook, CPU, tmp_path, student, seed=0)


def sample(ctx: RunContext, sources: list[str]) -> Any:
    sampler = HFSampler(batch_size=8)
    sampler.setup(ctx)
    prompts = [
        Prompt(id=f"p{i}", messages=({"role": "user", "content": f"{i}+{i}"},), source=s)
        for i, s in enumerate(sources)
    ]
    torch.manual_seed(0)
    return sampler.opd_sample_rollouts(prompts=prompts, samples_per_prompt=2)


def test_each_row_gets_its_teachers_logprobs(
    tiny_models: TinyModels, compose_config: Compose, tmp_path: Path
) -> None:
    ctx = make_context(tiny_models, compose_config, tmp_path)
    rollouts = sample(ctx, ["left", "right", "right", "left"])
    multi = MultiTeacher(
        teachers={
            "big": teacher_node(tiny_models.teacher),
            "small": teacher_node(tiny_models.student),
        },
        routes={"left": "big", "right": "small"},
    )
    multi.setup(ctx)
    scores = multi.opd_score_rollouts(rollouts=rollouts, top_k=3)
    expected = {}
    for name, path in (("big", tiny_models.teacher), ("small", tiny_models.student)):
        alone = HFTeacher(model={"path": str(path)}, batch_size=8)
        alone.setup(ctx)
        expected[name] = alone.opd_score_rollouts(rollouts=rollouts, top_k=3)
    big_rows, small_rows = [0, 1, 6, 7], [2, 3, 4, 5]  # two samples per prompt, in order
    for name, rows in (("big", big_rows), ("small", small_rows)):
        want = expected[name]
        assert torch.allclose(scores.logprobs_BT[rows], want.logprobs_BT[rows], atol=1e-5)
        assert scores.topk_ids_BTK is not None and want.topk_ids_BTK is not None
        assert scores.topk_logprobs_BTK is not None and want.topk_logprobs_BTK is not None
        assert torch.equal(scores.topk_ids_BTK[rows], want.topk_ids_BTK[rows])
        assert torch.allclose(
            scores.topk_logprobs_BTK[rows], want.topk_logprobs_BTK[rows], atol=1e-5
        )
    # the two teachers disagree, so a row scored by the wrong one would have been caught
    assert not torch.allclose(expected["big"].logprobs_BT, expected["small"].logprobs_BT, atol=1e-2)
    mask_BT = rollouts.completion_mask_BT.float()
    assert scores.metrics["teacher/big/sequences"] == 4.0
    assert scores.metrics["teacher/small/tokens"] == float(mask_BT[small_rows].sum())
    kl_big = (rollouts.sampler_logprobs_BT - expected["big"].logprobs_BT)[big_rows]
    want_kl = float((kl_big * mask_BT[big_rows]).sum() / mask_BT[big_rows].sum())
    assert scores.metrics["teacher/big/reverse_kl"] == pytest.approx(want_kl, rel=1e-4)


def test_unrouted_key_is_named_and_default_catches_it(
    tiny_models: TinyModels, compose_config: Compose, tmp_path: Path
) -> None:
    ctx = make_context(tiny_models, compose_config, tmp_path)
    rollouts = sample(ctx, ["left", "elsewhere"])
    teachers = {"big": teacher_node(tiny_models.teacher)}
    strict = MultiTeacher(teachers=teachers, routes={"left": "big"})
    strict.setup(ctx)
    with pytest.raises(OPDError, match=r"source='elsewhere'.*add teacher.routes.elsewhere="):
        strict.opd_score_rollouts(rollouts=rollouts, top_k=0)
    lenient = MultiTeacher(teachers=teachers, routes={"left": "big"}, default="big")
    lenient.setup(ctx)
    assert (
        lenient.opd_score_rollouts(rollouts=rollouts, top_k=0).metrics["teacher/big/sequences"] == 4
    )


def test_config_mistakes_are_named() -> None:
    node = {"a": {"name": "hf", "model": {"path": "/m"}}}
    with pytest.raises(ValueError, match="route target 'b' is not one of the teachers: a"):
        MultiTeacher(teachers=node, routes={"x": "b"})
    with pytest.raises(ValueError, match=r"route_by must be 'source' or 'metadata\.<field>'"):
        MultiTeacher(teachers=node, route_by="answer")


def test_a_teacher_with_another_vocabulary_is_refused(
    tiny_models: TinyModels, compose_config: Compose, tmp_path: Path
) -> None:
    tokenizer = build_tokenizer(["1+2=3"])
    tokenizer.add_tokens(["<|foreign|>"])  # one token more than the student's vocabulary
    other = tmp_path / "other"
    make_model(TINY_STUDENT, tokenizer, seed=0).save_pretrained(other)
    tokenizer.save_pretrained(other)
    ctx = make_context(tiny_models, compose_config, tmp_path)
    multi = MultiTeacher(
        teachers={"big": teacher_node(tiny_models.teacher), "foreign": teacher_node(other)}
    )
    with pytest.raises(OPDError, match=r"Teacher 'foreign' of the multi teacher: .*vocabularies"):
        multi.setup(ctx)


def test_a_run_logs_metrics_per_teacher(
    tiny_models: TinyModels, compose_config: Compose, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    overrides = [
        o
        for o in tiny_run_overrides(tiny_models, out, steps=2)
        if not o.startswith(("+teacher", "teacher."))
    ]
    cfg = compose_config(
        [
            *overrides,
            "+teacher=multi",
            "task.name=two_sources",
            f"teacher.teachers.math.model.path={tiny_models.teacher}",
            f"teacher.teachers.general.model.path={tiny_models.student}",
            "+teacher.routes.left=math",  # right: the default teacher
            "eval.teacher=false",
            "eval.at_start=false",
            "task.eval_size=4",
        ]
    )
    run(cfg, out, pm=make_plugin_manager([TwoSourcesPlugin()]))
    records = read_metrics(out / "metrics.jsonl")
    for record in records:
        names = [k.split("/")[1] for k in record if re.fullmatch(r"teacher/\w+/reverse_kl", k)]
        assert sum(record[f"teacher/{n}/tokens"] for n in names) == record["tokens"]
        assert sum(record[f"teacher/{n}/sequences"] for n in names) == record["sequences"] == 16
    assert {"teacher/math/reverse_kl", "teacher/general/reverse_kl"} <= set(records[0])
    assert records[0]["teacher/math/reverse_kl"] != records[0]["teacher/general/reverse_kl"]
    # the 2-layer teacher costs more per scored token than the 1-layer student-sized one
    first = records[0]
    per_token = {
        n: first[f"flops_step/teacher/{n}"] / first[f"teacher/{n}/tokens"]
        for n in ("math", "general")
    }
    assert per_token["math"] > per_token["general"] > 0


def test_route_key_reads_the_source_or_a_metadata_field() -> None:
    prompt = Prompt(id="q", messages=(), metadata={"lang": "fr"}, source="news")
    assert route_key(prompt, "source") == "news"
    assert route_key(prompt, "metadata.lang") == "fr"
    assert route_key(prompt, "metadata.missing") == ""
