"""The on-policy distillation loop: ``setup()``, ``train()``, ``cleanup()``.

One training step walks the stages of the loop, each a hook answered by a configured component::

    prompts    <- opd_select_prompts      (prompt source)
    rollouts   <- opd_sample_rollouts     (student sampler)
    rewards    <- opd_grade_completions   (task, optional)
    scores     <- opd_score_rollouts      (teacher, when some plugin's opd_score_request asks)
    advantages <- opd_compute_advantages  (advantage function, when the loss reads advantages)
    update     <- opd_compute_loss        (loss) + AdamW

What happens between steps (signals, the state an interrupt keeps, sampling the next step's
rollouts ahead with ``train.overlap``) is :class:`opd_core.boundary.StepBoundary`'s; the update's
pieces live in :mod:`opd_core.update`, a step's metrics in :mod:`opd_core.step_metrics`. Every
step also books the FLOPs it spent (``opd_core.flops``) into metrics and the summary.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pluggy
import torch

from opd_core.boundary import StepBoundary
from opd_core.checkpoint import (
    TrainerState,
    capture_rng,
    check_state_layout,
    checkpoint_dir,
    latest_checkpoint,
    load_model_weights,
    load_trainer_state,
    rank_entry,
    read_model_weights,
    remove_partial_checkpoints,
    restore_rng,
    save_checkpoint,
)
from opd_core.config import RunConfig
from opd_core.context import RunContext
from opd_core.devices import pick_device
from opd_core.distributed import Distributed, main_process_first
from opd_core.errors import OPDError
from opd_core.flops import SCORING_FLOPS, FlopsLedger, ModelShape, rollout_flops
from opd_core.guard import FiniteGuard
from opd_core.interrupts import Interrupts
from opd_core.limits import (
    check_generation_lengths,
    check_top_k,
    limit_prompts,
    model_max_length,
    prompt_token_limit,
    vocab_size,
)
from opd_core.metrics import MetricsLog, StageTimer, write_summary
from opd_core.modeling import load_model
from opd_core.objective import check_objective, step_advantages
from opd_core.overlap import plan_overlap
from opd_core.plugin_manager import (
    COMPONENT_PREFIX,
    build_registry,
    check_hooks,
    check_stage_answers,
    disable_plugins,
    register_plugin,
)
from opd_core.precision import auto_precision, probe_bf16, resolve_precision
from opd_core.progress import Progress
from opd_core.reduction import Max
from opd_core.registry import COMPONENT_KINDS, Registry
from opd_core.step_metrics import merge_eval_results, step_metrics
from opd_core.types import (
    Advantages,
    EvalResult,
    Prompt,
    RolloutBatch,
    RolloutPrefetcher,
    ScoreRequest,
    TeacherScores,
)
from opd_core.update import (
    accumulate_gradients,
    clip_gradients,
    make_optimizer,
    rescale_learning_rate,
    step_and_mark_updated,
)
from opd_core.watch import BestCheckpoint, DivergenceStop

log = logging.getLogger("opd_core")


class Trainer:
    """Runs one on-policy distillation experiment into ``output_dir``."""

    def __init__(
        self,
        config: RunConfig,
        pm: pluggy.PluginManager,
        output_dir: Path,
        interrupts: Interrupts | None = None,
    ) -> None:
        self.config = config
        self.interrupts = interrupts or Interrupts()
        """Signals wait while a step changes the student (:class:`StepBoundary`)."""
        self.pm = pm
        self.hook = pm.hook
        self.output_dir = output_dir
        self.components: dict[str, Any] = {}
        self.start_step = 0
        self.total_steps = config.train.steps
        self.flops = FlopsLedger()
        self.evals: dict[str, dict[str, float]] = {}
        """Summary entries so far: ``student_before``, ``teacher``, ``student_after``."""
        ckpt, stop = config.checkpoint, config.divergence
        self.best = BestCheckpoint(ckpt.best_metric, ckpt.best_mode)
        """The best evaluation's checkpoint (``checkpoint.best_metric``)."""
        self.divergence = DivergenceStop(stop.metric, stop.mode, stop.margin, stop.patience)
        """When to stop early (``divergence.metric``)."""
        self.stopped: dict[str, Any] | None = None
        """Where and why the run stopped early (the divergence stop), if it did."""

    # ---------------------------------------------------------------- setup

    def setup(self) -> None:
        """Build components, load the student, set up the optimizer, resume if asked."""
        self._start_processes()
        self._build_components()  # validates every config before weights load
        self._refuse_to_overwrite()
        self._load_student()
        self._set_up_components()
        self._make_optimizer()
        self._load_train_pool()
        self._plan_scoring()
        self.boundary = self._plan_boundary()
        self.metrics = MetricsLog(self.output_dir) if self.dist.is_main else None
        source = self._resume() if self.config.resume else None
        self.boundary.check_loaded(
            list(self.student.model.named_parameters()), source or self.config.student.model.path
        )
        self.hook.opd_run_start(ctx=self.ctx)

    def _start_processes(self) -> None:
        """Join the other training processes (if any) and agree on one run folder, rank 0's."""
        cfg = self.config
        self.dist = Distributed(cfg.distributed, pick_device(cfg.device))
        self.output_dir = self.dist.broadcast(self.output_dir)
        self.dist.check_divisible(cfg.train.prompts_per_step, "train.prompts_per_step")
        self.device = self.dist.device
        # a bad value, or bf16 on hardware without it, is refused before any weights load;
        # auto is decided on the student once it is loaded (_load_student)
        auto = cfg.train.precision == "auto"
        self.precision = "fp32" if auto else resolve_precision(cfg.train.precision, self.device)

    def _build_components(self) -> None:
        """Apply ``disable_plugins`` and ``plugins``, then build every configured component."""
        cfg = self.config
        disable_plugins(self.pm, cfg.disable_plugins)
        for module in cfg.plugins:
            if self.pm.get_plugin(module) is None:  # unless the caller registered it already
                register_plugin(self.pm, module)
        check_hooks(self.pm)
        self.components = build_components(build_registry(self.pm), cfg)

    def _load_student(self) -> None:
        """Seed, load the student (rank 0 first), check lengths, apply LoRA/checkpointing."""
        cfg = self.config
        random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        log.info("loading student %s", cfg.student.model.path)
        with main_process_first(self.dist):  # rank 0 fills shared caches first
            student = load_model(self.hook, cfg.student.model, "student", self.device)
        self.max_length = model_max_length(student.model)
        check_generation_lengths(
            self.max_length,
            {
                "train.max_new_tokens": cfg.train.max_new_tokens,
                "eval.max_new_tokens": cfg.eval.max_new_tokens,
            },
        )
        student.model = prepare_student(student.model, cfg)
        self.student = student
        if cfg.train.precision == "auto":  # measured on the student itself
            log.info("precision: auto: timing the student in fp32 and bf16")
            self.precision, probe = auto_precision(student.model, self.device)
            log.info("precision: %s (%s)", self.precision, probe.describe())
        elif cfg.train.precision == "bf16":
            log.info("precision: bf16 (%s)", probe_bf16(self.device.type).describe())

    def _set_up_components(self) -> None:
        """Register each component as a plugin and call its ``setup(ctx)``; check who answers."""
        cfg = self.config
        self.ctx = RunContext(
            cfg,
            self.hook,
            self.device,
            self.output_dir,
            self.student,
            cfg.seed,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            precision=self.precision,
        )
        with main_process_first(self.dist):
            for name, component in self.components.items():
                self.pm.register(component, name=f"{COMPONENT_PREFIX}{name}")
                if hasattr(component, "setup"):
                    component.setup(self.ctx)
        check_hooks(self.pm)
        check_stage_answers(self.pm)

    def _make_optimizer(self) -> None:
        """Wrap the student for training (DDP/FSDP), then AdamW and the learning-rate schedule."""
        cfg = self.config
        if self.dist.enabled:
            torch.manual_seed(cfg.seed + self.dist.rank)  # ranks sample independently
        self.train_model = self.dist.wrap(self.student.model)
        """The student as training calls it (a DDP wrapper or FSDP-sharded when distributed)."""
        params = [p for p in self.train_model.parameters() if p.requires_grad]
        self.optimizer, self.scheduler = make_optimizer(
            params, cfg.train, self.dist.sharded, lambda: self.total_steps
        )

    def _load_train_pool(self) -> None:
        """The task's train prompts that fit, the configured subset, and the number of steps."""
        cfg = self.config
        pool = self.hook.opd_task_prompts(split="train")
        if not pool:
            raise OPDError(
                f"Task '{cfg.task['name']}' has no training prompts; check its data "
                "source in the task config."
            )
        limit = prompt_token_limit(
            cfg.train.max_prompt_tokens, self.max_length, cfg.train.max_new_tokens
        )
        pool = limit_prompts(pool, self.student.tokenizer, limit, cfg.train.long_prompts)
        self.train_pool: Sequence[Prompt] = prompt_pool(pool, cfg.train.pool_size, cfg.seed)
        if cfg.train.passes is not None:
            self.total_steps = math.ceil(
                cfg.train.passes * len(self.train_pool) / cfg.train.prompts_per_step
            )
            log.info(
                "%s passes over %d prompts: %d steps",
                cfg.train.passes,
                len(self.train_pool),
                self.total_steps,
            )

    def _plan_scoring(self) -> None:
        """What the teacher is asked each step, and the model shapes FLOPs are counted with."""
        self.score_request = merge_score_requests(self.hook.opd_score_request())
        if self.score_request is not None:
            check_top_k(self.score_request.top_k, vocab_size(self.student.model))
        self.student_shape = ModelShape.of(self.student.model)
        self.teacher_shape: ModelShape | None = self.hook.opd_model_shape(role="teacher")

    def _plan_boundary(self) -> StepBoundary:
        """What happens between steps: signals, state capture and, with ``train.overlap``,
        sampling ahead through the sampler's prefetcher (or a clear refusal)."""
        cfg = self.config
        prefetcher: RolloutPrefetcher | None = None
        if cfg.train.overlap:
            prefetcher = plan_overlap(
                self.hook,
                cfg.sampler,
                self.components.get("loss"),
                str(cfg.loss.get("name", "?")),
                self.dist.world_size,
            )
        guard = FiniteGuard(
            self.output_dir,
            cfg.train,
            {
                kind.node: str(getattr(cfg, kind.node).get("name", "?"))
                for kind in COMPONENT_KINDS
                if not kind.many and getattr(cfg, kind.node) is not None
            },
            combine=self.dist.sum if self.dist.enabled else None,
        )
        return StepBoundary(
            self.interrupts,
            self.components,
            self.output_dir,
            save=self.save,
            has_work=lambda: bool(self.evals),
            distributed=self.dist.enabled,
            prefetcher=prefetcher,
            samples_per_prompt=cfg.train.samples_per_prompt,
            last_step=self.total_steps,
            guard=guard,
            weights=[(n, p) for n, p in self.train_model.named_parameters() if p.requires_grad],
        )

    def _refuse_to_overwrite(self) -> None:
        if not self.config.resume and latest_checkpoint(self.output_dir) is not None:
            raise OPDError(
                f"{self.output_dir} already holds checkpoints; set resume=true to "
                "continue that run, or choose another hydra.run.dir."
            )

    def _resume(self) -> str | None:
        """Continue from the run folder's latest checkpoint, if any; where from."""
        if self.dist.is_main:
            for leftover in remove_partial_checkpoints(self.output_dir):
                log.info("removed %s, left by an interrupted checkpoint write", leftover)
        checkpoint = latest_checkpoint(self.output_dir)
        if checkpoint is None:
            log.info(
                "resume=true but %s has no checkpoint yet: starting from step 0", self.output_dir
            )
            return None
        state = load_trainer_state(checkpoint)
        layout = state.components.get("_state_layout", "full")
        check_state_layout(checkpoint, layout, self.dist.sharded)
        if self.dist.sharded:
            weights = read_model_weights(checkpoint)
            self.dist.load_sharded(self.train_model, self.optimizer, weights, state.optimizer)
        else:
            load_model_weights(self.student.model, checkpoint)
            self.optimizer.load_state_dict(state.optimizer)
        self.scheduler.load_state_dict(state.scheduler)
        old_lr = rescale_learning_rate(self.optimizer, self.scheduler, self.config.train.lr)
        if old_lr is not None:
            log.warning(
                "resumed with train.lr=%g (the checkpoint's run had %g)",
                self.config.train.lr,
                old_lr,
            )
        for name, component in self.components.items():
            if name in state.components and hasattr(component, "load_state_dict"):
                component.load_state_dict(state.components[name])
        self.evals = dict(state.components.get("_evals", {}))
        self.best.load_state_dict(state.components.get("_best", {}))
        self.divergence.load_state_dict(state.components.get("_divergence", {}))
        rank, world = self.dist.rank, self.dist.world_size
        self.flops.load_state_dict(rank_entry(state.components, "_flops", rank, world))
        restore_rng(rank_entry({"_rng": state.rng, **state.components}, "_rng", rank, world))
        self.start_step = state.step
        log.info("resumed from %s (step %d)", checkpoint, state.step)
        return str(checkpoint)

    # ---------------------------------------------------------------- train

    def train(self) -> dict[str, Any]:
        """Run the remaining steps; return the summary (also written to ``summary.json``)."""
        cfg, boundary = self.config, self.boundary
        started = time.perf_counter()
        boundary.hold()  # signals wait except inside the stretches the boundary opens
        if self.start_step == 0:
            with boundary.between_steps(0):
                self._evaluate_at_start()
        progress = Progress(
            total=self.total_steps,
            initial=self.start_step,
            enabled=cfg.progress and self.dist.is_main,
        )
        progress.show_eval(self.evals.get("student_before"))
        last: dict[str, float] = {}
        end = self.total_steps
        with progress, boundary.loop():
            for step in range(self.start_step + 1, self.total_steps + 1):
                with boundary.step(step):  # a signal before the update checkpoints step - 1
                    last = self.train_step(step)
                    scores = self._evaluate_during(step, progress)
                    last.update({f"eval/{k}": v for k, v in scores.items()})
                    self._log(step, last, progress)
                    self._save_at(step, new_best=self.best.observe(step, scores))
                    stop = self._stop_reason(step, last, scores)
                if stop is not None:
                    end = self._stop_early(step, stop)
                    break
        with boundary.between_steps(end):
            self.evals["student_after"] = self.evaluate("student", step=end)
            self.best.observe(end, self.evals["student_after"])
        return self._finish(end, last, started)

    def train_step(self, step: int) -> dict[str, float]:
        """One step of on-policy distillation; returns its metrics."""
        timer, started = StageTimer(), time.perf_counter()
        rollouts, overlap = self.boundary.rollouts(step, self.select_prompts, self.sample, timer)
        rewards_B = self.grade(rollouts, timer)
        scores = self.score(rollouts, timer)
        advantages = self.compute_advantages(rollouts, scores, rewards_B)
        with timer.stage("update"):
            update = self.update(step, rollouts, advantages, scores, rewards_B)
        logged = advantages if self.config.advantage is not None else None  # 1s: nothing to log
        metrics = step_metrics(step, rollouts, scores, rewards_B, logged, update)
        metrics.update(self._account(step, rollouts, scores))
        metrics.update({**overlap, **timer.pop()})
        metrics["time/step_s"] = Max(round(time.perf_counter() - started, 4))
        return self.dist.combine_metrics(metrics)

    # ------------------------------------------------------------ the stages of a step

    def select_prompts(self, step: int) -> list[Prompt]:
        """This process's share of the prompts the prompt source chooses for ``step``."""
        prompts = self.hook.opd_select_prompts(
            step=step, pool=self.train_pool, count=self.config.train.prompts_per_step
        )
        return list(self.dist.shard(prompts))  # every rank picked the same; each takes its share

    def sample(self, prompts: list[Prompt]) -> RolloutBatch:
        """The student's answers to ``prompts`` (``train.samples_per_prompt`` each); episodes
        with an ``environment``."""
        rollouts: RolloutBatch = self.hook.opd_sample_rollouts(
            prompts=prompts, samples_per_prompt=self.config.train.samples_per_prompt
        )
        environment = self.config.environment
        if environment is not None and rollouts is not None and rollouts.episodes is None:
            raise OPDError(
                f"sampler '{self.config.sampler.get('name', '?')}' wrote single-turn rollouts "
                f"although environment '{environment.get('name', '?')}' is configured; use a "
                "sampler that runs episodes (hf, vllm, teacher_samples) or environment=null."
            )
        return rollouts

    def grade(self, rollouts: RolloutBatch, timer: StageTimer) -> torch.Tensor | None:
        """The task's reward of each sequence, (B,) float32; ``None`` when nothing grades."""
        with timer.stage("grade"):
            if rollouts.episodes is not None:  # multi-turn: the environment's episode rewards
                return torch.tensor([e.reward for e in rollouts.episodes], dtype=torch.float32)
            rewards = self.hook.opd_grade_completions(
                prompts=rollouts.prompts, completions=rollouts.completions
            )
            return torch.tensor(rewards, dtype=torch.float32) if rewards is not None else None

    def score(self, rollouts: RolloutBatch, timer: StageTimer) -> TeacherScores | None:
        """The teacher's scores of the sampled tokens, when the objective asked for them."""
        if self.score_request is None:
            return None
        with timer.stage("score"):
            scores = self.hook.opd_score_rollouts(rollouts=rollouts, top_k=self.score_request.top_k)
        if scores is None:
            raise OPDError(
                "The objective needs teacher scores but no teacher scored the rollouts; "
                "configure a teacher (+teacher=<name>)."
            )
        return scores

    def compute_advantages(
        self, rollouts: RolloutBatch, scores: TeacherScores | None, rewards_B: torch.Tensor | None
    ) -> Advantages:
        """Each completion token's advantage: the advantage function's answer, or 1 when the
        objective has none (:mod:`opd_core.objective`)."""
        configured = self.config.advantage is not None
        return step_advantages(self.hook, rollouts, scores, rewards_B, configured)

    def update(
        self,
        step: int,
        rollouts: RolloutBatch,
        advantages: Advantages,
        scores: TeacherScores | None,
        rewards_B: torch.Tensor | None = None,
    ) -> dict[str, float]:
        """Accumulate the loss over micro-batches and take ``update_epochs`` optimizer steps.

        From here to the end of the step a signal waits (:meth:`StepBoundary.hold`). A loss or
        gradient that is not finite is never applied, and weights that are not finite after it
        end the run before the step is saved (:class:`opd_core.guard.FiniteGuard`).
        """
        self.boundary.hold()
        cfg, model = self.config.train, self.train_model
        num_loss_tokens = max(int(self.dist.sum(float(advantages.mask_BT.sum()))), 1)
        sums: dict[str, float] = {}
        model.train()
        grad_norm = 0.0
        for _ in range(cfg.update_epochs):
            self.optimizer.zero_grad(set_to_none=True)
            batch = (rollouts, advantages, scores)
            accumulate_gradients(
                model, self.hook, self.dist, batch, cfg.micro_batch_size, num_loss_tokens, sums,
                self.precision,
            )  # fmt: skip
            grad_norm = clip_gradients(model, cfg.max_grad_norm)
            inputs = (rollouts, advantages, scores, rewards_B)
            self.boundary.check_update(step, sums.get("loss", 0.0), grad_norm, inputs)
            step_and_mark_updated(self.optimizer)
        self.boundary.check_weights(step)
        lr = float(self.scheduler.get_last_lr()[0])
        self.scheduler.step()
        epochs = cfg.update_epochs
        return {**{k: v / epochs for k, v in sums.items()}, "grad_norm": grad_norm, "lr": lr}

    def _account(
        self, step: int, rollouts: RolloutBatch, scores: TeacherScores | None
    ) -> dict[str, float]:
        """Book the step's FLOPs; the passes over the pool and the FLOPs, as metrics."""
        reported = None if scores is None else scores.metrics.get(SCORING_FLOPS)
        step_flops = rollout_flops(
            rollouts,
            self.student_shape,
            self.teacher_shape,
            scored=scores is not None,
            update_epochs=self.config.train.update_epochs,
            teacher_scoring=None if reported is None else float(reported),
        )
        self.flops.add(step_flops)
        passes = step * self.config.train.prompts_per_step / len(self.train_pool)
        return {
            "passes": passes,
            **step_flops.metrics("flops_step"),
            **self.flops.metrics("flops"),
        }

    def _save_at(self, step: int, new_best: bool) -> None:
        """Checkpoint every ``checkpoint.every`` steps, and when an evaluation is the best."""
        every = self.config.checkpoint.every
        new_best = self.dist.broadcast(new_best)  # rank 0 decides: saving is collective
        if new_best or (every and step % every == 0):
            self.save(step)

    def _stop_reason(
        self, step: int, metrics: dict[str, float], scores: dict[str, float]
    ) -> str | None:
        """Why the divergence stop ends the run after ``step``, or ``None`` (rank 0's view)."""
        reason = self.divergence.observe_step(step, metrics) or self.divergence.observe_eval(
            step, scores
        )
        return self.dist.broadcast(reason)

    def _stop_early(self, step: int, reason: str) -> int:
        """Record and say that the run ends after ``step``; return ``step``."""
        self.stopped = {"step": step, "reason": reason}
        log.warning(
            "stopping early after step %d of %d (divergence.metric): %s",
            step,
            self.total_steps,
            reason,
        )
        return step

    def _log(self, step: int, metrics: dict[str, float], progress: Progress) -> None:
        """Write the step's metrics, tell the plugins the step ended, advance the bar."""
        if self.metrics is not None:
            self.metrics.write(metrics)
        self.hook.opd_step_end(ctx=self.ctx, step=step, metrics=metrics)
        progress.update(metrics)

    # ---------------------------------------------------------------- evaluate / save

    def _evaluate_at_start(self) -> None:
        """The teacher and the student before training, unless a resumed run has them."""
        cfg = self.config.eval
        if cfg.teacher and "teacher" not in self.evals:
            self.evals["teacher"] = self.evaluate("teacher", step=0)
        if cfg.at_start and "student_before" not in self.evals:
            self.evals["student_before"] = before = self.evaluate("student", step=0)
            self.best.observe(0, before)  # checks the metric's name; step 0 is no candidate
            self.divergence.observe_eval(0, before)  # the first value to beat

    def _evaluate_during(self, step: int, progress: Progress) -> dict[str, float]:
        """Every ``eval.every`` steps (but the last, evaluated at the end): the student's
        scores (none on other steps)."""
        every = self.config.eval.every
        if not every or step % every or step >= self.total_steps:
            return {}
        scores = self.evaluate("student", step)
        progress.show_eval(scores)
        return scores

    def evaluate(self, role: str, step: int) -> dict[str, float]:
        """Run every evaluator on the model playing ``role``; merged metrics by name."""
        self.boundary.wait_for_sampling()  # nothing samples in the background while evaluating
        generator = self.hook.opd_eval_generator(role=role)
        if generator is None:
            log.info("no generator for the %s: skipping its evaluation", role)
            return {}
        results: list[EvalResult] = [
            r
            for r in self.hook.opd_evaluate(generator=generator, role=role, step=step)
            if r is not None
        ]
        return merge_eval_results(results)

    def save(self, step: int) -> Path:
        """Checkpoint the student and the trainer state at ``step``.

        With rollouts being sampled ahead, it waits for them and saves the components' state
        from before their prompts were selected: a resume selects and samples them again.
        """
        self.boundary.check_saved(step)  # no checkpoint holds weights that are not finite
        components = self.boundary.component_states()
        components["_evals"] = dict(self.evals)
        components["_best"] = self.best.state_dict()
        components["_divergence"] = self.divergence.state_dict()
        components["_flops"] = self.flops.state_dict()
        components["_state_layout"] = "sharded" if self.dist.sharded else "full"
        if self.dist.enabled:
            components["_rng_by_rank"] = self.dist.gather(capture_rng())
            components["_flops_by_rank"] = self.dist.gather(self.flops.state_dict())
        model_state = self.dist.full_state_dict(self.train_model)  # collective under FSDP
        state = TrainerState(
            step=step,
            optimizer=self.dist.optimizer_state_dict(self.train_model, self.optimizer),
            scheduler=self.scheduler.state_dict(),
            rng=capture_rng(),
            components=components,
        )
        if self.dist.is_main:
            save_checkpoint(
                self.output_dir,
                self.student.model,
                self.student.tokenizer,
                state,
                keep=self.config.checkpoint.keep,
                model_state=model_state,
                best_step=self.best.step,
            )
        self.dist.barrier()
        return checkpoint_dir(self.output_dir, step)

    def _finish(self, end: int, last: dict[str, float], started: float) -> dict[str, Any]:
        """Checkpoint the last step, write the summary and tell the plugins the run ended."""
        checkpoint = self.save(end)
        summary = {
            **self.evals,
            "steps": end,
            "flops": self.dist.combine_metrics(self.flops.metrics("flops")),
            "final_train_metrics": last,
            "checkpoint": str(checkpoint),
            "wall_time_s": round(time.perf_counter() - started, 2),
        }
        best = self.best.summary(self.output_dir)
        if best is not None:
            summary["best_checkpoint"] = best
            log.info(
                "best checkpoint: %s (%s %.4g at step %d)",
                best["checkpoint"],
                best["metric"],
                best["value"],
                best["step"],
            )
        if self.stopped is not None:
            summary["stopped_early"] = self.stopped
        if self.dist.is_main:
            write_summary(self.output_dir, summary)
        self.dist.barrier()  # every rank is done before any leaves the process group
        self.hook.opd_run_end(ctx=self.ctx, summary=summary)
        return summary

    def cleanup(self) -> None:
        """Release components (servers, engines) and unregister them."""
        for component in self.components.values():
            if hasattr(component, "close"):
                component.close()
            if self.pm.is_registered(component):
                self.pm.unregister(component)
        if hasattr(self, "dist"):
            if hasattr(self, "train_model"):
                del self.train_model  # DDP's reducer goes while the process group is alive
            self.dist.close()


