"""Micro-batches grouped by length: every row once, less padding, the same loss and gradient."""

from __future__ import annotations

import inspect
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import TinyModels
from opd_core import Advantages, LossOutput, Prompt, RolloutBatch, TeacherScores
from opd_core.config import DistributedConfig
from opd_core.distributed import Distributed
from opd_core.micro_batches import padding_share, plan_micro_batches
from opd_core.modeling import next_token_logits, topk_logprobs
from opd_core.update import accumulate_gradients, policy_output
from opd_objectives.distribution import TopKReverseKL
from opd_objectives.importance_sampling import ImportanceSampling


def varied_batch(prompt_lens: list[int], completion_lens: list[int], vocab: int) -> RolloutBatch:
    """Random tokens in the rollout layout: left-padded prompts of ``prompt_lens`` tokens, then
    completions of ``completion_lens`` tokens, right padded."""
    generator = torch.Generator().manual_seed(0)
    B, P, C = len(prompt_lens), max(prompt_lens), max(completion_lens)
    ids_BT = torch.randint(3, vocab, (B, P + C), generator=generator)
    attention_BT = torch.zeros((B, P + C), dtype=torch.long)
    completion_BT = torch.zeros_like(attention_BT)
    for b, (p, c) in enumerate(zip(prompt_lens, completion_lens, strict=True)):
        attention_BT[b, P - p : P + c] = 1
        completion_BT[b, P : P + c] = 1
    ids_BT = ids_BT * attention_BT
    return RolloutBatch(
        prompts=tuple(Prompt(id=str(b), messages=()) for b in range(B)),
        group_ids_B=torch.arange(B),
        input_ids_BT=ids_BT,
        attention_mask_BT=attention_BT,
        completion_mask_BT=completion_BT,
        sampler_logprobs_BT=-torch.rand((B, P + C), generator=generator) * completion_BT,
        completions=tuple(str(b) for b in range(B)),
        prompt_len=P,
    )


PROMPT_LENS = [3, 7, 5, 2, 7, 4, 6, 3]
COMPLETION_LENS = [12, 2, 30, 5, 1, 29, 7, 16]


def test_plan_takes_every_row_once_sorted_by_length_and_trims_unused_columns() -> None:
    batch = varied_batch(PROMPT_LENS, COMPLETION_LENS, vocab=50)
    plan = plan_micro_batches(batch.attention_mask_BT, 3, batch.prompt_len)
    rows = torch.cat([mb.rows_R for mb in plan]).tolist()
    assert sorted(rows) == list(range(8))
    totals = [PROMPT_LENS[r] + COMPLETION_LENS[r] for r in rows]
    assert totals == sorted(totals)
    # rows 3 (2+5), 4 (7+1), 1 (7+2) first: prompts up to 7 of 7, completions up to 5 of 30
    assert plan[0].rows_R.tolist() == [3, 4, 1]
    assert (plan[0].columns.start, plan[0].columns.stop) == (0, 7 + 5)
    # padding, hand-counted: batch order trimmed ([0,1,2] 7+30, [3,4,5] 7+29, [6,7] 6+16 wide;
    # untrimmed, all 37 wide), and grouped by length
    real = sum(PROMPT_LENS) + sum(COMPLETION_LENS)
    in_order = plan_micro_batches(batch.attention_mask_BT, 3, batch.prompt_len, by_length=False)
    trimmed = 37 * 3 + 36 * 3 + 22 * 2
    assert padding_share(batch.attention_mask_BT, in_order) == pytest.approx(1 - real / trimmed)
    widths = [(7 + 5) * 3, (6 + 16) * 3, (5 + 30) * 2]  # [3,4,1], [6,0,7], [5,2]
    assert [len(mb.rows_R) * mb.width() for mb in plan] == widths
    assert padding_share(batch.attention_mask_BT, plan) == pytest.approx(1 - real / sum(widths))


def test_a_micro_batch_starts_no_later_than_the_completions() -> None:
    mask_BT = torch.tensor([[0, 0, 1, 1, 0], [0, 0, 0, 1, 1]])
    (only,) = plan_micro_batches(mask_BT, 4, prompt_len=2)
    assert (only.columns.start, only.columns.stop) == (2, 5)
    (cut,) = plan_micro_batches(mask_BT, 4, prompt_len=1)  # never past prompt_len
    assert cut.columns.start == 1
    with pytest.raises(ValueError, match="cut completions"):
        varied_batch([1, 1], [2, 2], 9).select(slice(None), slice(2, 4))


