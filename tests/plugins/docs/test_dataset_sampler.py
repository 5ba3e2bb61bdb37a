"""sampler=dataset: reference texts become rollouts whose cross-entropy loss (no advantage
function: every token weighs 1) is exactly SFT on the reference tokens, and cost no sampling
FLOPs."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import TinyModels
from opd_core import OPDError, Prompt, RolloutBatch
from opd_core.flops import ModelShape, rollout_flops
from opd_core.modeling import LoadedModel, ModelSpec, render_prompt
from opd_core.objective import completion_advantages
from opd_core.update import policy_output
from opd_hf.dataset_sampler import DatasetSamples
from opd_objectives.supervised import CrossEntropy

DOC = Prompt(id="doc", messages=(), reference="Widget code QX-4821.\n\nLaunched 2019.")
CHAT = Prompt(
    id="chat",
    messages=({"role": "user", "content": "What is 2+3?"},),
    reference="2+3=5 #5",
)


def sampler_for(tiny_models: TinyModels, max_new_tokens: int = 64) -> tuple[DatasetSamples, Any]:
    tokenizer = AutoTokenizer.from_pretrained(tiny_models.student)
    model = AutoModelForCausalLM.from_pretrained(tiny_models.student, dtype=torch.float32)
    sampler = DatasetSamples(batch_size=4)
    train = SimpleNamespace(max_new_tokens=max_new_tokens, temperature=1.0)
    ctx = SimpleNamespace(
        student=LoadedModel(model, tokenizer, ModelSpec(str(tiny_models.student))),
        config=SimpleNamespace(train=train),
        precision="fp32",
    )
    sampler.setup(ctx)  # type: ignore[arg-type]
    return sampler, model


def expected_rows(tokenizer: Any, prompt: Prompt) -> tuple[list[int], list[int]]:
    """Prompt ids and target ids of one example, built by hand."""
    if prompt.messages:
        prompt_ids = tokenizer(render_prompt(tokenizer, prompt), add_special_tokens=False)
        prompt_ids = prompt_ids["input_ids"]
    else:
        prompt_ids = [tokenizer.bos_token_id]
    target = tokenizer(prompt.reference, add_special_tokens=False)["input_ids"]
    return prompt_ids, [*target, tokenizer.eos_token_id]


def test_completion_mask_covers_exactly_the_reference_tokens(tiny_models: TinyModels) -> None:
    sampler, _ = sampler_for(tiny_models)
    tokenizer = sampler.student.tokenizer
    batch = sampler.opd_sample_rollouts(prompts=[DOC, CHAT], samples_per_prompt=1)
    assert batch.sampler_role == "data"
    assert batch.completions == (DOC.reference, CHAT.reference)
    for row, prompt in enumerate((DOC, CHAT)):
        prompt_ids, target_ids = expected_rows(tokenizer, prompt)
        ids = batch.input_ids_BT[row]
        assert ids[batch.completion_mask_BT[row].bool()].tolist() == target_ids
        assert ids[batch.attention_mask_BT[row].bool()].tolist() == prompt_ids + target_ids
    assert not batch.completion_mask_BT[:, : batch.prompt_len].any()
    assert torch.equal(batch.sampler_logprobs_BT, torch.zeros_like(batch.sampler_logprobs_BT))


def test_cross_entropy_is_the_hand_computed_sft_loss(tiny_models: TinyModels) -> None:
    sampler, model = sampler_for(tiny_models)
    batch = sampler.opd_sample_rollouts(prompts=[DOC, CHAT], samples_per_prompt=1)
    advantages = completion_advantages(batch)  # no advantage function: every token weighs 1
    num_tokens = int(advantages.mask_BT.sum())
    out = CrossEntropy().opd_compute_loss(
        rollouts=batch,
        policy=policy_output(model, batch),
        advantages=advantages,
        num_loss_tokens=num_tokens,
    )
    # by hand: each example alone (no padding), -log p of every target token given its prefix
    total, count = 0.0, 0
    with torch.no_grad():
        for prompt in (DOC, CHAT):
            prompt_ids, target_ids = expected_rows(sampler.student.tokenizer, prompt)
            ids = torch.tensor([prompt_ids + target_ids])
            logprobs = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
            positions = torch.arange(len(prompt_ids) - 1, ids.shape[1] - 1)
            total -= float(logprobs[positions, ids[0, positions + 1]].sum())
            count += len(target_ids)
    assert num_tokens == count
    assert float(out.loss.detach()) == pytest.approx(total / count, rel=1e-5)
    out.loss.backward()  # and it trains the model
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_references_longer_than_the_limit_are_cut_without_eos(tiny_models: TinyModels) -> None:
    sampler, _ = sampler_for(tiny_models, max_new_tokens=5)
    batch = sampler.opd_sample_rollouts(prompts=[DOC], samples_per_prompt=2)
    tokenizer = sampler.student.tokenizer
    target = tokenizer(DOC.reference, add_special_tokens=False)["input_ids"][:5]
    assert batch.batch_size == 2 and batch.group_ids_B.tolist() == [0, 0]
    assert batch.input_ids_BT[0][batch.completion_mask_BT[0].bool()].tolist() == target


def test_a_prompt_without_reference_is_named(tiny_models: TinyModels) -> None:
    sampler, _ = sampler_for(tiny_models)
    bare = Prompt(id="q7", messages=({"role": "user", "content": "hi"},))
    with pytest.raises(OPDError, match=r"prompt 'q7' \(1 of 2 this step\) has none"):
        sampler.opd_sample_rollouts(prompts=[DOC, bare], samples_per_prompt=1)


def test_fixed_data_costs_no_sampling_flops(tiny_models: TinyModels) -> None:
    sampler, model = sampler_for(tiny_models)
    batch: RolloutBatch = sampler.opd_sample_rollouts(prompts=[DOC, CHAT], samples_per_prompt=1)
    shape = ModelShape.of(model)
    flops = rollout_flops(batch, shape, shape, scored=False)
    assert flops.student_sampling == 0.0 and flops.teacher_sampling == 0.0
    prompt_B, completion_B = batch.sequence_lengths()
    expected = shape.training_flops(prompt_B + completion_B, completion_B)  # head on the answer
    assert flops.student_training == expected > 0
