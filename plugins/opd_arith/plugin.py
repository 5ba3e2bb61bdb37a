"""The demo as plugins: the ``arithmetic`` task and the ``demo://arithmetic/...`` model loader."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opd_arith.problems import grade, to_prompt
from opd_core import OPDError, Prompt, hookimpl
from opd_core.api import cache_root, store_config_dir

if TYPE_CHECKING:
    import torch

    from opd_core.api import LoadedModel, ModelSpec, Registry

DEMO_SCHEME = "demo://arithmetic/"
CONTEXT_FRACTION = 0.5
"""``demo://arithmetic/student_context``'s SFT data also holds half the training problems with the
reference solution in a system turn (``DemoSpec.student_context_fraction``)."""


def cache_dir() -> Path:
    """Where built demo models live: ``<cache_root()>/demo_arithmetic``."""
    return cache_root() / "demo_arithmetic"


class ProblemSetTask:
    """A task over generated problems, graded by the final ``#<answer>`` of a completion: the
    ``train`` and ``eval`` splits hold ``spec.problems(size, seed, split)`` as prompts."""

    def __init__(
        self,
        spec: Any,
        make_prompt: Callable[[Any, str, int], Prompt],
        train_size: int,
        eval_size: int,
        seed: int,
        train_offset: int = 0,
    ) -> None:
        if train_size <= 0 or eval_size < 0 or train_offset < 0:
            raise ValueError(
                f"need train_size > 0, eval_size >= 0 and train_offset >= 0, got {train_size}, "
                f"{eval_size}, {train_offset}"
            )
        self.spec = spec
        self.make_prompt = make_prompt
        self.sizes = {"train": train_size, "eval": eval_size}
        self.offsets = {"train": train_offset, "eval": 0}
        self.seed = seed
        self._prompts: dict[str, list[Prompt]] = {}

    @hookimpl
    def opd_task_prompts(self, split: str) -> Sequence[Prompt]:
        if split not in self._prompts:
            skip = self.offsets[split]
            problems = self.spec.problems(skip + self.sizes[split], self.seed, split)[skip:]
            self._prompts[split] = [
                self.make_prompt(p, split, skip + i) for i, p in enumerate(problems)
            ]
        return self._prompts[split]

    @hookimpl
    def opd_grade_completions(
        self, prompts: Sequence[Prompt], completions: Sequence[str]
    ) -> list[float]:
        """The final answer (the last ``#<n>``) of each completion against the prompt's."""
        return [grade(c, p.answer or "") for p, c in zip(prompts, completions, strict=True)]


class ArithmeticTask(ProblemSetTask):
    """Expressions like ``5+(2*3)`` answered with short worked steps and ``#<answer>``."""

    def __init__(
        self,
        train_size: int = 4000,
        eval_size: int = 200,
        seed: int = 0,
        num_ops: int | None = None,
        max_operand: int | None = None,
        ops: str | None = None,
        train_offset: int = 0,
    ) -> None:
        """Problem difficulty left at ``None`` is the demo models' (what the teacher learned).
        ``train_offset``: the training prompts are the seed's problems after the first
        ``train_offset`` (e.g. after those a student was fine-tuned on: disjoint from them)."""
        from opd_arith.build import DemoSpec  # imports transformers: only when the task is built

        demo = DemoSpec().task
        spec = replace(
            demo,
            num_ops=demo.num_ops if num_ops is None else num_ops,
            max_operand=demo.max_operand if max_operand is None else max_operand,
            ops=demo.ops if ops is None else ops,
        )
        super().__init__(spec, to_prompt, train_size, eval_size, seed, train_offset)


@hookimpl
def opd_load_model(spec: ModelSpec, role: str, device: torch.device) -> LoadedModel | None:
    """Build (first use) or reuse the demo's teacher or student and load it."""
    if not spec.path.startswith(DEMO_SCHEME):
        return None
    which = spec.path[len(DEMO_SCHEME) :]
    if which not in ("teacher", "student", "teacher_bpe", "student_context"):
        raise OPDError(
            f"Unknown demo model '{spec.path}'; use {DEMO_SCHEME}teacher, {DEMO_SCHEME}student, "
            f"{DEMO_SCHEME}teacher_bpe (another tokenizer, for teacher=cross_tokenizer) or "
            f"{DEMO_SCHEME}student_context (a student that can read a shown solution, for "
            "teacher=context)."
        )
    from opd_arith.build import DemoSpec, build_demo_models
    from opd_hf.loading import load_hf_model

    if which == "teacher_bpe":
        from opd_arith.other_tokenizer import BPE_TEACHER_STEPS, build_bpe_teacher

        folder = build_bpe_teacher(DemoSpec(), cache_dir(), steps=BPE_TEACHER_STEPS)
        return load_hf_model(replace(spec, path=str(folder)), role, device)
    if which == "student_context":
        folder = build_demo_models(
            DemoSpec(student_context_fraction=CONTEXT_FRACTION), cache_dir()
        ).student_dir
        return load_hf_model(replace(spec, path=str(folder)), role, device)
    paths = build_demo_models(DemoSpec(), cache_dir())
    folder = paths.teacher_dir if which == "teacher" else paths.student_dir
    return load_hf_model(replace(spec, path=str(folder)), role, device)


@hookimpl
def opd_register_components(registry: Registry) -> None:
    registry.add("task", "arithmetic", ArithmeticTask)


@hookimpl
def opd_register_configs(store: Any) -> None:
    """This plugin's options (``conf/<group>/<option>.yaml``), stored as a third-party
    package's are."""
    store_config_dir(store, "opd_arith")
