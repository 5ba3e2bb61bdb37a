"""sampler=hf with train.overlap: sampling ahead from a frozen copy of the student's weights."""

from __future__ import annotations

import copy
from typing import Any

import torch

from conftest import TinyModels
from opd_core import GenerationParams, Prompt, RolloutBatch
from opd_core.modeling import LoadedModel, ModelSpec, gather_logprobs, next_token_logits
from opd_hf.loading import load_hf_model
from opd_hf.prefetch import SnapshotPrefetcher, frozen_copy

CPU = torch.device("cpu")
PROMPTS = [
    Prompt(id=str(i), messages=({"role": "user", "content": q},))
    for i, q in enumerate(["1+2", "(3*4)-5", "9"])
]
PARAMS = GenerationParams(max_new_tokens=12, temperature=0.7)


def trained_student(models: TinyModels) -> LoadedModel:
    """The trained tiny model as the student: it answers and stops at EOS."""
    return load_hf_model(ModelSpec(str(models.teacher)), "student", CPU)


@torch.no_grad()
def max_logprob_error(model: Any, rollouts: RolloutBatch) -> float:
    """Largest gap between the rollouts' sampler log-probabilities and ``model``'s."""
    logits_BSV = next_token_logits(model, rollouts.input_ids_BT, rollouts.attention_mask_BT)
    expected_BT = gather_logprobs(logits_BSV, rollouts.input_ids_BT, PARAMS.temperature)
    on_BT = rollouts.completion_mask_BT.bool()
    return float((rollouts.sampler_logprobs_BT - expected_BT)[on_BT].abs().max())


def test_samples_come_from_the_weights_prepare_saw(tiny_models: TinyModels) -> None:
    student = trained_student(tiny_models)
    prefetcher = SnapshotPrefetcher(student, PARAMS, batch_size=4)
    weights_then = copy.deepcopy(student.model).eval()
    torch.manual_seed(0)
    sample = prefetcher.prepare(PROMPTS, samples_per_prompt=2)
    with torch.no_grad():  # the update that runs while the rollouts are sampled
        for weight in student.model.parameters():
            weight.add_(0.05 * torch.randn_like(weight))
    batch = sample()()
    assert batch.batch_size == 6 and [p.id for p in batch.prompts] == ["0", "0", "1", "1", "2", "2"]
    assert max_logprob_error(weights_then, batch) < 1e-5
    assert max_logprob_error(student.model.eval(), batch) > 1e-2
    assert batch.completions == tuple(
        student.tokenizer.decode(row[mask.bool()], skip_special_tokens=True)
        for row, mask in zip(
            batch.input_ids_BT[:, batch.prompt_len :],
            batch.completion_mask_BT[:, batch.prompt_len :],
            strict=True,
        )
    )
    # the next prepare takes the weights as they are now
    sample = prefetcher.prepare(PROMPTS, samples_per_prompt=2)
    assert max_logprob_error(student.model, sample()()) < 1e-5


def test_samples_depend_on_the_run_seed_not_on_other_threads_draws(
    tiny_models: TinyModels,
) -> None:
    prefetcher = SnapshotPrefetcher(trained_student(tiny_models), PARAMS, batch_size=4)
    torch.manual_seed(3)
    sample = prefetcher.prepare(PROMPTS, samples_per_prompt=4)
    torch.rand(100)  # training draws from torch's generator while the rollouts are sampled
    first = sample()()
    torch.manual_seed(3)
    again = prefetcher.prepare(PROMPTS, samples_per_prompt=4)()()
    torch.manual_seed(4)
    other = prefetcher.prepare(PROMPTS, samples_per_prompt=4)()()
    assert first.completions == again.completions != other.completions
    assert torch.equal(first.sampler_logprobs_BT, again.sampler_logprobs_BT)


def test_the_copy_shares_frozen_weights_and_owns_trainable_ones(tiny_models: TinyModels) -> None:
    from peft import LoraConfig, get_peft_model

    base = trained_student(tiny_models)
    model = get_peft_model(base.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    frozen = frozen_copy(model)
    live = dict(model.named_parameters())
    for name, tensor in frozen.named_parameters():
        assert not tensor.requires_grad
        shares = tensor.data_ptr() == live[name].data_ptr()
        assert shares == (not live[name].requires_grad), name  # LoRA adapters: their own
    assert any(p.requires_grad for p in model.parameters())  # the live model is untouched
    prefetcher = SnapshotPrefetcher(
        LoadedModel(model=model, tokenizer=base.tokenizer, spec=base.spec), PARAMS, 4
    )
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if "lora_B" in name:
                weight.normal_(0, 0.5)
    prefetcher.refresh()
    copied = dict(prefetcher.copy.named_parameters())
    assert all(torch.equal(copied[n], w) for n, w in model.named_parameters())
