"""Multi-turn rollouts (opd_core.episodes; environments answer opd_start_episode and
opd_step_episode) on the tiny demo models: the token identity on every
turn boundary, the masks, the teacher scoring the same ids, the budgets, bad environments."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest
import torch

import episode_envs
from conftest import TinyModels
from episode_envs import Recorder, check_token_identity, rows
from opd_core import GenerationParams, OPDError, Prompt
from opd_core.config import EpisodeConfig, ModelSpec
from opd_core.episodes import (
    EnvironmentCalls,
    EpisodeRunner,
    SampledTurn,
    TurnRequest,
    run_text_episodes,
)
from opd_core.flops import ModelShape, rollout_flops
from opd_core.modeling import LoadedModel, gather_logprobs
from opd_core.plugin_manager import make_plugin_manager
from opd_core.rollouts import eos_ids
from opd_hf.generation import HFGenerator
from opd_hf.loading import load_hf_model

CPU = torch.device("cpu")
PROMPTS = [
    Prompt(id=str(i), messages=({"role": "user", "content": q},))
    for i, q in enumerate(["1+2", "(3*4)-5", "9"])
]


@pytest.fixture(scope="module")
def student(tiny_models: TinyModels) -> LoadedModel:
    return load_hf_model(ModelSpec(str(tiny_models.student)), "student", CPU)


@pytest.fixture(scope="module")
def teacher(tiny_models: TinyModels) -> LoadedModel:
    return load_hf_model(ModelSpec(str(tiny_models.teacher)), "teacher", CPU)


def asked(b: int, turn: int) -> tuple[dict[str, str], ...]:
    """What ``Followups`` answers turn ``turn`` with."""
    return ({"role": "user", "content": f"{turn}+1"},)


def runner(
    env: Any,
    loaded: LoadedModel,
    max_new_tokens: int = 6,
    max_turns: int = 3,
    max_tokens: int | None = None,
    max_length: int | None = None,
) -> EpisodeRunner:
    pm = make_plugin_manager([env])
    return EpisodeRunner(
        EnvironmentCalls(pm.hook, type(env).__name__.lower()),
        loaded.tokenizer,
        eos_ids(loaded.model, loaded.tokenizer),
        max_new_tokens,
        EpisodeConfig(max_turns=max_turns, max_tokens=max_tokens),
        max_length,
    )


@pytest.mark.parametrize("writer", ["student", "teacher"])
def test_every_turn_boundary_is_token_exact_with_the_demo_tokenizer(
    writer: str, request: pytest.FixtureRequest
) -> None:
    """The random student's turns are cut by their budget (the end of turn is appended); the
    trained teacher, sampling as the student would, ends its turns with EOS."""
    loaded: LoadedModel = request.getfixturevalue(writer)
    torch.manual_seed(0)
    recorder = Recorder(loaded)
    max_new_tokens = 6 if writer == "student" else 24
    run = runner(episode_envs.Followups(turns=3), loaded, max_new_tokens, max_turns=3)
    batch = run.run(PROMPTS, 2, recorder)
    assert batch.episodes is not None and len(batch.episodes) == 6
    assert batch.group_ids_B.tolist() == [0, 0, 1, 1, 2, 2]
    boundaries = check_token_identity(batch, recorder, loaded.tokenizer, asked)
    assert boundaries == 12  # three-turn episodes: two boundaries each
    eos = loaded.tokenizer.eos_token_id
    ended = sum(turn.token_ids[-1] == eos for _, turns in recorder.calls for turn in turns)
    assert ended == (0 if writer == "student" else 18), ended
    for e in batch.episodes:
        assert e.turns == 3 and e.end == "done"
        assert e.counts == {"turns_seen": 3.0, "asks": 2.0}
        assert e.reward in (0.5, 1.5)
    # turns 2 and 3 continued from the whole history: each request held every earlier token
    for requests, _ in recorder.calls[1:]:
        for request in requests:
            row = rows(batch)[request.episode]
            assert row[: len(request.token_ids)] == list(request.token_ids)


def test_a_turn_cut_by_its_token_budget_gets_the_end_of_turn_as_environment_tokens(
    student: LoadedModel,
) -> None:
    torch.manual_seed(1)
    recorder = Recorder(student)
    eos = student.tokenizer.eos_token_id
    run = runner(episode_envs.Followups(turns=2), student, max_new_tokens=2, max_turns=2)
    batch = run.run(PROMPTS, 2, recorder)
    check_token_identity(batch, recorder, student.tokenizer, asked)
    cut = 0
    for requests, turns in recorder.calls[:1]:
        for request, turn in zip(requests, turns, strict=True):
            if eos in turn.token_ids:
                continue
            cut += 1
            row = batch.input_ids_BT[request.episode, batch.prompt_len :]
            student_R = batch.completion_mask_BT[request.episode, batch.prompt_len :]
            first_env = int(student_R.tolist().index(0))
            assert row[first_env].item() == eos  # the end of turn, not sampled, masked out
    assert cut > 0


def test_budgets_cut_episodes_and_say_which(student: LoadedModel) -> None:
    torch.manual_seed(2)
    never = episode_envs.Followups(turns=0)
    batch = runner(never, student, max_turns=2).run(PROMPTS, 1, Recorder(student))
    assert [e.end for e in batch.episodes or ()] == ["max_turns"] * 3
    assert all(e.turns == 2 and e.budget_cut for e in batch.episodes or ())

    batch = runner(never, student, max_new_tokens=4, max_turns=50, max_tokens=20).run(
        PROMPTS, 1, Recorder(student)
    )
    for b, e in enumerate(batch.episodes or ()):
        assert e.end == "max_tokens" and e.budget_cut
        assert int(batch.attention_mask_BT[b, batch.prompt_len :].sum()) <= 20

    limit = 40
    batch = runner(never, student, max_new_tokens=4, max_turns=50, max_length=limit).run(
        PROMPTS, 1, Recorder(student)
    )
    for row, e in zip(rows(batch), batch.episodes or (), strict=True):
        assert e.end == "context" and len(row) <= limit


@pytest.mark.parametrize(
    ("how", "message"),
    [
        (
            "raise",
            r"Environment 'broken' failed answering turn 1 for prompt '0' "
            r"\(ZeroDivisionError: division by zero\)",
        ),
        ("start_raises", r"failed opening the episode for prompt '0' \(KeyError: 'tools'\)"),
        ("no_start", r"opened no episode for prompt '0'"),
        (
            "not_a_reply",
            r"answered the episode of prompt '0', turn 1 with a dict; "
            "opd_step_episode must return an opd_core.EnvReply",
        ),
        (
            "bad_messages",
            r"Message 0 of the episode of prompt '0', turn 1's observation is "
            r"\{'role': 'user'\}; each message must be a dict with a string 'role' and a string",
        ),
        ("string_messages", r"observation are a str, not a list of messages"),
        ("nan_reward", r"the reward nan; EnvReply.reward must be finite"),
        ("bad_role", r"cannot render the environment's observation \(roles: robot\)"),
    ],
)
def test_a_bad_environment_is_one_sentence(student: LoadedModel, how: str, message: str) -> None:
    run = runner(episode_envs.Broken(how=how), student)
    run.env.name = "broken"
    with pytest.raises(OPDError, match=message) as caught:
        run.run(PROMPTS[:1], 1, Recorder(student))
    assert "\n" not in str(caught.value)


def test_the_teacher_scores_the_identical_token_sequence(
    student: LoadedModel, teacher: LoadedModel
) -> None:
    from opd_hf.teacher import HFTeacher

    torch.manual_seed(3)
    batch = runner(episode_envs.Followups(turns=3), student).run(PROMPTS, 2, Recorder(student))
    scorer = HFTeacher(model={"path": "unused"})
    scorer.loaded = teacher
    scores = scorer.opd_score_rollouts(rollouts=batch, top_k=3)
    assert scores.topk_logprobs_BTK is not None
    mask_BT = batch.completion_mask_BT.bool()
    for b, row in enumerate(rows(batch)):
        ids = torch.tensor([row])
        with torch.no_grad():
            logits = teacher.model(input_ids=ids).logits.float()
        manual_T = gather_logprobs(logits[:, :-1], ids)[0]
        pad = (
            batch.input_ids_BT.shape[1]
            - len(row)
            - int((~batch.attention_mask_BT[b, : batch.prompt_len].bool()).sum())
        )
        real_T = batch.attention_mask_BT[b].bool()
        assert pad >= 0
        got_T = scores.logprobs_BT[b][real_T]
        student_T = mask_BT[b][real_T]
        assert torch.allclose(got_T[student_T], manual_T[student_T], atol=1e-5)
        assert (got_T[~student_T] == 0).all()  # prompt and environment tokens carry no score
        assert (scores.topk_logprobs_BTK[b][real_T][~student_T] == 0).all()


def test_flops_charge_environment_tokens_as_prefill(student: LoadedModel) -> None:
    torch.manual_seed(4)
    batch = runner(episode_envs.Followups(turns=3), student).run(PROMPTS, 1, Recorder(student))
    shape = ModelShape.of(student.model)
    flops = rollout_flops(batch, shape, shape, scored=True)
    prompt_B, sampled_B = batch.sequence_lengths()
    total_B = batch.attention_mask_BT.sum(1)
    region_B = total_B - prompt_B
    assert (region_B > sampled_B).all()  # environment tokens are in the region
    n, h = shape.matmul_params, shape.head_params
    fed = (total_B - 1).double()
    linear = (2 * n * fed - 2 * h * (fed - sampled_B.double())).sum()
    attention = shape.generation_flops(prompt_B, region_B) - float(
        (2 * n * fed - 2 * h * (prompt_B.double() - 1)).sum()
    )
    assert flops.student_sampling == pytest.approx(float(linear) + attention, rel=1e-12)
    # sampling charges the LM head once per sampled token, not per environment token
    assert flops.student_sampling < shape.generation_flops(prompt_B, region_B)
    assert flops.teacher_scoring == shape.forward_flops(total_B, region_B)
    assert flops.student_training == shape.training_flops(total_B, region_B)


def test_single_turn_flops_are_unchanged(student: LoadedModel) -> None:
    """The single-turn formula as it was before environments, to the last bit."""
    from opd_core.rollouts import sampled_rollout_batch
    from opd_hf.generation import generate

    torch.manual_seed(5)
    generated = generate(
        student.model, student.tokenizer, PROMPTS, GenerationParams(max_new_tokens=6), 8
    )
    batch = sampled_rollout_batch(PROMPTS, 1, generated, student.tokenizer)
    shape = ModelShape.of(student.model)
    prompt_B, completion_B = batch.sequence_lengths()
    prompt, steps = prompt_B.double(), (completion_B.double() - 1).clamp(min=0)
    linear = 2.0 * shape.matmul_params * (prompt + steps) - 2.0 * shape.head_params * (prompt - 1)
    keys = steps * prompt + steps * (steps + 1) / 2
    attention = 4.0 * shape.layers * shape.attention_width * (prompt**2 + keys)
    before = float((linear + attention).sum())
    flops = rollout_flops(batch, shape, shape, scored=True)
    assert flops.student_sampling == before
    total_B = prompt_B + completion_B
    assert flops.student_training == shape.training_flops(total_B, completion_B)
    assert flops.teacher_scoring == shape.forward_flops(total_B, completion_B)


def test_text_episodes_run_a_generator_turn_by_turn(student: LoadedModel) -> None:
    pm = make_plugin_manager([episode_envs.Followups(turns=3)])
    generator = HFGenerator("student", student.model, student.tokenizer, 8)
    episodes = run_text_episodes(
        EnvironmentCalls(pm.hook, "followups"),
        generator,
        PROMPTS,
        GenerationParams(max_new_tokens=4, temperature=0.0),
        max_turns=2,
    )
    assert [e.summary.end for e in episodes] == ["max_turns"] * 3
    for e in episodes:
        roles = [m["role"] for m in e.messages]
        assert roles == ["user", "assistant", "user", "assistant"]
        assert e.messages[2]["content"] == "1+1"


def test_a_context_teacher_sees_its_context_before_the_whole_episode(
    student: LoadedModel, teacher: LoadedModel
) -> None:
    """teacher=context on multi-turn rows: the teacher scores every student token of every turn
    after the context-rendered prompt and the same turns (environment tokens included)."""
    from opd_context.teacher import ContextTeacher
    from opd_core.modeling import encode_prompts
    from opd_hf.teacher import HFTeacher

    torch.manual_seed(6)
    hinted = [replace(p, teacher_context="The answer is short.") for p in PROMPTS]
    env = episode_envs.Followups(turns=3, system="Answer briefly.")
    batch = runner(env, student).run(hinted, 1, Recorder(student))
    assert batch.prompts[0].messages[0] == {"role": "system", "content": "Answer briefly."}
    inner = HFTeacher(model={"path": "unused"})
    inner.loaded = teacher
    scorer = ContextTeacher(inner={"name": "hf"})
    scorer.inner, scorer.tokenizer = inner, student.tokenizer
    scores = scorer.opd_score_rollouts(rollouts=batch, top_k=2)
    context_ids_BP, context_mask_BP = encode_prompts(
        student.tokenizer, [scorer.teacher_prompt(p) for p in batch.prompts]
    )
    for b in range(batch.batch_size):
        region = batch.input_ids_BT[b, batch.prompt_len :][
            batch.attention_mask_BT[b, batch.prompt_len :].bool()
        ]
        prompt = context_ids_BP[b][context_mask_BP[b].bool()]
        assert "The answer is short.\n\nAnswer briefly." in student.tokenizer.decode(prompt)
        ids = torch.cat([prompt, region])[None]
        with torch.no_grad():
            manual = gather_logprobs(teacher.model(input_ids=ids).logits.float()[:, :-1], ids)[0]
        student_R = batch.completion_mask_BT[b, batch.prompt_len :].bool()
        got_R = scores.logprobs_BT[b, batch.prompt_len :][student_R]
        want_R = manual[len(prompt) :][student_R[: len(region)]]
        assert torch.allclose(got_R, want_R, atol=1e-5)


def test_a_turn_marked_untrained_is_context_only(student: LoadedModel) -> None:
    """A sampler may write a turn into the episode that is not trained on (a teacher's
    intervention, a replayed prefix): attended, masked out like the environment's tokens."""
    recorder = Recorder(student)

    def first_turn_untrained(requests: Sequence[TurnRequest]) -> list[SampledTurn]:
        return [
            replace(turn, trained=request.turn != 1)
            for request, turn in zip(requests, recorder(requests), strict=True)
        ]

    torch.manual_seed(7)
    batch = runner(episode_envs.Followups(turns=2), student).run(PROMPTS, 1, first_turn_untrained)
    for b in range(batch.batch_size):
        (_, first_turns), (_, second_turns) = recorder.calls
        student_R = batch.completion_mask_BT[b, batch.prompt_len :]
        region_R = batch.input_ids_BT[b, batch.prompt_len :]
        first = list(first_turns[b].token_ids[:6])
        assert region_R[: len(first)].tolist() == first and student_R[: len(first)].sum() == 0
        assert region_R[student_R.bool()].tolist() == list(second_turns[b].token_ids[:6])
        assert batch.episodes is not None and batch.episodes[b].turns == 2
