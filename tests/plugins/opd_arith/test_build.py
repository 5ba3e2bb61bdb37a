"""The demo build: tokenizer, SFT, and the cached, atomic teacher/student build."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from opd_arith import build
from opd_arith.build import Architecture, DemoSpec, build_demo_models, evaluate_accuracy, make_model
from opd_arith.problems import make_problems
from opd_arith.sft import encode_sft_data, render_prompt, sft
from opd_arith.tokenizer import build_tokenizer

TINY_TEACHER = Architecture(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=16,
)
TINY_STUDENT = Architecture(
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=8,
)
TINY_SPEC = DemoSpec(
    num_train=200,
    teacher=TINY_TEACHER,
    student=TINY_STUDENT,
    teacher_steps=4,
    student_steps=2,
    batch_size=8,
)


def _tokenizer():  # type: ignore[no-untyped-def]
    problems = make_problems(200, seed=0)
    return build_tokenizer(f"{p.question} {p.solution}" for p in problems)


def test_tokenizer_renders_chat_and_round_trips(tmp_path: Path) -> None:
    build_tokenizer([p.solution for p in make_problems(50, seed=0)], tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert tokenizer.padding_side == "left"
    assert render_prompt(tokenizer, "5+(2*3)") == "<|bos|><|user|>5+(2*3)<|assistant|>"
    ids = tokenizer("2*3=6 5+6=11 #11", add_special_tokens=False)["input_ids"]
    assert len(ids) == len("2*3=6 5+6=11 #11")  # one token per character
    assert tokenizer.decode(ids) == "2*3=6 5+6=11 #11"
    batch = tokenizer(["1+2", "(1+2)*3"], padding=True, return_tensors="pt")
    assert batch["input_ids"][0, 0] == tokenizer.pad_token_id  # left padded
    assert {tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token} == {
        "<|bos|>",
        "<|eos|>",
        "<|pad|>",
    }


def test_sft_trains_on_solution_tokens_only_and_lowers_the_loss() -> None:
    tokenizer = _tokenizer()
    problems = make_problems(64, seed=0)
    data = encode_sft_data(tokenizer, problems)
    first = problems[0]
    prompt_len = len(tokenizer(render_prompt(tokenizer, first.question))["input_ids"])
    assert data.loss_mask_NT[0, :prompt_len].sum() == 0
    assert data.loss_mask_NT[0].sum() == len(first.solution) + 1  # solution + EOS
    model = make_model(TINY_TEACHER, tokenizer, seed=0)
    losses = sft(model, tokenizer, problems, steps=40, batch_size=16, lr=1e-2, progress=False)
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < 0.6 * losses[0]


def test_build_saves_reloadable_models_and_reuses_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = build_demo_models(TINY_SPEC, tmp_path, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == [TINY_SPEC.digest()]  # no temp leftovers
    teacher = AutoModelForCausalLM.from_pretrained(paths.teacher_dir)
    student = AutoModelForCausalLM.from_pretrained(paths.student_dir)
    tokenizer = AutoTokenizer.from_pretrained(paths.student_dir)
    assert AutoTokenizer.from_pretrained(paths.tokenizer_dir).get_vocab() == tokenizer.get_vocab()
    assert teacher.dtype == torch.float32 and tokenizer.padding_side == "left"
    assert student.num_parameters() < teacher.num_parameters()
    assert student.generation_config.pad_token_id == tokenizer.pad_token_id
    accuracy = evaluate_accuracy(student, tokenizer, TINY_SPEC.eval_problems(8), 8, 4)
    assert 0.0 <= accuracy <= 1.0

    def no_rebuild(*args: object) -> None:
        raise AssertionError("the cached entry should have been reused")

    monkeypatch.setattr(build, "_build_entry", no_rebuild)
    assert build_demo_models(TINY_SPEC, tmp_path, progress=False) == paths
    other = DemoSpec(num_train=100, teacher=TINY_TEACHER, student=TINY_STUDENT)
    assert other.digest() != TINY_SPEC.digest()


def test_an_interrupted_build_leaves_no_cache_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail_on_student(model: object, tokenizer: object, out_dir: Path) -> None:
        if out_dir.name == "student":
            raise KeyboardInterrupt
        out_dir.mkdir(parents=True)

    monkeypatch.setattr(build, "save_model", fail_on_student)
    with pytest.raises(KeyboardInterrupt):
        build_demo_models(TINY_SPEC, tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_build_leaves_the_callers_random_state_as_it_found_it(tmp_path: Path) -> None:
    """A run seeds, then loads its models: building them on a cold cache must not change what
    the run samples next (the agent test drew other episodes after a build than from cache)."""
    import random

    random.seed(7)
    torch.manual_seed(7)
    expected = (random.random(), torch.rand(3))
    random.seed(7)
    torch.manual_seed(7)
    build_demo_models(TINY_SPEC, tmp_path, progress=False)  # a cold cache: SFT draws batches
    assert (random.random(), torch.rand(3)) == (expected[0], pytest.approx(expected[1]))


def test_sft_stops_at_the_first_check_that_says_so() -> None:
    tokenizer = _tokenizer()
    model = make_model(TINY_STUDENT, tokenizer, seed=0)
    checked: list[int] = []

    def stop_when(step: int) -> bool:
        checked.append(step)
        assert not model.training  # checks see the model in eval mode
        return step >= 6

    problems = make_problems(40, seed=0)
    losses = sft(model, tokenizer, problems, steps=20, batch_size=4, progress=False,
                 stop_when=stop_when, check_every=3)  # fmt: skip
    assert checked == [3, 6]
    assert len(losses) == 6
    assert not model.training


def test_validation_problems_are_unseen_training_split_problems() -> None:
    spec = DemoSpec(num_train=300, num_validation=50)
    validation = spec.validation_problems()
    assert len(validation) == 50
    assert not {p.question for p in validation} & {p.question for p in spec.train_problems()}
    assert not {p.question for p in validation} & {p.question for p in spec.eval_problems(200)}


def test_the_student_build_stops_at_its_target_accuracy(tmp_path: Path) -> None:
    # target 0: the first check (step check_every) already reaches it
    spec = DemoSpec(
        num_train=200, teacher=TINY_TEACHER, student=TINY_STUDENT, teacher_steps=2,
        student_steps=30, batch_size=8, student_target_accuracy=0.0, num_validation=20,
        check_every=5,
    )  # fmt: skip
    paths = build_demo_models(spec, tmp_path, progress=False)
    info = json.loads((paths.student_dir.parent / "build_info.json").read_text())
    assert info["student"]["steps"] == 5
    assert info["student"]["validation_accuracy"] == 0.0
    assert info["teacher"]["steps"] == 2


def test_the_demos_build_keeps_its_cache_entry() -> None:
    """A spec without shown solutions names the entry it named before the field existed."""
    assert DemoSpec().digest() == "e1e78f810a598de3"
    assert DemoSpec(student_context_fraction=0.5).digest() != DemoSpec().digest()


def test_some_student_examples_show_the_solution_as_teacher_context_does() -> None:
    spec = DemoSpec(num_train=200, student_context_fraction=0.25)
    problems, contexts = spec.student_sft_data()
    assert len(problems) == 250 and problems[:200] == spec.train_problems()
    assert contexts[:200] == [None] * 200
    assert contexts[200:] == [p.solution for p in problems[:50]]
    assert DemoSpec(num_train=200).student_sft_data()[0] == spec.train_problems()
    tokenizer = _tokenizer()
    shown = render_prompt(tokenizer, "5+(2*3)", "2*3=6 5+6=11 #11")
    assert shown == "<|bos|><|system|>2*3=6 5+6=11 #11<|user|>5+(2*3)<|assistant|>"
    data = encode_sft_data(tokenizer, problems[:2], [None, problems[1].solution])
    q, solution = problems[1].question, problems[1].solution
    prompt_len = int(data.attention_mask_NT[1].sum()) - len(solution) - 1
    assert prompt_len == len(f"{q}{solution}") + 4  # one token per character, 4 special tokens
    assert data.loss_mask_NT[1].sum() == len(problems[1].solution) + 1  # still only the answer
    with pytest.raises(ValueError, match="1 contexts for 2 problems"):
        encode_sft_data(tokenizer, problems[:2], [None])
