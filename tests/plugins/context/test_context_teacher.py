"""The context teacher on tiny real models: the student's completion tokens, scored after the
prompt's context, exactly as a plain forward of context + prompt + completion scores them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import DictConfig

from conftest import TinyModels, tiny_run_overrides
from opd_context.placement import with_context
from opd_context.teacher import ContextTeacher
from opd_core import OPDError, Prompt, RolloutBatch
from opd_core.app import run
from opd_core.config import RunConfig
from opd_core.context import RunContext
from opd_core.metrics import read_metrics
from opd_core.modeling import render_prompt
from opd_core.plugin_manager import make_plugin_manager
from opd_hf.loading import load_hf_model
from opd_hf.sampler import HFSampler

Compose = Callable[[list[str]], DictConfig]
CPU = torch.device("cpu")
TOP_K = 5


def make_context(models: TinyModels, compose_config: Compose, tmp_path: Path) -> RunContext:
    config = RunConfig.from_dict(compose_config(tiny_run_overrides(models, tmp_path)))
    student = load_hf_model(config.student.model, "student", CPU)
    pm = make_plugin_manager()
    return RunContext(config, pm.hook, CPU, tmp_path, student, seed=0)


def sample(ctx: RunContext, contexts: list[str | None]) -> RolloutBatch:
    sampler = HFSampler(batch_size=8)
    sampler.setup(ctx)
    prompts = [
        Prompt(
            id=f"p{i}",
            messages=({"role": "user", "content": f"{i}+{i + 1}"},),
            teacher_context=context,
        )
        for i, context in enumerate(contexts)
    ]
    torch.manual_seed(0)
    return sampler.opd_sample_rollouts(prompts=prompts, samples_per_prompt=2)


def manual_scores(
    model: Any, tokenizer: Any, prompt: Prompt, completion_ids: list[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One unpadded forward of the rendered prompt + completion: the completion tokens'
    log-probabilities, and the top-k ids and log-probabilities predicting them."""
    prompt_ids = tokenizer(render_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"]
    ids_1T = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logprobs_TV = torch.log_softmax(model(input_ids=ids_1T).logits[0].float(), dim=-1)
    predicting_CV = logprobs_TV[len(prompt_ids) - 1 : -1]
    picked_C = predicting_CV.gather(-1, torch.tensor(completion_ids).unsqueeze(-1)).squeeze(-1)
    top_lps_CK, top_ids_CK = predicting_CV.topk(TOP_K, dim=-1)
    return picked_C, top_ids_CK, top_lps_CK


@pytest.mark.parametrize("placement", ["system", "user"])
def test_scores_equal_a_forward_of_context_prompt_and_completion(
    tiny_models: TinyModels, compose_config: Compose, tmp_path: Path, placement: str
) -> None:
    ctx = make_context(tiny_models, compose_config, tmp_path)
    rollouts = sample(ctx, ["3+4=7 #7", None, "a much longer reference: 1+2=3 #3"])
    teacher = ContextTeacher(
        inner={"name": "hf", "model": {"path": str(tiny_models.teacher)}, "batch_size": 4},
        placement=placement,
        template="Solution: {context}",
    )
    teacher.setup(ctx)
    scores = teacher.opd_score_rollouts(rollouts=rollouts, top_k=TOP_K)
    model, tokenizer = teacher.inner.loaded.model, teacher.inner.loaded.tokenizer
    assert scores.logprobs_BT.shape == rollouts.input_ids_BT.shape
    assert scores.topk_ids_BTK is not None and scores.topk_logprobs_BTK is not None
    mask_BT = rollouts.completion_mask_BT.bool()
    for row, prompt in enumerate(rollouts.prompts):
        columns = mask_BT[row].nonzero().squeeze(-1)
        completion = rollouts.input_ids_BT[row, columns].tolist()
        seen = with_context(prompt, placement, "Solution: {context}")
        picked_C, top_ids_CK, top_lps_CK = manual_scores(model, tokenizer, seen, completion)
        torch.testing.assert_close(scores.logprobs_BT[row, columns], picked_C, atol=1e-5, rtol=0)
        assert torch.equal(scores.topk_ids_BTK[row, columns], top_ids_CK)
        torch.testing.assert_close(
            scores.topk_logprobs_BTK[row, columns], top_lps_CK, atol=1e-5, rtol=0
        )
        assert float(scores.logprobs_BT[row][~mask_BT[row]].abs().sum()) == 0.0
    # the context changes the scores: the same rows without it score differently
    plain = teacher.inner.opd_score_rollouts(rollouts=rollouts, top_k=0)
    with_ctx = rollouts.group_ids_B != 1
    assert not torch.allclose(plain.logprobs_BT[with_ctx], scores.logprobs_BT[with_ctx])
    assert torch.allclose(plain.logprobs_BT[~with_ctx], scores.logprobs_BT[~with_ctx], atol=1e-5)


def test_student_initial_keeps_the_initial_weights(
    tiny_models: TinyModels, compose_config: Compose, tmp_path: Path
) -> None:
    ctx = make_context(tiny_models, compose_config, tmp_path)
    rollouts = sample(ctx, ["1+2=3 #3", "2+3=5 #5"])
    teacher = ContextTeacher(inner={"name": "student_initial", "batch_size": 8})
    teacher.setup(ctx)
    before = teacher.opd_score_rollouts(rollouts=rollouts, top_k=0).logprobs_BT
    with torch.no_grad():  # the student trains on: its initial copy does not move
        for parameter in ctx.student.model.parameters():
            parameter.add_(0.5)
    after = teacher.opd_score_rollouts(rollouts=rollouts, top_k=0).logprobs_BT
    assert torch.equal(before, after)
    assert teacher.inner.loaded.tokenizer is ctx.student.tokenizer


def test_placement_puts_the_context_where_asked() -> None:
    prompt = Prompt(id="q", messages=({"role": "user", "content": "2+2"},), teacher_context="4")
    assert with_context(prompt, "system", "{context}").messages == (
        {"role": "system", "content": "4"},
        {"role": "user", "content": "2+2"},
    )
    assert with_context(prompt, "user", "Hint: {context}").messages == (
        {"role": "user", "content": "Hint: 4\n\n2+2"},
    )
    system = Prompt(
        id="s",
        messages=({"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2"}),
        teacher_context="4",
    )
    assert with_context(system, "system", "{context}").messages[0]["content"] == "4\n\nBe brief."
    plain = Prompt(id="p", messages=({"role": "user", "content": "2+2"},))
    assert with_context(plain, "system", "{context}") is plain
    with pytest.raises(ValueError, match="no chat messages"):
        with_context(Prompt(id="t", messages=(), teacher_context="x"), "system", "{context}")


def test_config_mistakes_are_named() -> None:
    with pytest.raises(ValueError, match="placement must be one of system, user"):
        ContextTeacher(inner={"name": "hf"}, placement="before")
    with pytest.raises(ValueError, match="template must contain"):
        ContextTeacher(inner={"name": "hf"}, template="no slot")
    with pytest.raises(ValueError, match="nest none"):
        ContextTeacher(inner={"name": "context", "inner": {}})


def test_a_run_self_distills_with_the_reference_solution(
    tiny_models: TinyModels, compose_config: Compose, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    overrides = [
        o
        for o in tiny_run_overrides(tiny_models, out, steps=2)
        if not o.startswith(("+teacher", "teacher."))
    ]
    extra = ["+teacher=context", "task.eval_size=4", "eval.at_start=false"]
    cfg = compose_config([*overrides, *extra])
    summary = run(cfg, out, pm=make_plugin_manager())
    records = read_metrics(out / "metrics.jsonl")
    assert len(records) == 2
    assert all(r["teacher/context_prompt_tokens"] > 0 for r in records)
    assert "accuracy" in summary["teacher"]  # the initial student, shown the solutions


def test_a_task_without_contexts_is_refused(
    tiny_models: TinyModels, compose_config: Compose, tmp_path: Path
) -> None:
    ctx = make_context(tiny_models, compose_config, tmp_path)
    teacher = ContextTeacher(inner={"name": "student_initial"})
    teacher.setup(ctx)

    class NoContexts:
        from opd_core import hookimpl

        @hookimpl
        def opd_task_prompts(self, split: str) -> list[Prompt]:
            return [Prompt(id="q", messages=({"role": "user", "content": "1+1"},))]

    ctx.hook = make_plugin_manager([NoContexts()]).hook
    with pytest.raises(OPDError, match="none of task 'arithmetic''s train prompts has one"):
        teacher.opd_run_start(ctx=ctx)