# -------------------------------------------------------------------- helpers


def build_components(registry: Registry, cfg: RunConfig) -> dict[str, Any]:
    """Construct every configured component (cheap; checks each config against its factory)."""
    components: dict[str, Any] = {}
    for kind in COMPONENT_KINDS:
        node = getattr(cfg, kind.node)
        if kind.optional and node is None:
            continue
        if not kind.many:
            components[kind.name] = registry.build(kind.name, node)
            continue
        for key, item in node.items():
            if item is not None:
                components[f"{kind.name}:{key}"] = registry.build(kind.name, item)
    advantage = str(cfg.advantage["name"]) if cfg.advantage is not None else None
    check_objective(
        components["loss"], str(cfg.loss["name"]), advantage, registry.names("advantage")
    )
    return components


def prompt_pool(pool: Sequence[Prompt], pool_size: int | None, seed: int) -> Sequence[Prompt]:
    """The training pool: all of ``pool``, or a seeded random subset of ``pool_size`` prompts."""
    if pool_size is None:
        return pool
    if pool_size > len(pool):
        raise OPDError(
            f"train.pool_size={pool_size} but the task has only {len(pool)} training prompts; "
            f"use train.pool_size<={len(pool)} or null for all of them."
        )
    chosen = sorted(random.Random(seed).sample(range(len(pool)), pool_size))
    return [pool[i] for i in chosen]


def merge_score_requests(requests: Sequence[ScoreRequest | None]) -> ScoreRequest | None:
    """One request covering every plugin's (the largest top-k); ``None`` if nobody asked."""
    asked = [r for r in requests if r is not None]
    if not asked:
        return None
    return ScoreRequest(top_k=max(r.top_k for r in asked))


def prepare_student(model: Any, cfg: RunConfig) -> Any:
    """Apply LoRA and gradient checkpointing as configured."""
    if cfg.student.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    lora = cfg.student.lora
    if lora is None:
        return model
    from peft import LoraConfig, get_peft_model

    targets = lora.target_modules
    peft_config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets if isinstance(targets, str) else list(targets),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, peft_config)
