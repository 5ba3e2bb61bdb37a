"""The transformers sampler and teacher on tiny real models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from conftest import TinyModels, schedule_for_tests
from opd_core import GenerationParams, OPDError, Prompt
from opd_core.modeling import (
    ModelSpec,
    check_same_rendering,
    check_same_vocabulary,
    gather_logprobs,
    next_token_logits,
)
from opd_core.rollouts import completion_mask
from opd_hf.generation import decode, generate
from opd_hf.loading import load_hf_model
from opd_hf.sampler import HFSampler
from opd_hf.teacher import HFTeacher

CPU = torch.device("cpu")
PROMPTS = [
    Prompt(id=str(i), messages=({"role": "user", "content": q},))
    for i, q in enumerate(["1+2", "(3*4)-5", "9"])
]


class FakeCtx:
    """The parts of RunContext the sampler and teacher read."""

    def __init__(self, student, max_new_tokens: int = 12) -> None:  # type: ignore[no-untyped-def]
        from opd_core.config import RunConfig, StudentConfig

        self.student = student
        self.device = CPU
        self.precision = "fp32"
        self.hook = None
        self.config = RunConfig(
            student=StudentConfig(model=student.spec),
            task={},
            teacher={},
            sampler={},
            prompts={},
            advantage={},
            loss={},
            evaluators={},
            **schedule_for_tests(max_new_tokens),
        )


def test_completion_mask_stops_after_the_first_eos() -> None:
    ids = torch.tensor([[5, 6, 2, 2, 2], [5, 2, 7, 2, 0], [5, 6, 7, 8, 9]])
    assert completion_mask(ids, [2]).tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]


def test_sampler_layout_masks_and_logprobs(tiny_models: TinyModels) -> None:
    student = load_hf_model(ModelSpec(str(tiny_models.teacher)), "student", CPU)
    sampler = HFSampler(batch_size=4)
    sampler.setup(FakeCtx(student))  # type: ignore[arg-type]
    torch.manual_seed(0)
    batch = sampler.opd_sample_rollouts(prompts=PROMPTS, samples_per_prompt=2)
    assert batch.batch_size == 6
    assert batch.group_ids_B.tolist() == [0, 0, 1, 1, 2, 2]
    assert [p.id for p in batch.prompts] == ["0", "0", "1", "1", "2", "2"]
    prompt_part = batch.completion_mask_BT[:, : batch.prompt_len]
    assert prompt_part.sum() == 0  # no prompt token is a completion token
    # sampler log-probs live exactly on completion tokens and are proper log-probabilities
    on = batch.completion_mask_BT.bool()
    assert torch.all(batch.sampler_logprobs_BT[~on] == 0)
    assert torch.all(batch.sampler_logprobs_BT[on] <= 0)
    eos = student.tokenizer.eos_token_id
    for row in range(batch.batch_size):  # every completion ends at its first EOS or the limit
        ids = batch.input_ids_BT[row, batch.prompt_len :][
            batch.completion_mask_BT[row, batch.prompt_len :].bool()
        ]
        assert (ids == eos).sum() <= 1
        assert ids[-1] == eos or len(ids) == 12


@pytest.mark.parametrize(("temperature", "top_p"), [(1.0, 1.0), (0.7, 0.9), (0.0, 1.0)])
def test_decode_logprobs_equal_a_fresh_forward(
    tiny_models: TinyModels, temperature: float, top_p: float
) -> None:
    student = load_hf_model(ModelSpec(str(tiny_models.teacher)), "student", CPU)
    torch.manual_seed(0)
    params = GenerationParams(max_new_tokens=12, temperature=temperature, top_p=top_p)
    generated = generate(student.model, student.tokenizer, PROMPTS * 2, params, batch_size=4)
    assert generated.completion_logprobs_BC is not None
    logits_BSV = next_token_logits(
        student.model, generated.input_ids_BT, generated.attention_mask_BT
    )
    fresh_BT = gather_logprobs(logits_BSV, generated.input_ids_BT, temperature or 1.0)
    fresh_BC = fresh_BT[:, generated.prompt_ids_BP.shape[1] :] * generated.completion_mask_BC
    assert torch.allclose(generated.completion_logprobs_BC, fresh_BC, atol=1e-5, rtol=0)


def test_decode_pads_after_the_stop_token_and_ends_when_all_rows_stopped(
    tiny_models: TinyModels,
) -> None:
    student = load_hf_model(ModelSpec(str(tiny_models.teacher)), "student", CPU)
    ids_BP = torch.tensor([[0, 5, 6], [5, 6, 7]])
    mask_BP = torch.tensor([[0, 1, 1], [1, 1, 1]])
    greedy = GenerationParams(max_new_tokens=6, temperature=0.0)
    ids_BC, _ = decode(student.model, ids_BP, mask_BP, greedy, stop_ids=[], pad_id=0)
    # stop on the token row 0 emits second: row 0 then pads, row 1 runs on to its own stop
    stop = int(ids_BC[0, 1])
    stopped_BC, logprobs_BC = decode(student.model, ids_BP, mask_BP, greedy, [stop], pad_id=0)
    first_B = [row.index(stop) if stop in row else None for row in ids_BC.tolist()]
    assert first_B[0] is not None and first_B[0] <= 1
    width = max(f + 1 if f is not None else 6 for f in first_B)
    assert stopped_BC.shape == (2, width)
    for row, first in enumerate(first_B):
        end = first + 1 if first is not None else 6
        assert stopped_BC[row, :end].tolist() == ids_BC[row, :end].tolist()
        assert stopped_BC[row, end:].tolist() == [0] * (width - end)
        assert torch.all(logprobs_BC[row, end:] == 0) and torch.all(logprobs_BC[row, :end] < 0)


@pytest.mark.parametrize(("temperature", "top_p"), [(0.0, 1.0), (1.0, 1.0), (0.8, 0.9)])
def test_finished_rows_leave_the_decode_batch_without_changing_any_token(
    tiny_models: TinyModels, temperature: float, top_p: float
) -> None:
    """Rows that stop leave the forward batch and the KV cache; a seed still gives the same
    tokens and log-probabilities as a loop that keeps every row to the end (``shrink_at=2``)."""
    student = load_hf_model(ModelSpec(str(tiny_models.teacher)), "student", CPU)
    torch.manual_seed(0)
    ids_BP = torch.randint(3, 40, (12, 5))
    mask_BP = torch.ones_like(ids_BP)
    mask_BP[::3, :2] = 0  # some rows left padded
    params = GenerationParams(max_new_tokens=16, temperature=temperature, top_p=top_p)

    def sample(shrink_at: float, stop_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(7)
        return decode(student.model, ids_BP, mask_BP, params, stop_ids, pad_id=0,
                      generator=generator, shrink_at=shrink_at)  # fmt: skip

    free_BC, _ = sample(2.0, [])
    # stop tokens the rows write at different steps, so rows end at many different steps
    stop_ids = sorted({int(free_BC[b, 1 + b % 12]) for b in range(0, 12, 3)})
    kept_BC, kept_lp_BC = sample(2.0, stop_ids)  # never shrinks: every row to the end
    lengths_B = completion_mask(kept_BC, stop_ids).sum(1)
    assert len(set(lengths_B.tolist())) >= 3, "the rows should end at different steps"
    for shrink_at in (0.0, 0.25, 0.5):  # 0: leave as soon as one row finished
        shrunk_BC, shrunk_lp_BC = sample(shrink_at, stop_ids)
        assert torch.equal(shrunk_BC, kept_BC)
        assert torch.allclose(shrunk_lp_BC, kept_lp_BC, atol=1e-5, rtol=0)


def test_teacher_equal_to_the_student_gives_zero_kl(tiny_models: TinyModels) -> None:
    student = load_hf_model(ModelSpec(str(tiny_models.teacher)), "student", CPU)
    ctx = FakeCtx(student)
    sampler = HFSampler(batch_size=3)
    sampler.setup(ctx)  # type: ignore[arg-type]
    batch = sampler.opd_sample_rollouts(prompts=PROMPTS, samples_per_prompt=1)

    class Hook:
        @staticmethod
        def opd_load_model(spec: ModelSpec, role: str, device: torch.device):  # type: ignore[no-untyped-def]
            return load_hf_model(spec, role, device)

    ctx.hook = Hook()
    teacher = HFTeacher(model={"path": str(tiny_models.teacher)}, batch_size=2)
    teacher.setup(ctx)  # type: ignore[arg-type]
    scores = teacher.opd_score_rollouts(rollouts=batch, top_k=3)
    assert torch.allclose(scores.logprobs_BT, batch.sampler_logprobs_BT, atol=1e-5)
    assert scores.topk_logprobs_BTK is not None and scores.topk_ids_BTK is not None
    assert scores.topk_ids_BTK.shape == (*batch.input_ids_BT.shape, 3)
    on = batch.completion_mask_BT.bool()
    # the sampled token's log-prob can never exceed the teacher's best token
    assert torch.all(scores.topk_logprobs_BTK[..., 0][on] >= scores.logprobs_BT[on] - 1e-5)


def test_template_mismatch_is_refused(tiny_models: TinyModels, tmp_path: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_models.teacher)
    other = AutoTokenizer.from_pretrained(tiny_models.teacher)
    other.chat_template = "{% for m in messages %}USER: {{ m['content'] }}\n{% endfor %}A:"
    check_same_rendering(tok, tok, PROMPTS[0])
    with pytest.raises(OPDError, match="render prompts differently"):
        check_same_rendering(tok, other, PROMPTS[0])


def test_vocabulary_mismatch_is_refused(tiny_models: TinyModels) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_models.teacher)
    other = AutoTokenizer.from_pretrained(tiny_models.teacher)
    other.add_tokens(["<extra_token>"])
    with pytest.raises(OPDError, match="different vocabularies"):
        check_same_vocabulary(tok, other)


def test_broken_model_folder_is_named(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(OPDError, match=f"The teacher model folder {tmp_path} could not be loaded"):
        load_hf_model(ModelSpec(str(tmp_path)), "teacher", CPU)
