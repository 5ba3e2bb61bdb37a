"""Typed data passed between the stages of the loop.

Every object that crosses a hook boundary is one of these frozen dataclasses. Tensor fields carry
their shape in the name: ``B`` sequences in the batch, ``T`` token positions (prompt + completion),
``K`` top-k entries. Position ``t`` of a ``*_BT`` tensor describes token ``input_ids_BT[:, t]``;
a log-probability at ``t`` is ``log p(x_t | x_<t)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, runtime_checkable

if TYPE_CHECKING:  # torch is imported by what builds these, not by importing opd_core
    import torch

ChatMessage = Mapping[str, str]
Rows: TypeAlias = "slice | torch.Tensor"
"""Which sequences of a batch: a slice, or their indices (an int64 tensor)."""
ALL = slice(None)
"""Every column."""
"""One chat turn: ``{"role": "user" | "assistant" | "system", "content": "..."}``."""


@dataclass(frozen=True)
class Prompt:
    """One task prompt, as a task hands it to the loop."""

    id: str
    """Stable identifier, unique within the task's split."""
    messages: tuple[ChatMessage, ...]
    """Chat messages ending with the user turn the model must answer. Empty for a plain-text
    prompt (a document to continue, no chat template); only ``sampler=dataset`` renders those."""
    answer: str | None = None
    """Reference answer for grading, when the task has one."""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    """Task-specific extras (difficulty, solution, ...)."""
    source: str = ""
    """Where the prompt comes from: its task, or the dataset of a task that mixes several.
    The ``multi`` teacher routes prompts to teachers by it."""
    reference: str | None = None
    """The completion to learn, when the task ships one (a chat response, a document's text):
    ``sampler=dataset`` trains on it instead of sampling."""
    teacher_context: str | None = None
    """Text only the teacher sees before the prompt (a reference solution, a document, a system
    prompt): ``teacher=context`` scores the student's completion after it (docs/teachers.md)."""


@dataclass(frozen=True)
class EpisodeStart:
    """How an environment opens an episode for one task prompt."""

    messages: tuple[ChatMessage, ...]
    """The conversation the student answers first: usually the prompt's messages, perhaps with a
    system turn describing the tools. Rendered with the student's chat template."""
    state: Any = None
    """The environment's own state, handed back with every turn (keep it picklable and small:
    a run may copy it)."""


@dataclass(frozen=True)
class EnvReply:
    """An environment's answer to one assistant turn."""

    messages: tuple[ChatMessage, ...] = ()
    """What the student sees next (a ``tool`` result, the ``user``'s next message); appended at
    the token level after the student's turn, attended to but never trained on. Empty when
    ``done``."""
    reward: float = 0.0
    """This turn's reward; the episode's reward is the sum over its turns."""
    done: bool = False
    """The episode is over (solved, failed, or the environment gave up)."""
    state: Any = None
    """The episode's state after this turn, handed back with the next one."""
    counts: Mapping[str, float] = field(default_factory=dict)
    """Per-turn counters (``tool_calls``, ``invalid_calls``, ...): summed per episode and logged
    as ``episode/<name>``."""


@dataclass(frozen=True)
class EpisodeSummary:
    """One finished (or cut) episode of a multi-turn rollout."""

    turns: int
    """Assistant turns the student wrote."""
    reward: float
    """Sum of the environment's rewards."""
    end: str
    """Why it ended: ``done`` (the environment said so), ``max_turns``, ``max_tokens`` (an
    ``episode`` budget), or ``context`` (the student's context length)."""
    counts: Mapping[str, float] = field(default_factory=dict)
    """The environment's per-turn counters, summed."""

    @property
    def budget_cut(self) -> bool:
        """The episode was cut by a budget, not ended by the environment."""
        return self.end != "done"


