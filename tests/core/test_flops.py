"""FLOPs formulas against torch's FlopCounterMode on a tiny real model, and the run's ledger."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import Qwen3Config, Qwen3ForCausalLM

from opd_core import GenerationParams, RolloutBatch
from opd_core.flops import FlopsLedger, ModelShape, rollout_flops
from opd_core.modeling import next_token_logits
from opd_hf.generation import decode


@pytest.fixture(scope="module")
def model() -> Qwen3ForCausalLM:
    """Eager attention: FlopCounterMode does not see the CPU fused attention kernel."""
    config = Qwen3Config(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=80,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        tie_word_embeddings=False,
    )
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    return Qwen3ForCausalLM(config).eval()


def counted(fn: object) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()  # type: ignore[operator]
    return int(counter.get_total_flops())


def test_shape_counts_linear_weights_and_attention_width(model: Qwen3ForCausalLM) -> None:
    shape = ModelShape.of(model)
    per_layer = 32 * 32 + 2 * 32 * 16 + 32 * 32 + 3 * 32 * 80  # q, k+v (GQA), o, MLP
    assert shape == ModelShape(
        matmul_params=3 * per_layer + 97 * 32, head_params=97 * 32, layers=3, attention_width=32
    )


def test_forward_flops_match_flop_counter(model: Qwen3ForCausalLM) -> None:
    ids = torch.randint(0, 97, (3, 13))
    expected = ModelShape.of(model).forward_flops(torch.full((3,), 13))
    assert counted(lambda: model(input_ids=ids, use_cache=False)) == expected


def test_training_flops_are_forward_plus_backward(model: Qwen3ForCausalLM) -> None:
    ids = torch.randint(0, 97, (2, 9))
    expected = ModelShape.of(model).training_flops(torch.full((2,), 9))
    assert counted(lambda: model(input_ids=ids, use_cache=False).logits.sum().backward()) == (
        expected
    )


def test_completion_logits_apply_the_head_on_completion_positions_only(
    model: Qwen3ForCausalLM,
) -> None:
    ids_BT, mask_BT = torch.randint(0, 97, (2, 13)), torch.ones(2, 13, dtype=torch.long)
    full_BSV = next_token_logits(model, ids_BT, mask_BT)
    tail_BSV = next_token_logits(model, ids_BT, mask_BT, first=9)  # 4 completion tokens
    assert torch.equal(tail_BSV[:, :8], torch.zeros(2, 8, 97))  # predicting tokens 1..8
    assert torch.allclose(tail_BSV[:, 8:], full_BSV[:, 8:], atol=1e-6)
    shape = ModelShape.of(model)
    # the head (97 x 32 weights) runs on 4 positions per row instead of 13
    head_saved = 2 * 2 * 97 * 32 * (13 - 4)
    assert shape.forward_flops(torch.full((2,), 13), torch.full((2,), 4)) == (
        shape.forward_flops(torch.full((2,), 13)) - head_saved
    )
    forward = counted(lambda: next_token_logits(model, ids_BT, mask_BT, first=9))
    assert forward == shape.forward_flops(torch.full((2,), 13), torch.full((2,), 4))
    training = counted(lambda: next_token_logits(model, ids_BT, mask_BT, first=9).sum().backward())
    assert training == shape.training_flops(torch.full((2,), 13), torch.full((2,), 4))


@pytest.mark.parametrize(("prompt", "new"), [(7, 1), (11, 6), (4, 15)])
def test_generation_flops_match_flop_counter(
    model: Qwen3ForCausalLM, prompt: int, new: int
) -> None:
    ids = torch.randint(1, 97, (1, prompt))

    def generate() -> None:
        out = model.generate(
            ids, max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0
        )
        assert out.shape[1] == prompt + new

    expected = ModelShape.of(model).generation_flops(torch.tensor([prompt]), torch.tensor([new]))
    assert counted(generate) == expected


@pytest.mark.parametrize(("prompt", "new"), [(7, 1), (11, 6), (4, 15)])
def test_static_cache_decode_runs_the_counted_flops_plus_its_unwritten_slots(
    model: Qwen3ForCausalLM, prompt: int, new: int
) -> None:
    ids_BP = torch.randint(1, 97, (1, prompt))
    mask_BP = torch.ones_like(ids_BP)
    params = GenerationParams(max_new_tokens=new, temperature=1.0)
    shape = ModelShape.of(model)
    expected = shape.generation_flops(torch.tensor([prompt]), torch.tensor([new]))
    # every step attends over all prompt + new slots of the cache: the prefill's prompt queries
    # see `new` unwritten slots more, decode step j (1..new-1) `new - j` more
    masked_keys = prompt * new + new * (new - 1) // 2
    masked = 4 * shape.layers * shape.attention_width * masked_keys
    assert counted(lambda: decode(model, ids_BP, mask_BP, params, [], 0)) == expected + masked


def test_ledger_sums_steps_and_splits_student_from_teacher() -> None:
    ledger = FlopsLedger()
    ledger.add(FlopsLedger(student_sampling=1.0, student_training=2.0, teacher_scoring=4.0))
    ledger.add(FlopsLedger(student_training=2.0, teacher_sampling=8.0))
    assert (ledger.student, ledger.teacher) == (5.0, 12.0)
    restored = FlopsLedger()
    restored.load_state_dict(ledger.state_dict())
    assert restored == ledger
    assert restored.metrics("flops")["flops/teacher_sampling"] == 8.0


def test_rollout_flops_charge_sampling_to_the_model_that_wrote_the_answers() -> None:
    student = ModelShape(matmul_params=10, head_params=0, layers=0, attention_width=0)
    teacher = ModelShape(matmul_params=100, head_params=0, layers=0, attention_width=0)
    mask_BT = torch.tensor([[0, 1, 1, 1, 0], [1, 1, 1, 1, 1]])  # prompts of 2 and 3 tokens
    completion_BT = torch.tensor([[0, 0, 0, 1, 0], [0, 0, 0, 1, 1]])  # 1 and 2 answer tokens
    rollouts = RolloutBatch(
        prompts=(),
        group_ids_B=torch.tensor([0, 1]),
        input_ids_BT=torch.zeros(2, 5, dtype=torch.long),
        attention_mask_BT=mask_BT,
        completion_mask_BT=completion_BT,
        sampler_logprobs_BT=torch.zeros(2, 5),
        completions=("", ""),
        prompt_len=3,
    )
    on_policy = rollout_flops(rollouts, student, teacher, scored=True, update_epochs=2)
    # real tokens 3 and 5; generation: (2 + 0) + (3 + 1) positions through the model
    assert on_policy == FlopsLedger(
        student_sampling=2 * 10 * 6,
        student_training=2 * 3 * 2 * 10 * 8,
        teacher_scoring=2 * 100 * 8,
    )
    off_policy = rollout_flops(
        replace(rollouts, sampler_role="teacher"), student, teacher, scored=False
    )
    assert off_policy == FlopsLedger(student_training=6 * 10 * 8, teacher_sampling=2 * 100 * 6)
    assert rollout_flops(rollouts, student, None, scored=True).teacher == 0.0
    # a 4-weight LM head runs on the 1 and 2 answer tokens in training and scoring
    headed = replace(teacher, matmul_params=104, head_params=4)
    scored = rollout_flops(rollouts, student, headed, scored=True)
    assert scored.teacher_scoring == 2 * 100 * 8 + 2 * 4 * 3
    # a teacher that reports what its scoring cost (its own tokens, a tree of paths) is booked
    reported = rollout_flops(rollouts, student, headed, scored=True, teacher_scoring=1234.0)
    assert reported.teacher_scoring == 1234.0 and reported.student == 2 * 10 * 6 + 6 * 10 * 8
    assert rollout_flops(rollouts, student, None, scored=True, teacher_scoring=5.0).teacher == 5.0
