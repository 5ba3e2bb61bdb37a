"""Build (or reuse) the tool-use demo's tokenizer, teacher and student, fully offline.

Like the arithmetic demo's build (``opd_arith.build``, whose model shapes, SFT loop and cache
it reuses): a tokenizer with a ``tool`` role and one token each for ``<calc>`` and ``</calc>``;
a teacher (the demo teacher's shape) trained by SFT on the reference tool-use episodes until it
solves nearly all of them; a smaller student given a short SFT on the same episodes, stopped once
it solves ``student_target_success`` of unseen training episodes (mid-climb, as the demo's
student is); a no-tool model (the student's shape, the full SFT budget) trained on the demo's
worked solutions, computed in the head, which shows the tool is needed; and the teacher's greedy
episodes on the task's training questions, for prefix replay.

Everything lands in ``cache_dir/<hash of the spec>/``, built once (``build_cached``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from opd_agent.environment import CalculatorEnvironment, write_replays
from opd_agent.problems import (
    CALL_CLOSE,
    CALL_OPEN,
    TOOL_ROLE,
    ToolProblem,
    ToolTaskSpec,
    to_prompt,
)
from opd_arith.build import Architecture, build_cached, make_model, num_params, save_model
from opd_arith.sft import SFTData, sft, train_on
from opd_arith.tokenizer import ROLES, build_tokenizer
from opd_core.api import (
    ChatMessage,
    EnvironmentCalls,
    GenerationParams,
    TextEpisode,
    run_text_episodes,
)

BUILD_FORMAT_VERSION = 1
"""Bumped when the build's code changes what a spec produces, so stale cache entries are unused."""