@pytest.mark.parametrize("loss", ["topk_reverse_kl", "importance_sampling"])
def test_length_grouped_micro_batches_give_the_batch_order_loss_and_gradient(
    tiny_models: TinyModels, loss: str
) -> None:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_models.student).float()
    batch = varied_batch(PROMPT_LENS, COMPLETION_LENS, vocab=model.config.vocab_size)
    teacher_BTV = torch.log_softmax(torch.randn((8, batch.input_ids_BT.shape[1], 60)), -1)
    lps_BTK, ids_BTK = teacher_BTV.topk(5, dim=-1)
    scores = TeacherScores(batch.sampler_logprobs_BT - 0.1, ids_BTK, lps_BTK)
    mask_BT = batch.completion_mask_BT.float()
    advantages = Advantages(torch.randn(mask_BT.shape) * mask_BT, mask_BT)
    component = TopKReverseKL(top_k=5) if loss == "topk_reverse_kl" else ImportanceSampling()

    def compute_loss(**kwargs: object) -> LossOutput:  # as pluggy calls it: the args it takes
        wanted = inspect.signature(component.opd_compute_loss).parameters
        return component.opd_compute_loss(**{k: v for k, v in kwargs.items() if k in wanted})

    hook = SimpleNamespace(opd_compute_loss=compute_loss)
    tokens = int(mask_BT.sum())

    # reference: one forward over the whole, untrimmed batch
    policy = policy_output(model, batch)
    full = compute_loss(
        rollouts=batch, policy=policy, advantages=advantages, scores=scores, num_loss_tokens=tokens
    )
    full.loss.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)

    sums: dict[str, float] = {}
    dist = Distributed(DistributedConfig(), torch.device("cpu"))
    accumulate_gradients(model, hook, dist, (batch, advantages, scores), 3, tokens, sums)
    assert sums["loss"] == pytest.approx(float(full.loss), abs=1e-5)
    assert sums["padding/update"] == pytest.approx(1 - 139 / 172)  # untrimmed: 1 - 139 / 296
    for name, param in model.named_parameters():
        if name in expected:
            torch.testing.assert_close(param.grad, expected[name], atol=1e-5, rtol=1e-4)


def test_teacher_scores_in_grouped_micro_batches_match_one_forward(
    tiny_models: TinyModels,
) -> None:
    from opd_core.modeling import ModelSpec
    from opd_hf.teacher import HFTeacher

    teacher = HFTeacher({"path": str(tiny_models.teacher)}, batch_size=3, check_template=False)
    model = AutoModelForCausalLM.from_pretrained(tiny_models.teacher).float().eval()
    teacher.loaded = SimpleNamespace(model=model, spec=ModelSpec(str(tiny_models.teacher)))
    batch = varied_batch(PROMPT_LENS, COMPLETION_LENS, vocab=model.config.vocab_size)
    scores = teacher.opd_score_rollouts(rollouts=batch, top_k=4)
    with torch.no_grad():
        logits_BSV = next_token_logits(
            model, batch.input_ids_BT, batch.attention_mask_BT, first=batch.prompt_len
        )
    mask_BT = batch.completion_mask_BT
    expected_BT = torch.log_softmax(logits_BSV, -1).gather(-1, batch.input_ids_BT[:, 1:, None])
    expected_BT = torch.cat([torch.zeros(8, 1), expected_BT.squeeze(-1)], 1) * mask_BT
    torch.testing.assert_close(scores.logprobs_BT, expected_BT, atol=1e-5, rtol=0)
    ids_BTK, lps_BTK = topk_logprobs(logits_BSV, 4)
    on_BT = mask_BT.bool()
    assert scores.topk_ids_BTK is not None and scores.topk_logprobs_BTK is not None
    assert torch.equal(scores.topk_ids_BTK[on_BT], ids_BTK[on_BT])
    torch.testing.assert_close(scores.topk_logprobs_BTK[on_BT], lps_BTK[on_BT], atol=1e-5, rtol=0)
    assert scores.metrics["padding/score"] == pytest.approx(1 - 139 / 172)
