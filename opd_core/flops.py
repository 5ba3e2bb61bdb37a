"""FLOPs accounting: what sampling, teacher scoring and training cost, from token counts.

The counts follow the usual transformer estimate (Kaplan et al. 2020) made exact for the
operations ``torch.utils.flop_counter.FlopCounterMode`` counts (matrix multiplications):

- a forward pass over ``L`` tokens costs ``2 * N * L + 4 * layers * width * L**2``, where ``N``
  counts the weights of every linear layer (the LM head included, embeddings excluded: a lookup
  is not a matmul) and ``width`` is query heads times head dimension. The attention term is the
  full ``L x L`` score and value product that attention kernels compute. Training and teacher
  scoring need logits on the completion only, so their LM head (``H`` weights) runs on the ``C``
  completion positions: ``2 * (N - H) * L + 2 * H * C`` for the linear layers;
- a backward pass costs twice its forward, so training costs ``3x`` the forward (``6N`` per token);
- generating ``C`` tokens after a ``P``-token prompt with a KV cache is one forward over the
  prompt (the LM head only at its last position), then ``C - 1`` single-token steps, step ``j``
  attending over ``P + j`` keys. The sampler's log-probabilities come from those steps' logits:
  no further forward runs. In a multi-turn episode the environment's tokens between turns are
  prefilled, not sampled: they go through the body and attention like any token of the
  sequence, without the LM head (counted as one cache kept across turns; ``sampler=hf``
  re-prefills each turn's history, more work than counted).

Only real tokens count (padding is excluded), so two methods that process the same tokens report
the same FLOPs whatever their batching; that includes the slots of a preallocated (static) KV
cache not yet written, which attention kernels mask but still multiply. Norms, activations and
softmax are left out (< 1%).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from opd_core.reduction import Sum
from opd_core.types import RolloutBatch


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a decoder-only transformer that determine its FLOPs per token."""

    matmul_params: int
    """Weights of every linear layer (attention and MLP projections, LM head)."""
    head_params: int
    """Weights of the LM head (part of ``matmul_params``)."""
    layers: int
    """Number of attention layers."""
    attention_width: int
    """Query heads times head dimension."""

    @staticmethod
    def of(model: Any) -> ModelShape:
        """Measure a ``transformers`` causal LM (LoRA adapters count as the linear layers they
        are)."""
        matmul_params = sum(
            module.weight.numel()
            for module in model.modules()
            if isinstance(module, torch.nn.Linear)
        )
        head = model.get_output_embeddings()
        config = model.config
        if hasattr(config, "get_text_config"):
            config = config.get_text_config()
        heads = int(config.num_attention_heads)
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        return ModelShape(
            matmul_params=int(matmul_params),
            head_params=int(head.weight.numel()) if head is not None else 0,
            layers=int(config.num_hidden_layers),
            attention_width=heads * int(head_dim),
        )

    def forward_flops(
        self, lengths_B: torch.Tensor, head_positions_B: torch.Tensor | None = None
    ) -> float:
        """FLOPs of one forward pass over sequences of ``lengths_B`` real tokens, the LM head
        applied at ``head_positions_B`` of them (default: all). (B,) -> sum."""
        lengths = lengths_B.double()
        head = lengths if head_positions_B is None else head_positions_B.double()
        linear = 2.0 * (self.matmul_params - self.head_params) * lengths
        linear = linear + 2.0 * self.head_params * head
        attention = 4.0 * self.layers * self.attention_width * lengths**2
        return float((linear + attention).sum())

    def training_flops(
        self, lengths_B: torch.Tensor, head_positions_B: torch.Tensor | None = None
    ) -> float:
        """FLOPs of a forward and backward pass (backward = 2x forward)."""
        return 3.0 * self.forward_flops(lengths_B, head_positions_B)

    def generation_flops(
        self,
        prompt_B: torch.Tensor,
        completion_B: torch.Tensor,
        sampled_B: torch.Tensor | None = None,
    ) -> float:
        """FLOPs of writing ``completion_B`` tokens after ``prompt_B``-token prompts with a KV
        cache: a prefill forward, then one single-token step per further token. Of a multi-turn
        completion only ``sampled_B`` tokens are sampled (default: all of them); the
        environment's tokens between turns are prefilled into the cache, so the LM head runs
        only where a token is sampled."""
        prompt = prompt_B.double()
        steps = (completion_B.double() - 1).clamp(min=0)
        sampled = steps + 1 if sampled_B is None else sampled_B.double()
        # every position but the last goes through the body; the LM head runs where a token
        # is sampled next (a single completion: the prompt's last position and every step)
        fed = prompt + steps
        linear = 2.0 * self.matmul_params * fed - 2.0 * self.head_params * (fed - sampled)
        # decode step j (1..steps) attends over prompt + j keys
        keys = steps * prompt + steps * (steps + 1) / 2
        attention = 4.0 * self.layers * self.attention_width * (prompt**2 + keys)
        return float((linear + attention).sum())


