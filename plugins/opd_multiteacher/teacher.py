"""The ``multi`` teacher (see :mod:`opd_multiteacher`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from opd_core import Generator, OPDError, Prompt, RolloutBatch, TeacherScores, hookimpl
from opd_core.api import Registry, RunContext, Sum


class MultiTeacher:
    """Routes each rollout to one of several configured teachers by a key of its prompt."""

    def __init__(
        self,
        teachers: Mapping[str, Mapping[str, Any]],
        route_by: str = "source",
        routes: Mapping[str, str] | None = None,
        default: str | None = None,
    ) -> None:
        """``teachers`` maps a teacher's name to its config (any registered teacher);
        ``routes`` maps a route key to a teacher name (omitted: the key *is* the name);
        ``default`` takes the prompts whose key has no route (omitted: such a key is an error).
        """
        if not teachers:
            raise ValueError("teachers must name at least one teacher config")
        if route_by != "source" and not route_by.startswith("metadata."):
            raise ValueError(f"route_by must be 'source' or 'metadata.<field>', got {route_by!r}")
        self.configs = {str(k): dict(v) for k, v in teachers.items()}
        self.route_by = route_by
        self.routes = dict(routes) if routes is not None else {n: n for n in self.configs}
        self.default = default
        for target in [*self.routes.values(), *([default] if default is not None else [])]:
            if target not in self.configs:
                raise ValueError(
                    f"route target {target!r} is not one of the teachers: {', '.join(self.configs)}"
                )
        self.teachers: dict[str, Any] = {}

    def setup(self, ctx: RunContext) -> None:
        registry = Registry()
        ctx.hook.opd_register_components(registry=registry)
        for name, node in self.configs.items():  # check every config before loading weights
            if node.get("name") == "multi":
                raise OPDError(f"teacher.teachers.{name} is itself a multi teacher; nest none.")
            self.teachers[name] = registry.build("teacher", node)
        for name, teacher in self.teachers.items():
            try:  # a teacher checks its vocabulary against the student's
                if hasattr(teacher, "setup"):
                    teacher.setup(ctx)
            except OPDError as err:
                raise OPDError(f"Teacher '{name}' of the multi teacher: {err}") from err

    def route(self, prompt: Prompt) -> str:
        """The name of the teacher that scores ``prompt``."""
        key = route_key(prompt, self.route_by)
        if key in self.routes:
            return self.routes[key]
        if self.default is not None:
            return self.default
        raise OPDError(
            f"Prompt {prompt.id} has {self.route_by}={key!r}, which no teacher is routed to; "
            f"add teacher.routes.{key or '<key>'}=<teacher> (teachers: "
            f"{', '.join(self.teachers)}) or set teacher.default."
        )

    @hookimpl
    def opd_score_rollouts(self, rollouts: RolloutBatch, top_k: int) -> TeacherScores:
        names = [self.route(p) for p in rollouts.prompts]
        logprobs_BT = torch.zeros_like(rollouts.sampler_logprobs_BT)
        topk_ids_BTK: torch.Tensor | None = None
        topk_logprobs_BTK: torch.Tensor | None = None
        metrics: dict[str, float] = {}
        for name, teacher in self.teachers.items():
            rows = [i for i, n in enumerate(names) if n == name]
            if not rows:
                continue
            part = rollouts.take(rows)
            scores: TeacherScores = teacher.opd_score_rollouts(rollouts=part, top_k=top_k)
            index_B = torch.tensor(rows, dtype=torch.long)
            logprobs_BT[index_B] = scores.logprobs_BT
            if top_k > 0 and scores.topk_ids_BTK is not None:
                if topk_ids_BTK is None or topk_logprobs_BTK is None:
                    size_BTK = (*logprobs_BT.shape, top_k)
                    topk_ids_BTK = torch.zeros(size_BTK, dtype=torch.long)
                    topk_logprobs_BTK = torch.zeros(size_BTK, dtype=logprobs_BT.dtype)
                topk_ids_BTK[index_B] = scores.topk_ids_BTK
                assert scores.topk_logprobs_BTK is not None
                topk_logprobs_BTK[index_B] = scores.topk_logprobs_BTK
            metrics.update(teacher_metrics(name, part, scores.logprobs_BT))
            metrics.update(scoring_flops(name, teacher, part))
        return TeacherScores(
            logprobs_BT=logprobs_BT,
            topk_ids_BTK=topk_ids_BTK,
            topk_logprobs_BTK=topk_logprobs_BTK,
            metrics=metrics,
        )

    @hookimpl
    def opd_eval_generator(self, role: str) -> Generator | None:
        """The teacher evaluation (``eval.teacher``) runs the first listed teacher."""
        if role != "teacher":
            return None
        first = next(iter(self.teachers.values()))
        generator: Generator | None = first.opd_eval_generator(role=role)
        return generator

    def close(self) -> None:
        for teacher in self.teachers.values():
            if hasattr(teacher, "close"):
                teacher.close()


def route_key(prompt: Prompt, route_by: str) -> str:
    """``prompt.source``, or the metadata field named by ``metadata.<field>``."""
    if route_by == "source":
        return prompt.source
    return str(prompt.metadata.get(route_by.removeprefix("metadata."), ""))


def scoring_flops(name: str, teacher: Any, rollouts: RolloutBatch) -> dict[str, float]:
    """FLOPs teacher ``name`` spent scoring ``rollouts``, when it can describe its model."""
    answer = getattr(teacher, "opd_model_shape", None)
    model_shape = answer(role="teacher") if answer is not None else None
    if model_shape is None:
        return {}
    prompt_B, _ = rollouts.sequence_lengths()
    total_B = rollouts.attention_mask_BT.sum(1)  # a multi-turn episode's environment tokens too
    flops = model_shape.forward_flops(total_B, total_B - prompt_B)  # head on the completions
    return {f"flops_step/teacher/{name}": Sum(flops)}


def teacher_metrics(
    name: str, rollouts: RolloutBatch, teacher_logprobs_BT: torch.Tensor
) -> dict[str, float]:
    """Reverse KL to teacher ``name`` and how many sequences and tokens it scored."""
    mask_BT = rollouts.completion_mask_BT.float()
    reverse_kl_BT = (rollouts.sampler_logprobs_BT - teacher_logprobs_BT) * mask_BT
    tokens = float(mask_BT.sum())
    return {
        f"teacher/{name}/reverse_kl": float(reverse_kl_BT.sum()) / max(tokens, 1.0),
        f"teacher/{name}/tokens": Sum(tokens),
        f"teacher/{name}/sequences": Sum(rollouts.batch_size),
    }
