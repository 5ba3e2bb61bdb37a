"""The public API of opd-core: every hook a plugin can implement.

A plugin is a module (registered through the ``opd_core`` entry-point group) or an object
(a configured component the loop registers while it runs) with functions named like the hooks
below and marked with :data:`opd_core.hookimpl`. Hooks marked *first result* stop at the first
implementation that returns something other than ``None``; the others collect every result.

Hooks are grouped by the phase of a run in which they are called:

1. registration (when the plugin manager starts, before configs are composed),
2. models (when a run loads the student and the teacher),
3. the rollout environment (the task),
4. the loop's stages, in the order one training step calls them,
5. evaluation,
6. run and step lifecycle.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

from opd_core.types import (
    Advantages,
    EnvReply,
    EpisodeStart,
    EvalResult,
    Generator,
    LossOutput,
    PolicyOutput,
    Prompt,
    RolloutBatch,
    RolloutPrefetcher,
    ScoreRequest,
    TeacherScores,
)

if TYPE_CHECKING:
    import torch
    from hydra.core.config_store import ConfigStore

    from opd_core.context import RunContext
    from opd_core.flops import ModelShape
    from opd_core.modeling import LoadedModel, ModelSpec
    from opd_core.registry import Registry

PROJECT = "opd_core"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

STAGES: tuple[str, ...] = (
    "opd_task_prompts",
    "opd_grade_completions",
    "opd_start_episode",
    "opd_step_episode",
    "opd_select_prompts",
    "opd_sample_rollouts",
    "opd_score_rollouts",
    "opd_compute_advantages",
    "opd_compute_loss",
)
"""First-result hooks answered by the one component a config chose. A second plugin answering
one of them must say ``tryfirst=True`` (or ``trylast=True``), else the run refuses to start
(:func:`opd_core.plugin_manager.check_stage_answers`)."""


# --------------------------------------------------------------------------------------------
# 1. Registration
# --------------------------------------------------------------------------------------------


@hookspec
def opd_register_components(registry: Registry) -> None:
    """Add component factories to ``registry`` under the names configs use, by kind (``task``,
    ``teacher``, ``sampler``, ``prompts``, ``advantage``, ``loss``, ``evaluator``, ``logger``:
    :data:`opd_core.registry.KINDS`).

    Called when a run builds its components. A factory is a class whose constructor takes the
    config node's keys as keyword arguments; see :class:`opd_core.registry.Registry`.
    """


@hookspec(historic=True)
def opd_register_configs(store: ConfigStore) -> None:
    """Add config nodes to Hydra's ``ConfigStore`` before the command line is composed, so that
    ``+task=<name>`` finds a third-party package's options.

    Historic: a plugin registered after the call (one a config file lists in ``plugins``) is
    called when it registers, still before composing. The command line calls it through
    :func:`opd_core.plugin_manager.register_configs`; a direct call is
    ``pm.hook.opd_register_configs.call_historic(kwargs={"store": store})``.

    :func:`opd_core.config.store_config_dir` stores a package's folder of YAML files.
    """


# --------------------------------------------------------------------------------------------
# 2. Models
# --------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def opd_load_model(spec: ModelSpec, role: str, device: torch.device) -> LoadedModel | None:
    """Load the model and tokenizer ``spec`` names, for ``role`` ``"student"`` or ``"teacher"``,
    onto ``device``; return ``None`` if this plugin does not handle ``spec.path``.

    Stops at first non-None result. Raise :class:`opd_core.OPDError` with the fix when the model
    is this plugin's but cannot be loaded (missing weights, no network).
    """


@hookspec(firstresult=True)
def opd_model_shape(role: str) -> ModelShape | None:
    """Describe the model playing ``role`` (``"teacher"``; the loop measures the student itself)
    for FLOPs accounting, or return ``None`` if this plugin does not hold that model.

    Stops at first non-None result. :meth:`opd_core.flops.ModelShape.of` measures a
    ``transformers`` model; a remote teacher can build one from the served model's config.
    Without an answer the run logs no teacher FLOPs.
    """


# --------------------------------------------------------------------------------------------
# 3. Rollout environment (the task)
# --------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def opd_task_prompts(split: str) -> Sequence[Prompt] | None:
    """Return the task's prompts for ``split`` (``"train"`` or ``"eval"``).

    Stops at first non-None result.
    """


@hookspec(firstresult=True)
def opd_grade_completions(
    prompts: Sequence[Prompt], completions: Sequence[str]
) -> list[float] | None:
    """Grade each completion against its prompt; return one reward per completion (1.0 for a
    correct answer, 0.0 for a wrong one, or a graded score in between).

    Stops at first non-None result. Returning ``None`` means the task has no grader.
    """


@hookspec(firstresult=True)
def opd_start_episode(prompt: Prompt) -> EpisodeStart | None:
    """Open a multi-turn episode for ``prompt``: the conversation the student answers first and
    the environment's initial state. Answered by the run's ``environment`` component; a run
    without one samples one completion per prompt and never calls this.

    Stops at first non-None result.
    """


@hookspec(firstresult=True)
def opd_step_episode(prompt: Prompt, state: Any, reply: str, turn: int) -> EnvReply | None:
    """Answer the student's assistant turn number ``turn`` (1-based), whose text is ``reply``
    (decoded from the exact tokens it sampled, special tokens skipped), in the episode ``state``
    describes: the observation to append, the turn's reward, whether the episode is over, and
    the new state. Raising, or returning something else than an :class:`EnvReply`, ends the run
    with one sentence naming the environment.

    Stops at first non-None result.
    """


# --------------------------------------------------------------------------------------------
# 4. Loop stages, in the order a training step calls them
# --------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def opd_select_prompts(step: int, pool: Sequence[Prompt], count: int) -> list[Prompt] | None:
    """Choose ``count`` prompts from ``pool`` (the task's train prompts) for training ``step``.

    Stops at first non-None result. The prompt source owns the order (shuffling, reuse).
    """


@hookspec(firstresult=True)
def opd_sample_rollouts(prompts: Sequence[Prompt], samples_per_prompt: int) -> RolloutBatch | None:
    """Sample ``samples_per_prompt`` completions per prompt from the current student weights,
    recording each sampled token's log-probability under the sampler.

    Stops at first non-None result.
    """


@hookspec(firstresult=True)
def opd_rollout_prefetcher() -> RolloutPrefetcher | None:
    """Return a :class:`RolloutPrefetcher` that samples a step's rollouts ahead, from the
    weights before the previous step's update and while that update runs, or ``None`` if this
    sampler cannot. Called once at set-up, and only with ``train.overlap=true``; without an
    answer the run refuses ``train.overlap``.

    Stops at first non-None result. Steps whose rollouts were sampled ahead do not call
    ``opd_sample_rollouts`` (so a wrapper of it does not see them). ``sampler=hf`` answers with a
    frozen copy of the student refreshed before each update, ``sampler=vllm`` with its engine,
    synced before each update.
    """


@hookspec
def opd_score_request() -> ScoreRequest | None:
    """Say what this plugin needs from the teacher each step: a :class:`ScoreRequest` (with the
    number of top-k tokens per position it needs), or ``None`` if it needs no teacher scores.

    Every answer is collected. The loop calls ``opd_score_rollouts`` only when some plugin asks,
    with the largest ``top_k`` asked for: the RL and SFT baselines skip teacher scoring.
    """


@hookspec(firstresult=True)
def opd_score_rollouts(rollouts: RolloutBatch, top_k: int) -> TeacherScores | None:
    """Score every sampled token with the teacher: its log-probability given the same prefix,
    and the teacher's ``top_k`` most likely tokens at each position when ``top_k > 0``.

    Stops at first non-None result.
    """


@hookspec(firstresult=True)
def opd_compute_advantages(
    rollouts: RolloutBatch, scores: TeacherScores | None, rewards_B: torch.Tensor | None
) -> Advantages | None:
    """Turn teacher scores (and the task's rewards, when graded) into per-token advantages.

    ``scores`` is ``None`` when no plugin asked for teacher scores (``opd_score_request``);
    ``rewards_B`` is ``None`` when the task has no grader.

    Stops at first non-None result. On-policy distillation's default is the negative reverse KL
    of each sampled token, ``-(logp_student - logp_teacher)``.
    """


@hookspec(firstresult=True)
def opd_compute_loss(
    rollouts: RolloutBatch,
    policy: PolicyOutput,
    advantages: Advantages,
    scores: TeacherScores | None,
    num_loss_tokens: int,
) -> LossOutput | None:
    """Compute the loss of one micro-batch from the current policy's log-probabilities (and,
    for distribution-matching losses, its full logits and the teacher's top-k ``scores``).

    ``num_loss_tokens`` is the number of loss tokens in the whole step (all micro-batches), so
    that the micro-batch losses add up to the step's per-token mean. Stops at first non-None
    result.
    """


# --------------------------------------------------------------------------------------------
# 5. Evaluation
# --------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def opd_eval_generator(role: str) -> Generator | None:
    """Return a generator for the model playing ``role`` (``"student"`` or ``"teacher"``), or
    ``None`` if this plugin does not hold that model. Stops at first non-None result.
    """


@hookspec(firstresult=True)
def opd_eval_model(role: str) -> LoadedModel | None:
    """Return the live ``transformers`` model and tokenizer playing ``role`` (``"student"`` or
    ``"teacher"``), for evaluators that need the model object itself rather than a generator
    (log-likelihood benchmarks such as lm-eval); ``None`` if this plugin does not hold that model
    in this process (a remote or vLLM-served one). Without an answer for the student, an
    evaluator uses :attr:`opd_core.context.RunContext.student`, the policy being trained.

    Stops at first non-None result. The object is the one the run uses, not a copy: an evaluator
    must not change its weights, and puts back its train/eval mode when done.
    """


@hookspec
def opd_evaluate(generator: Generator, role: str, step: int) -> EvalResult | None:
    """Evaluate ``generator`` (the model playing ``role``) at training ``step``; every evaluator's
    result is collected and logged.
    """


# --------------------------------------------------------------------------------------------
# 6. Lifecycle
# --------------------------------------------------------------------------------------------


@hookspec
def opd_run_start(ctx: RunContext) -> None:
    """The run is set up (models loaded, components built) and about to train."""


@hookspec
def opd_step_end(ctx: RunContext, step: int, metrics: Mapping[str, float]) -> None:
    """Training ``step`` finished with ``metrics`` (already written to ``metrics.jsonl``)."""


@hookspec
def opd_run_end(ctx: RunContext, summary: Mapping[str, Any]) -> None:
    """The run finished; ``summary`` is what ``summary.json`` holds."""