@dataclass(frozen=True)
class AgentSpec:
    """Every knob of the tool-use demo's build; its hash names the cache entry."""

    task: ToolTaskSpec = field(default_factory=ToolTaskSpec)
    num_train: int = 8000
    """Distinct training problems (SFT data of every model)."""
    vocab_size: int = 320
    teacher: Architecture = field(
        default_factory=lambda: Architecture(128, 512, 3, 4, 2, 32, max_position_embeddings=160)
    )
    student: Architecture = field(
        default_factory=lambda: Architecture(96, 384, 2, 4, 2, 24, max_position_embeddings=160)
    )
    teacher_steps: int = 1500
    """At most this many teacher SFT steps (the learning-rate schedule spans them all)."""
    teacher_lr: float = 3e-3
    teacher_target_success: float | None = 0.97
    """The teacher's SFT stops at the first check where it solves this share of the validation
    episodes. Learning to copy numbers between turns comes after a plateau whose length varies
    (one tuning run: 97% at step 450 of 1500; a 600-step schedule ended at 70%), so the teacher
    trains until it is good rather than for a fixed number of steps."""
    student_steps: int = 1500
    """At most this many student SFT steps (the learning-rate schedule spans them all)."""
    student_lr: float = 3e-3
    student_target_success: float | None = 0.4
    """The student's SFT stops at the first check where it solves this share of
    ``num_validation`` unseen training episodes (None: all steps)."""
    notool_steps: int = 600
    """SFT steps of the no-tool model (the student's shape, worked solutions, no calculator;
    the arithmetic demo's teacher learns its one-digit version in 500)."""
    num_validation: int = 200
    check_every: int = 20
    """Student SFT steps between validation checks (the teacher's: ``teacher_check_every``)."""
    teacher_check_every: int = 50
    batch_size: int = 64
    seed: int = 0
    num_replays: int = 4000
    """The teacher's episodes are recorded on this many training questions (the task's pool)."""
    max_turns: int = 8
    max_new_tokens: int = 24
    """Tokens per assistant turn while building (a call is at most 15)."""

    def train_problems(self) -> list[ToolProblem]:
        """The SFT training problems (the task's training prompts are their first ones)."""
        return self.task.problems(self.num_train, self.seed, "train")

    def validation_problems(self) -> list[ToolProblem]:
        """``num_validation`` training-split problems that are not SFT data (the held-out split
        is never looked at while building)."""
        seen = {p.question for p in self.train_problems()}
        pool = self.task.problems(self.num_train + 4 * self.num_validation, self.seed + 1, "train")
        fresh = [p for p in pool if p.question not in seen]
        if len(fresh) < self.num_validation:
            raise ValueError(
                f"only {len(fresh)} unseen training problems for validation; lower num_train"
            )
        return fresh[: self.num_validation]

    def eval_problems(self, n: int, seed: int | None = None) -> list[ToolProblem]:
        """``n`` held-out problems (disjoint from every training problem)."""
        return self.task.problems(n, self.seed if seed is None else seed, "eval")

    def params(self) -> GenerationParams:
        """Greedy decoding of one turn."""
        return GenerationParams(max_new_tokens=self.max_new_tokens, temperature=0.0)

    def digest(self) -> str:
        """A short hash of the spec (and build format) naming its cache entry."""
        payload = json.dumps(
            {"format": BUILD_FORMAT_VERSION, **dataclasses.asdict(self)}, sort_keys=True
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class AgentPaths:
    """Where a built tool-use demo lives; each model folder also holds the tokenizer."""

    root: Path
    tokenizer_dir: Path
    teacher_dir: Path
    student_dir: Path
    notool_dir: Path
    trajectories: Path
    """The teacher's greedy episodes on the training questions (JSONL, for prefix replay)."""


def agent_paths(root: Path) -> AgentPaths:
    """The folders of a cache entry rooted at ``root``."""
    return AgentPaths(
        root, root / "tokenizer", root / "teacher", root / "student", root / "student_notool",
        root / "teacher_episodes.jsonl",
    )  # fmt: skip


def encode_conversations(
    tokenizer: PreTrainedTokenizerBase, conversations: Sequence[Sequence[ChatMessage]]
) -> SFTData:
    """Tokenize whole conversations as the chat template renders them, right padded, with the
    loss on the assistant turns' tokens and their EOS only (never the question or a tool
    result)."""

    def render(messages: Sequence[ChatMessage], generation_prompt: bool = False) -> str:
        return str(
            tokenizer.apply_chat_template(
                [dict(m) for m in messages],
                add_generation_prompt=generation_prompt,
                tokenize=False,
            )
        )

    def ids(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    rows: list[torch.Tensor] = []
    masks: list[torch.Tensor] = []
    for conversation in conversations:
        if not conversation or conversation[0]["role"] == "assistant":
            raise ValueError("a conversation to train on opens with a question, not an answer")
        opening = render(conversation[:1])
        header = render(conversation[:1], True)[len(opening) :]  # what opens an assistant turn
        tokens = ids(opening)
        mask = [0.0] * len(tokens)
        for i, message in enumerate(conversation[1:], start=1):
            segment = render(conversation[: i + 1])[len(render(conversation[:i])) :]
            if message["role"] == "assistant":
                head, body = ids(header), ids(segment[len(header) :])
                tokens += head + body
                mask += [0.0] * len(head) + [1.0] * len(body)
            else:
                tokens += ids(segment)
                mask += [0.0] * len(ids(segment))
        rows.append(torch.tensor(tokens))
        masks.append(torch.tensor(mask))
    pad = tokenizer.pad_token_id
    input_ids_NT = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=pad)
    loss_mask_NT = torch.nn.utils.rnn.pad_sequence(masks, batch_first=True, padding_value=0.0)
    lengths_N = torch.tensor([len(r) for r in rows])
    attention_mask_NT = (torch.arange(input_ids_NT.shape[1])[None, :] < lengths_N[:, None]).long()
    return SFTData(input_ids_NT, attention_mask_NT, loss_mask_NT)


def episode_conversation(problem: ToolProblem) -> list[ChatMessage]:
    """The reference episode of ``problem``: question, calls, results, answer."""
    return [{"role": "user", "content": problem.question}, *problem.trajectory()]


def play(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    problems: Sequence[ToolProblem],
    spec: AgentSpec,
    split: str = "train",
    batch_size: int = 100,
) -> list[TextEpisode]:
    """Greedy episodes of ``model`` with the calculator on ``problems`` (no replay), at the text
    level as ``evaluator=[episode_success]`` runs them."""
    from opd_hf.generation import HFGenerator

    generator = HFGenerator("model", model, tokenizer, batch_size)
    prompts = [to_prompt(p, split, i) for i, p in enumerate(problems)]
    environment = EnvironmentCalls(CalculatorEnvironment(), "calculator")
    was_training = model.training
    model.eval()
    episodes = run_text_episodes(environment, generator, prompts, spec.params(), spec.max_turns)
    model.train(was_training)
    return episodes


def success_rate(episodes: Sequence[TextEpisode]) -> float:
    """The share of ``episodes`` solved (reward 1)."""
    return sum(e.summary.reward >= 1.0 for e in episodes) / max(1, len(episodes))


def _train(
    name: str,
    shape: Architecture,
    steps: int,
    lr: float,
    spec: AgentSpec,
    tokenizer: PreTrainedTokenizerBase,
    data: SFTData,
    progress: bool,
    target_success: float | None = None,
    check_every: int = 20,
) -> tuple[PreTrainedModel, dict[str, float]]:
    """Random-init a model of ``shape`` and SFT it on ``data``; with ``target_success`` stop
    once it solves that share of the validation episodes. Returns it with a summary."""
    model = make_model(shape, tokenizer, seed=spec.seed)
    checks: dict[int, float] = {}
    stop_when = None
    if target_success is not None:
        validation = spec.validation_problems()

        def stop_when(step: int) -> bool:
            checks[step] = success_rate(play(model, tokenizer, validation, spec))
            if progress:
                print(f"[{name}] step {step}: validation success {checks[step]:.1%}", flush=True)
            return checks[step] >= target_success

    if progress:
        print(
            f"[opd_agent] {name}: {num_params(model) / 1e6:.2f}M params, {steps} SFT steps",
            flush=True,
        )
    start = time.perf_counter()
    losses = train_on(
        model, data, steps, spec.batch_size, lr, spec.seed, progress=progress, name=name,
        stop_when=stop_when, check_every=check_every,
    )  # fmt: skip
    summary = {
        "params": float(num_params(model)),
        "seconds": time.perf_counter() - start,
        "steps": float(len(losses)),
        "final_loss": sum(losses[-10:]) / max(1, len(losses[-10:])),
    }
    if checks:
        summary["validation_success"] = checks[max(checks)]
    return model, summary


def _build_entry(spec: AgentSpec, root: Path, progress: bool) -> None:
    """Build the tokenizer, models and teacher episodes of ``spec`` into the empty ``root``."""
    paths = agent_paths(root)
    problems = spec.train_problems()
    conversations = [episode_conversation(p) for p in problems]
    texts = [f"{p.question} {p.solution}" for p in problems]
    tokenizer = build_tokenizer(
        texts, paths.tokenizer_dir, spec.vocab_size, roles=(*ROLES, TOOL_ROLE),
        words=(CALL_OPEN, CALL_CLOSE),
    )  # fmt: skip
    data = encode_conversations(tokenizer, conversations)
    info: dict[str, Any] = {"spec": dataclasses.asdict(spec), "digest": spec.digest()}
    teacher, info["teacher"] = _train(
        "teacher", spec.teacher, spec.teacher_steps, spec.teacher_lr, spec, tokenizer, data,
        progress, spec.teacher_target_success, spec.teacher_check_every,
    )  # fmt: skip
    save_model(teacher, tokenizer, paths.teacher_dir)
    start = time.perf_counter()
    pool = problems[: spec.num_replays]
    episodes = play(teacher, tokenizer, pool, spec)
    write_replays(
        paths.trajectories,
        [
            {"question": p.question, "turns": list(e.messages[1:]), "reward": e.summary.reward}
            for p, e in zip(pool, episodes, strict=True)
        ],
    )
    info["teacher_episodes"] = {
        "count": len(episodes),
        "success": success_rate(episodes),
        "seconds": time.perf_counter() - start,
    }
    student, info["student"] = _train(
        "student", spec.student, spec.student_steps, spec.student_lr, spec, tokenizer, data,
        progress, spec.student_target_success, spec.check_every,
    )  # fmt: skip
    save_model(student, tokenizer, paths.student_dir)
    notool = make_model(spec.student, tokenizer, seed=spec.seed)
    start = time.perf_counter()
    losses = sft(
        notool, tokenizer, [p.as_arithmetic() for p in problems], spec.notool_steps,
        spec.batch_size, spec.student_lr, spec.seed, progress=progress, name="student_notool",
    )  # fmt: skip
    info["student_notool"] = {
        "params": float(num_params(notool)),
        "seconds": time.perf_counter() - start,
        "steps": float(len(losses)),
    }
    save_model(notool, tokenizer, paths.notool_dir)
    (root / "build_info.json").write_text(json.dumps(info, indent=2) + "\n")


def build_agent_models(spec: AgentSpec, cache_dir: Path | str, progress: bool = True) -> AgentPaths:
    """The tool-use demo's folders, built on first use (once, even by processes asking at
    once) and reused after."""
    root = build_cached(
        Path(cache_dir),
        spec.digest(),
        lambda tmp_root: _build_entry(spec, tmp_root, progress),
        "tool-use demo models",
        progress,
    )
    return agent_paths(root)