@dataclass(frozen=True)
class RolloutBatch:
    """Sequences sampled by the student, laid out as left-padded prompt + right-padded completion.

    ``input_ids_BT[:, :prompt_len]`` holds the prompts (left padded), the rest the completions
    (padded after the first EOS).
    """

    prompts: tuple[Prompt, ...]
    """The prompt of each sequence (B entries; a prompt sampled n times appears n times)."""
    group_ids_B: torch.Tensor
    """Index of the prompt each sequence answers; sequences of one prompt share it. (B,) int64."""
    input_ids_BT: torch.Tensor
    """Prompt and completion token ids. (B, T) int64."""
    attention_mask_BT: torch.Tensor
    """1 on real tokens (prompt and completion up to and including EOS), 0 on padding. (B, T)."""
    completion_mask_BT: torch.Tensor
    """1 on sampled completion tokens (up to and including EOS), 0 on prompt and padding. (B, T)."""
    sampler_logprobs_BT: torch.Tensor
    """Log-probability of each sampled token under the sampling policy; 0 off the completion.
    (B, T) float32."""
    completions: tuple[str, ...]
    """Decoded completion text of each sequence (B entries)."""
    prompt_len: int
    """Number of (left-padded) prompt positions at the start of every row."""
    sampler_role: str = "student"
    """Which model wrote the completions: ``student`` (on-policy), ``teacher`` (off-policy,
    e.g. the SFT baseline) or ``data`` (fixed reference texts, no model). FLOPs accounting
    charges the sampling to that model (nothing for ``data``)."""
    episodes: tuple[EpisodeSummary, ...] | None = None
    """Multi-turn rollouts (a run with an ``environment``): each sequence's episode, B entries.
    The completion region then holds every turn: the student's tokens (``completion_mask_BT``
    1) and the environment's answers between them (attended to, ``completion_mask_BT`` 0,
    sampler log-probability 0). ``None`` for single-turn rollouts."""

    @property
    def batch_size(self) -> int:
        """Number of sequences B."""
        return int(self.input_ids_BT.shape[0])

    def num_completion_tokens(self) -> int:
        """Total number of sampled tokens in the batch."""
        return int(self.completion_mask_BT.sum().item())

    def to(self, device: torch.device) -> RolloutBatch:
        """The same batch with its tensors on ``device``."""
        return replace(
            self,
            group_ids_B=self.group_ids_B.to(device),
            input_ids_BT=self.input_ids_BT.to(device),
            attention_mask_BT=self.attention_mask_BT.to(device),
            completion_mask_BT=self.completion_mask_BT.to(device),
            sampler_logprobs_BT=self.sampler_logprobs_BT.to(device),
        )

    def take(self, rows: Sequence[int]) -> RolloutBatch:
        """The sequences at indices ``rows``, in that order (same width ``T``)."""
        import torch

        index_B = torch.tensor(list(rows), dtype=torch.long)
        return replace(
            self,
            prompts=tuple(self.prompts[i] for i in rows),
            group_ids_B=self.group_ids_B[index_B],
            input_ids_BT=self.input_ids_BT[index_B],
            attention_mask_BT=self.attention_mask_BT[index_B],
            completion_mask_BT=self.completion_mask_BT[index_B],
            sampler_logprobs_BT=self.sampler_logprobs_BT[index_B],
            completions=tuple(self.completions[i] for i in rows),
            episodes=None if self.episodes is None else tuple(self.episodes[i] for i in rows),
        )

    def select(self, rows: Rows, columns: slice = ALL) -> RolloutBatch:
        """The sub-batch of sequences ``rows`` (a slice or indices), over ``columns`` (whose
        ``start`` must not pass ``prompt_len``): a micro-batch."""
        first = columns.start or 0
        if first > self.prompt_len:
            raise ValueError(f"columns from {first} would cut completions (prompt_len "
                             f"{self.prompt_len})")  # fmt: skip
        return RolloutBatch(
            prompts=pick(self.prompts, rows),
            group_ids_B=self.group_ids_B[rows],
            input_ids_BT=self.input_ids_BT[rows, columns],
            attention_mask_BT=self.attention_mask_BT[rows, columns],
            completion_mask_BT=self.completion_mask_BT[rows, columns],
            sampler_logprobs_BT=self.sampler_logprobs_BT[rows, columns],
            completions=pick(self.completions, rows),
            prompt_len=self.prompt_len - first,
            sampler_role=self.sampler_role,
            episodes=None if self.episodes is None else pick(self.episodes, rows),
        )

    def sequence_lengths(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Real (unpadded) prompt and completion lengths: ``(prompt_B, completion_B)``."""
        prompt_len_B = self.attention_mask_BT[:, : self.prompt_len].sum(1)
        completion_len_B = self.completion_mask_BT.sum(1)
        return prompt_len_B, completion_len_B


@dataclass(frozen=True)
class TeacherScores:
    """What a teacher says about the sampled tokens."""

    logprobs_BT: torch.Tensor
    """Teacher log-probability of each sampled token; 0 off the completion. (B, T) float32."""
    topk_ids_BTK: torch.Tensor | None = None
    """Ids of the teacher's top-k tokens at each position, when requested. (B, T, K) int64."""
    topk_logprobs_BTK: torch.Tensor | None = None
    """Teacher log-probabilities of those tokens. (B, T, K) float32."""
    metrics: Mapping[str, float] = field(default_factory=dict)
    """Scalars the teacher wants logged with the step (e.g. per-teacher KL of a router)."""

    @property
    def top_k(self) -> int:
        """Number K of top-k entries per position (0 when none were requested)."""
        return 0 if self.topk_ids_BTK is None else int(self.topk_ids_BTK.shape[-1])

    def select(self, rows: Rows, columns: slice = ALL) -> TeacherScores:
        """The scores of sequences ``rows`` over ``columns`` (a micro-batch)."""
        return TeacherScores(
            logprobs_BT=self.logprobs_BT[rows, columns],
            topk_ids_BTK=None if self.topk_ids_BTK is None else self.topk_ids_BTK[rows, columns],
            topk_logprobs_BTK=(
                None if self.topk_logprobs_BTK is None else self.topk_logprobs_BTK[rows, columns]
            ),
        )

    def to(self, device: torch.device) -> TeacherScores:
        """The same scores with their tensors on ``device``."""
        return TeacherScores(
            logprobs_BT=self.logprobs_BT.to(device),
            topk_ids_BTK=None if self.topk_ids_BTK is None else self.topk_ids_BTK.to(device),
            topk_logprobs_BTK=(
                None if self.topk_logprobs_BTK is None else self.topk_logprobs_BTK.to(device)
            ),
        )


@dataclass(frozen=True)
class ScoreRequest:
    """What an advantage function or loss needs from the teacher (see ``opd_score_request``)."""

    top_k: int = 0
    """How many of the teacher's most likely tokens per position it needs (0: none, only the
    sampled token's log-probability)."""


@dataclass(frozen=True)
class Advantages:
    """Per-token advantages and the mask of tokens that enter the loss."""

    advantages_BT: torch.Tensor
    """Advantage of each token; 0 where ``mask_BT`` is 0. (B, T) float32."""
    mask_BT: torch.Tensor
    """1 on tokens that are trained on. (B, T) float32."""
    metrics: Mapping[str, float] = field(default_factory=dict)
    """Scalars the advantage function wants logged (e.g. ``reverse_kl``)."""

    def select(self, rows: Rows, columns: slice = ALL) -> Advantages:
        """The advantages of sequences ``rows``."""
        return Advantages(
            self.advantages_BT[rows, columns], self.mask_BT[rows, columns], self.metrics
        )

    def to(self, device: torch.device) -> Advantages:
        """The same advantages on ``device``."""
        return Advantages(self.advantages_BT.to(device), self.mask_BT.to(device), self.metrics)


@dataclass(frozen=True)
class PolicyOutput:
    """The current policy's view of a micro-batch, computed with gradients by the loop."""

    logprobs_BT: torch.Tensor
    """Log-probability of each token under the current weights (differentiable). (B, T)."""
    entropy_BT: torch.Tensor
    """Entropy of the policy's next-token distribution at each position (no grad). (B, T)."""
    logits_BSV: torch.Tensor | None = None
    """The full next-token logits (differentiable, fp32) for losses over whole distributions.
    ``S = T - 1``: ``logits_BSV[:, s]`` predicts token ``s + 1``; 0 where that token is a prompt
    token (the LM head runs on completion positions only). (B, T - 1, V)."""


@dataclass(frozen=True)
class LossOutput:
    """A micro-batch's loss and the scalars to log with it."""

    loss: torch.Tensor
    """Scalar to call ``backward()`` on. Normalised by the step's total number of loss tokens,
    so that summing micro-batch losses gives the step's loss."""
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class GenerationParams:
    """How to sample completions."""

    max_new_tokens: int = 256
    """Most tokens a completion may have (it stops earlier at EOS)."""
    temperature: float = 1.0
    """0 means greedy decoding."""
    top_p: float = 1.0
    """Nucleus sampling: sample from the smallest set of tokens holding this probability."""
    precision: str = "fp32"
    """``bf16``: the sampler's forward passes run under bf16 autocast (``train.precision``);
    log-probabilities are taken in fp32 either way."""


@runtime_checkable
class Generator(Protocol):
    """Anything that turns prompts into completion texts; evaluators use this."""

    name: str

    def generate(self, prompts: Sequence[Prompt], params: GenerationParams) -> list[str]:
        """Return one completion text per prompt."""
        ...


@runtime_checkable
class RolloutPrefetcher(Protocol):
    """Samples rollouts from the student's weights as they are when asked, later and in another
    thread: ``train.overlap`` samples step t+1's rollouts while step t updates the weights. A
    sampler offers one through ``opd_rollout_prefetcher``."""

    def prepare(
        self, prompts: Sequence[Prompt], samples_per_prompt: int
    ) -> Callable[[], Callable[[], RolloutBatch]]:
        """Called in the loop's thread while the weights are those to sample from: capture them
        (a copy, a sync into an engine) and do here what is not thread-safe (random draws,
        tokenization). Returns ``sample``, which the loop runs in a background thread while it
        updates the weights, so it must not read the live student; ``sample()`` returns
        ``finish``, which the loop calls in its own thread to get the :class:`RolloutBatch`
        (decoding texts). The loop calls ``prepare`` again only after ``finish`` returned."""
        ...


@dataclass(frozen=True)
class EvalResult:
    """Metrics of one evaluator on one model."""

    evaluator: str
    target: str
    """``student`` or ``teacher``."""
    metrics: Mapping[str, float]


def pick(items: tuple[Any, ...], rows: Rows) -> tuple[Any, ...]:
    """The entries ``rows`` (a slice or index tensor) of a per-sequence tuple."""
    if isinstance(rows, slice):
        return items[rows]
    return tuple(items[i] for i in rows.tolist())
