"""The calculator environment: calls parsed and answered, answers graded, prefix replay."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from opd_agent.calculator import calculate, parse_turn
from opd_agent.environment import CalculatorEnvironment, CalculatorState
from opd_agent.problems import ToolProblem, ToolTaskSpec, to_prompt
from opd_arith.problems import ArithmeticProblem, split_of
from opd_core import EnvReply, OPDError, Prompt

PROBLEM = ToolProblem.of(ArithmeticProblem("(37*58)+64", "2210", "37*58=2146 2146+64=2210 #2210"))


def prompt() -> Prompt:
    return to_prompt(PROBLEM, "train", 0)


def step(env: CalculatorEnvironment, reply: str, turn: int = 1) -> EnvReply:
    return env.opd_step_episode(prompt=prompt(), state=CalculatorState(), reply=reply, turn=turn)


@pytest.mark.parametrize(
    ("expression", "value"),
    [("37*58", 2146), (" 2146 + 64 ", 2210), ("64-70", -6), ("0*99", 0), ("123456*2", 246912)],
)
def test_the_calculator_computes_one_operation(expression: str, value: int) -> None:
    assert calculate(expression) == value


@pytest.mark.parametrize(
    "expression", ["", "37", "37*58+1", "(37*58)", "37/58", "-3*4", "1234567*2", "a*b", "3**4"]
)
def test_the_calculator_refuses_anything_but_one_operation(expression: str) -> None:
    assert calculate(expression) is None


def test_a_valid_call_is_answered_with_its_result_as_a_tool_message() -> None:
    reply = step(CalculatorEnvironment(), "<calc>37*58</calc>")
    assert reply.messages == ({"role": "tool", "content": "2146"},)
    assert not reply.done and reply.reward == 0.0
    assert reply.counts == {"tool_calls": 1.0, "invalid_calls": 0.0, "replayed_turns": 0.0}


@pytest.mark.parametrize(
    "text", ["<calc>37*58", "<calc>37*58+64</calc>", "<calc></calc>", "<calc>x</calc>#2210"]
)
def test_an_invalid_call_is_counted_and_answered_with_an_error(text: str) -> None:
    reply = step(CalculatorEnvironment(), text, turn=2)
    assert reply.messages == ({"role": "tool", "content": "error"},)
    assert not reply.done
    assert reply.counts["tool_calls"] == 1.0 and reply.counts["invalid_calls"] == 1.0


@pytest.mark.parametrize(
    ("text", "reward"),
    [("#2210", 1.0), ("2146+64=2210 #2210", 1.0), ("#2211", 0.0), ("2210", 0.0), ("", 0.0)],
)
def test_a_turn_without_a_call_ends_the_episode_graded_by_its_final_answer(
    text: str, reward: float
) -> None:
    reply = step(CalculatorEnvironment(), text, turn=3)
    assert reply.done and reply.reward == reward and reply.messages == ()
    assert reply.counts["tool_calls"] == 0.0


def test_the_reference_episode_solves_the_problem() -> None:
    env = CalculatorEnvironment()
    start = env.opd_start_episode(prompt=prompt())
    assert start.messages == prompt().messages
    turns = PROBLEM.trajectory()
    state, rewards = start.state, []
    for turn, i in enumerate(range(0, len(turns), 2), start=1):
        reply = env.opd_step_episode(
            prompt=prompt(), state=state, reply=turns[i]["content"], turn=turn
        )
        if i + 1 < len(turns):
            assert reply.messages == (turns[i + 1],)
        state = reply.state
        rewards.append(reply.reward)
    assert rewards == [0.0, 0.0, 1.0] and reply.done


def test_a_foreign_state_is_one_sentence() -> None:
    with pytest.raises(OPDError, match="not the one its opd_start_episode opened"):
        CalculatorEnvironment().opd_step_episode(prompt=prompt(), state=None, reply="#1", turn=1)


def test_problems_need_the_tool_and_splits_are_disjoint() -> None:
    spec = ToolTaskSpec()
    train, held_out = spec.problems(200, 0, "train"), spec.problems(200, 0, "eval")
    assert not {p.question for p in train} & {p.question for p in held_out}
    assert all(split_of(p.question) == "eval" for p in held_out)
    for p in train:
        assert len(p.steps) == spec.num_ops
        assert any("*" in e and all(int(x) >= 10 for x in e.split("*")) for e, _ in p.steps)
        assert p.steps[-1][1] == p.answer
        assert all(calculate(e) == int(r) for e, r in p.steps)
    assert train[:50] == spec.problems(50, 0, "train")  # a smaller pool is a prefix


def write_teacher_episodes(path: Path) -> None:
    turns = list(PROBLEM.trajectory())
    records = [
        {"question": "(37*58)+64", "turns": turns, "reward": 1.0},
        {"question": "(11*12)+1", "turns": turns, "reward": 0.0},  # failed: never replayed
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_prefix_replay_opens_episodes_after_a_prefix_of_the_teachers_episode(
    tmp_path: Path,
) -> None:
    write_teacher_episodes(tmp_path / "teacher.jsonl")
    env = CalculatorEnvironment(prefix_replay=1.0, replay_from=str(tmp_path / "teacher.jsonl"))
    teacher = env.teacher_turns()["(37*58)+64"]
    prefixes = set()
    for _ in range(40):
        start = env.opd_start_episode(prompt=prompt())
        k = start.state.replayed
        assert 1 <= k <= 2  # whole calls with their results, never the final answer
        assert start.messages == (*prompt().messages, *teacher[: 2 * k])
        assert start.messages[-1]["role"] == "tool"
        prefixes.add(k)
        first = env.opd_step_episode(prompt=prompt(), state=start.state, reply="#2210", turn=1)
        assert first.counts["replayed_turns"] == k and first.reward == 1.0
    assert prefixes == {1, 2}


def test_prefix_replay_leaves_unsolved_and_held_out_questions_and_vanilla_runs_alone(
    tmp_path: Path,
) -> None:
    write_teacher_episodes(tmp_path / "teacher.jsonl")
    replay = CalculatorEnvironment(prefix_replay=1.0, replay_from=str(tmp_path / "teacher.jsonl"))
    failed = Prompt(id="x", messages=({"role": "user", "content": "(11*12)+1"},), answer="133")
    unseen = Prompt(id="y", messages=({"role": "user", "content": "(12*13)+1"},), answer="157")
    for p in (failed, unseen):
        start = replay.opd_start_episode(prompt=p)
        assert start.messages == p.messages and start.state == CalculatorState()
    vanilla = CalculatorEnvironment(replay_from="/nonexistent")  # never read without replay
    assert vanilla.opd_start_episode(prompt=prompt()).messages == prompt().messages


def test_half_replay_replays_about_half_the_episodes(tmp_path: Path) -> None:
    write_teacher_episodes(tmp_path / "teacher.jsonl")
    env = CalculatorEnvironment(
        prefix_replay=0.5, replay_from=str(tmp_path / "teacher.jsonl"), seed=3
    )
    replayed = [env.opd_start_episode(prompt=prompt()).state.replayed > 0 for _ in range(400)]
    assert 160 < sum(replayed) < 240


def test_bad_options_are_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"prefix_replay must be in \[0, 1\]"):
        CalculatorEnvironment(prefix_replay=1.5)
    env = CalculatorEnvironment(prefix_replay=0.5, replay_from=str(tmp_path / "missing.jsonl"))
    with pytest.raises(OPDError, match="is not a file"):
        env.opd_start_episode(prompt=prompt())


def test_parse_turn_reads_calls_and_answers() -> None:
    assert parse_turn("<calc>2*3</calc>").result == "6"
    assert parse_turn("noise <calc>2*3</calc> more").kind == "call"
    assert parse_turn("#12").answer == "12" and parse_turn("no answer").answer is None


def test_the_replay_draws_resume_from_the_state_dict(tmp_path: Path) -> None:
    write_teacher_episodes(tmp_path / "teacher.jsonl")
    env = CalculatorEnvironment(prefix_replay=0.5, replay_from=str(tmp_path / "teacher.jsonl"))
    for _ in range(7):
        env.opd_start_episode(prompt=prompt())
    saved = json.loads(json.dumps(env.state_dict()))  # lists, as a checkpoint may give back
    ahead = [env.opd_start_episode(prompt=prompt()).state for _ in range(20)]
    resumed = CalculatorEnvironment(prefix_replay=0.5, replay_from=str(tmp_path / "teacher.jsonl"))
    resumed.load_state_dict(saved)
    assert [resumed.opd_start_episode(prompt=prompt()).state for _ in range(20)] == ahead
