"""Build (or reuse) the embedded demo's tokenizer, teacher and student, fully offline.

The teacher is a small Qwen3 trained from random init by SFT on the task's reference solutions;
the student is a smaller Qwen3 given only a short SFT, so that it knows the answer format but
still makes arithmetic mistakes that on-policy distillation can fix.

Everything lands in ``cache_dir/<hash of the spec>/{tokenizer,teacher,student}``. An entry is
built in a temporary folder and moved into place with one ``os.replace``, so an interrupted build
never leaves a half-written entry; a second call with the same spec reuses it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, Qwen3Config, Qwen3ForCausalLM

from opd_arith.problems import ArithmeticProblem, grade, make_problems, to_prompt
from opd_arith.sft import sft
from opd_arith.tokenizer import build_tokenizer
from opd_core.api import cache_lock

BUILD_FORMAT_VERSION = 2
"""Bumped when the build's code changes what a spec produces, so stale cache entries are unused."""


@dataclass(frozen=True)
class Architecture:
    """The shape of a tiny Qwen3 model."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    max_position_embeddings: int = 128


@dataclass(frozen=True)
class TaskSpec:
    """Difficulty of the arithmetic problems (the arguments of :func:`make_problems`)."""

    num_ops: int = 2
    max_operand: int = 9
    ops: str = "+-*"
    eval_fraction: float = 0.1
    min_result: int | None = 0
    max_result: int | None = 99
    """Every intermediate and final value lies in ``min_result..max_result`` (None: no bound);
    the demo keeps them in 0..99, which a tiny teacher learns in a minute."""

    def problems(self, n: int, seed: int, split: str) -> list[ArithmeticProblem]:
        """``n`` problems of ``split`` at this difficulty."""
        return make_problems(
            n,
            seed,
            split=split,
            num_ops=self.num_ops,
            max_operand=self.max_operand,
            ops=self.ops,
            eval_fraction=self.eval_fraction,
            min_result=self.min_result,
            max_result=self.max_result,
        )


@dataclass(frozen=True)
class DemoSpec:
    """Every knob of the demo build; its hash names the cache entry."""

    task: TaskSpec = field(default_factory=TaskSpec)
    num_train: int = 8000
    """Distinct training problems (SFT data for teacher and student)."""
    vocab_size: int = 320
    teacher: Architecture = field(
        default_factory=lambda: Architecture(
            hidden_size=128,
            intermediate_size=512,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=32,
        )
    )
    student: Architecture = field(
        default_factory=lambda: Architecture(
            hidden_size=96,
            intermediate_size=384,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=24,
        )
    )
    teacher_steps: int = 500
    """Teacher SFT steps: ~1 min on 2 cores, ~93% held-out accuracy."""
    teacher_lr: float = 3e-3
    student_steps: int = 600
    """At most this many student SFT steps (the learning-rate schedule spans them all)."""
    student_lr: float = 3e-3
    student_target_accuracy: float | None = 0.55
    """The student's SFT stops at the first check (every ``check_every`` steps) where its greedy
    accuracy on ``num_validation`` unseen training-split problems reaches this level: a middling
    start, as the seed's SFT-initialised student was, that does not depend on where the learning
    curve's steep rise happens to fall for this machine's float rounding. None: all steps."""
    num_validation: int = 200
    check_every: int = 10
    batch_size: int = 64
    seed: int = 0
    student_context_fraction: float = 0.0
    """The student's SFT data also holds this fraction of the training problems (the first ones)
    a second time with the reference solution in a system turn before the question, as
    ``teacher=context`` shows it, so that the student's initial weights can read a shown solution
    (self-distillation: ``demo://arithmetic/student_context``). 0: none, the demo's build."""

    def train_problems(self) -> list[ArithmeticProblem]:
        """The SFT training problems."""
        return self.task.problems(self.num_train, self.seed, "train")

    def validation_problems(self) -> list[ArithmeticProblem]:
        """``num_validation`` training-split problems that are not SFT data (for early stopping;
        the held-out evaluation split is never looked at while building)."""
        seen = {p.question for p in self.train_problems()}
        pool = self.task.problems(self.num_train + 4 * self.num_validation, self.seed + 1, "train")
        fresh = [p for p in pool if p.question not in seen]
        if len(fresh) < self.num_validation:
            raise ValueError(
                f"only {len(fresh)} unseen training problems for validation; lower num_train"
            )
        return fresh[: self.num_validation]

    def eval_problems(self, n: int, seed: int | None = None) -> list[ArithmeticProblem]:
        """``n`` held-out problems (disjoint from every training problem)."""
        return self.task.problems(n, self.seed if seed is None else seed, "eval")

    def student_sft_data(self) -> tuple[list[ArithmeticProblem], list[str | None]]:
        """The student's SFT problems and the context each is shown with (``None``: none)."""
        problems = self.train_problems()
        shown = problems[: round(self.student_context_fraction * len(problems))]
        contexts: list[str | None] = [None] * len(problems) + [p.solution for p in shown]
        return problems + shown, contexts

    def digest(self) -> str:
        """A short hash of the spec (and build format) naming its cache entry."""
        fields = dataclasses.asdict(self)
        if not self.student_context_fraction:  # added later: the demo's entry keeps its name
            del fields["student_context_fraction"]
        payload = json.dumps({"format": BUILD_FORMAT_VERSION, **fields}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class DemoPaths:
    """Where a built demo lives; each model folder also holds the tokenizer."""

    tokenizer_dir: Path
    teacher_dir: Path
    student_dir: Path


def demo_paths(root: Path) -> DemoPaths:
    """The folders of a cache entry rooted at ``root``."""
    return DemoPaths(root / "tokenizer", root / "teacher", root / "student")


def make_model(
    shape: Architecture, tokenizer: PreTrainedTokenizerBase, seed: int
) -> Qwen3ForCausalLM:
    """A randomly initialised fp32 Qwen3 of ``shape`` over ``tokenizer``'s vocabulary."""
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads,
        head_dim=shape.head_dim,
        max_position_embeddings=shape.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model: Any = Qwen3ForCausalLM(config).to(torch.float32)  # type: ignore[arg-type]
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def num_params(model: PreTrainedModel) -> int:
    """Number of distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())


def evaluate_accuracy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    problems: Sequence[ArithmeticProblem],
    max_new_tokens: int = 32,
    batch_size: int = 100,
) -> float:
    """Fraction of ``problems`` the model answers exactly right with greedy decoding."""
    from opd_core.api import GenerationParams
    from opd_hf.generation import HFGenerator

    generator = HFGenerator("model", model, tokenizer, batch_size)
    prompts = [to_prompt(p, "eval", i) for i, p in enumerate(problems)]
    completions = generator.generate(prompts, GenerationParams(max_new_tokens, temperature=0.0))
    scores = [grade(c, p.answer) for c, p in zip(completions, problems, strict=True)]
    return sum(scores) / max(1, len(scores))


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: Path) -> None:
    """Save a model with its tokenizer so ``from_pretrained(out_dir)`` loads both."""
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))


def _train_model(
    name: str,
    shape: Architecture,
    steps: int,
    lr: float,
    spec: DemoSpec,
    tokenizer: PreTrainedTokenizerBase,
    problems: Sequence[ArithmeticProblem],
    progress: bool,
    target_accuracy: float | None = None,
    contexts: Sequence[str | None] | None = None,
) -> tuple[PreTrainedModel, dict[str, float]]:
    """Random-init a model of ``shape`` and SFT it; returns it with a summary of the run.

    With ``target_accuracy``, SFT stops once the model's accuracy on the spec's validation
    problems (without context) reaches it. ``contexts``: one per problem, shown in a system turn.
    """
    model = make_model(shape, tokenizer, seed=spec.seed)
    checks: dict[int, float] = {}
    stop_when = None
    if target_accuracy is not None:
        validation = spec.validation_problems()

        def stop_when(step: int) -> bool:
            checks[step] = evaluate_accuracy(model, tokenizer, validation)
            if progress:
                print(f"[{name}] step {step}: validation accuracy {checks[step]:.1%}", flush=True)
            return checks[step] >= target_accuracy

    if progress:
        print(
            f"[opd_arith] {name}: {num_params(model) / 1e6:.2f}M params, {steps} SFT steps",
            flush=True,
        )
    start = time.perf_counter()
    losses = sft(
        model,
        tokenizer,
        problems,
        steps=steps,
        batch_size=spec.batch_size,
        lr=lr,
        seed=spec.seed,
        progress=progress,
        name=name,
        stop_when=stop_when,
        check_every=spec.check_every,
        contexts=contexts,
    )
    summary = {
        "params": float(num_params(model)),
        "seconds": time.perf_counter() - start,
        "steps": float(len(losses)),
        "final_loss": sum(losses[-10:]) / max(1, len(losses[-10:])),
    }
    if checks:
        summary["validation_accuracy"] = checks[max(checks)]
    return model, summary


def _build_entry(spec: DemoSpec, root: Path, progress: bool) -> None:
    """Build the tokenizer, teacher and student of ``spec`` into the empty folder ``root``."""
    paths = demo_paths(root)
    start = time.perf_counter()
    problems = spec.train_problems()
    texts = [f"{p.question} {p.solution}" for p in problems]
    tokenizer = build_tokenizer(texts, paths.tokenizer_dir, vocab_size=spec.vocab_size)
    info: dict[str, object] = {"spec": dataclasses.asdict(spec), "digest": spec.digest()}
    info["tokenizer_seconds"] = time.perf_counter() - start
    teacher, info["teacher"] = _train_model(
        "teacher", spec.teacher, spec.teacher_steps, spec.teacher_lr, spec, tokenizer, problems,
        progress,
    )  # fmt: skip
    save_model(teacher, tokenizer, paths.teacher_dir)
    student_problems, contexts = spec.student_sft_data()
    student, info["student"] = _train_model(
        "student", spec.student, spec.student_steps, spec.student_lr, spec, tokenizer,
        student_problems, progress, spec.student_target_accuracy, contexts,
    )  # fmt: skip
    save_model(student, tokenizer, paths.student_dir)
    (root / "build_info.json").write_text(json.dumps(info, indent=2) + "\n")


def build_demo_models(spec: DemoSpec, cache_dir: Path | str, progress: bool = True) -> DemoPaths:
    """Return the demo's tokenizer/teacher/student folders, building them on first use.

    The entry ``cache_dir/<spec.digest()>`` is reused when present; otherwise it is built in a
    temporary sibling folder and renamed into place once complete. Processes that ask at once
    build it once: the others wait for the lock, then reuse it.
    """
    root = build_cached(
        Path(cache_dir),
        spec.digest(),
        lambda tmp_root: _build_entry(spec, tmp_root, progress),
        "demo models",
        progress,
    )
    return demo_paths(root)


@contextmanager
def caller_rng_kept() -> Iterator[None]:
    """Run a build without touching the caller's random state (Python's and torch's CPU/CUDA
    generators): a run seeded before its models load samples the same whether the cache was
    warm or the models were built first."""
    python_state = random.getstate()
    try:
        with torch.random.fork_rng():
            yield
    finally:
        random.setstate(python_state)


def build_cached(
    cache_dir: Path, digest: str, build: Callable[[Path], None], what: str, progress: bool
) -> Path:
    """The cache entry ``cache_dir/<digest>``, built on first use by ``build(empty_folder)``
    in a temporary sibling folder renamed into place once complete (an interrupted build leaves
    nothing); processes that ask at once build it once (the others wait for the lock)."""
    with cache_lock(cache_dir / digest, f"building the {what}"):
        root = cache_dir / digest
        if root.is_dir():
            if progress:
                print(f"[opd_arith] reusing {what} in {root}", flush=True)
            return root
        cache_dir.mkdir(parents=True, exist_ok=True)
        if progress:
            print(f"[opd_arith] building {what} into {root} (first run only)", flush=True)
        start = time.perf_counter()
        tmp_root = Path(tempfile.mkdtemp(prefix=f".{digest}-", dir=cache_dir))
        try:
            with caller_rng_kept():
                build(tmp_root)
            try:
                os.replace(tmp_root, root)
            except OSError:
                if not root.is_dir():  # a concurrent build that finished first is as good as ours
                    raise
        finally:
            shutil.rmtree(tmp_root, ignore_errors=True)
        if progress:
            print(f"[opd_arith] {what} built in {time.perf_counter() - start:.0f}s", flush=True)
        return root
