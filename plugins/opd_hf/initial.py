"""The ``student_initial`` teacher: a frozen copy, in memory, of the student as it was loaded.

Self-distillation needs no second model on disk: the copy is taken in ``setup``, before the
first update (and before ``resume=true`` loads a checkpoint's weights into the student), so it
scores with the initial weights for the whole run. It costs one more copy of the student's
weights in memory. Usually wrapped by ``teacher=context`` (docs/teachers.md).
"""

from __future__ import annotations

import copy

from opd_core.api import LoadedModel, RunContext
from opd_hf.teacher import HFTeacher


class StudentInitialTeacher(HFTeacher):
    """Scores with a frozen copy of the student's initial weights (same tokenizer)."""

    def __init__(self, batch_size: int = 32) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.batch_size = batch_size
        self.check_template = False

    def setup(self, ctx: RunContext) -> None:
        model = copy.deepcopy(ctx.student.model).eval().requires_grad_(False)
        self.loaded = LoadedModel(model, ctx.student.tokenizer, ctx.student.spec)
        self.precision = ctx.precision