@dataclass
class FlopsLedger:
    """Cumulative FLOPs of a run, split by model and purpose (restored on resume)."""

    student_sampling: float = 0.0
    """The student generating rollouts (their sampler log-probabilities come from the same
    decode steps: no extra forward is counted because none runs)."""
    student_training: float = 0.0
    """Forward and backward passes of the updates (LM head on completion positions)."""
    teacher_sampling: float = 0.0
    """The teacher generating rollouts (off-policy distillation: the SFT baseline)."""
    teacher_scoring: float = 0.0
    """The teacher scoring sampled tokens (one forward, LM head on completion positions)."""

    def add(self, step: FlopsLedger) -> None:
        """Add one step's FLOPs."""
        self.student_sampling += step.student_sampling
        self.student_training += step.student_training
        self.teacher_sampling += step.teacher_sampling
        self.teacher_scoring += step.teacher_scoring

    @property
    def student(self) -> float:
        """All student FLOPs (the seed table's "Student FLOPs")."""
        return self.student_sampling + self.student_training

    @property
    def teacher(self) -> float:
        """All teacher FLOPs (the seed table's "Teacher FLOPs")."""
        return self.teacher_sampling + self.teacher_scoring

    def metrics(self, prefix: str) -> dict[str, float]:
        """``{prefix}/student``, ``{prefix}/teacher`` and the four parts, for logging (counts:
        added over processes)."""
        return {
            f"{prefix}/student": Sum(self.student),
            f"{prefix}/teacher": Sum(self.teacher),
            f"{prefix}/student_sampling": Sum(self.student_sampling),
            f"{prefix}/student_training": Sum(self.student_training),
            f"{prefix}/teacher_sampling": Sum(self.teacher_sampling),
            f"{prefix}/teacher_scoring": Sum(self.teacher_scoring),
        }

    def state_dict(self) -> dict[str, float]:
        return dict(vars(self))

    def load_state_dict(self, state: dict[str, float]) -> None:
        for key, value in state.items():
            setattr(self, key, float(value))


SCORING_FLOPS = "teacher/scoring_flops"
"""A teacher that knows what its scoring cost (one over its own tokens, a tree of paths: the
cross-tokenizer teacher) reports it under this key of ``TeacherScores.metrics``; the ledger
books that instead of a forward over the student's tokens."""


def rollout_flops(
    rollouts: RolloutBatch,
    student: ModelShape,
    teacher: ModelShape | None,
    scored: bool,
    update_epochs: int = 1,
    teacher_scoring: float | None = None,
) -> FlopsLedger:
    """What one step spent: sampling ``rollouts`` (charged to whichever model wrote them;
    nothing when they are fixed data), the teacher scoring them (if ``scored``: the
    ``teacher_scoring`` FLOPs it reported, else a forward over the rollouts' tokens) and
    ``update_epochs`` passes of training. Teacher FLOPs stay 0 when its shape is unknown and it
    reported none."""
    prompt_B, sampled_B = rollouts.sequence_lengths()
    total_B = rollouts.attention_mask_BT.sum(1)
    # the completion region: what the LM head runs on when training and scoring (one answer,
    # or every turn of an episode with the environment's tokens between them)
    region_B = total_B - prompt_B
    flops = FlopsLedger(student_training=update_epochs * student.training_flops(total_B, region_B))
    if rollouts.sampler_role == "student":
        flops.student_sampling = student.generation_flops(prompt_B, region_B, sampled_B)
    elif rollouts.sampler_role == "teacher" and teacher is not None:
        flops.teacher_sampling = teacher.generation_flops(prompt_B, region_B, sampled_B)
    if scored and teacher_scoring is not None:
        flops.teacher_scoring = float(teacher_scoring)
    elif scored and teacher is not None:
        flops.teacher_scoring = teacher.forward_flops(total_B, region_B)
    return flops
