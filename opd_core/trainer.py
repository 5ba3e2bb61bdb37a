"""The on-policy distillation loop: ``setup()``, ``train()``, ``cleanup()``.

One training step walks the stages of the loop, each a hook answered by a configured component::

    prompts    <- opd_select_prompts      (prompt source)
    rollouts   <- opd_sample_rollouts     (student sampler)
    rewards    <- opd_grade_completions   (task, optional)
    scores     <- opd_score_rollouts      (teacher, when some plugin's opd_score_request asks)
    advantages <- opd_compute_advantages  (advantage function)
    update     <- opd_compute_loss        (loss) + AdamW

With ``train.overlap`` the next step's rollouts are sampled in a background thread while this
step grades, scores and updates (``opd_core.overlap``). Every step also books the FLOPs it
spent (``opd_core.flops``) into metrics and the summary.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pluggy
import torch

from opd_core.checkpoint import (
    TrainerState,
    capture_rng,
    checkpoint_dir,
    latest_checkpoint,
    load_model_weights,
    load_trainer_state,
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
from opd_core.flops import FlopsLedger, ModelShape, rollout_flops
from opd_core.interrupts import Interrupts, RunInterrupted
from opd_core.limits import (
    check_generation_lengths,
    check_top_k,
    limit_prompts,
    model_max_length,
    prompt_token_limit,
    vocab_size,
)
from opd_core.metrics import MetricsLog, StageTimer, write_summary
from opd_core.modeling import entropy, gather_logprobs, load_model, next_token_logits
from opd_core.overlap import SAMPLED_NOW, Prefetch, plan_overlap
from opd_core.plugin_manager import (
    COMPONENT_PREFIX,
    build_registry,
    check_hooks,
    check_stage_answers,
    disable_plugins,
    register_plugin,
)
from opd_core.progress import Progress
from opd_core.reduction import Max, Min, Sum
from opd_core.registry import COMPONENT_KINDS, Registry
from opd_core.types import (
    Advantages,
    EvalResult,
    PolicyOutput,
    Prompt,
    RolloutBatch,
    RolloutPrefetcher,
    ScoreRequest,
    TeacherScores,
)

log = logging.getLogger("opd_core")


@dataclass(frozen=True)
class _Boundary:
    """What changes during a step besides the weights, as it was when step ``step`` ended."""

    step: int
    rng: dict[str, Any]
    components: dict[str, Any]


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
        """Signals wait while a step changes the student (see :meth:`update`)."""
        self.pm = pm
        self.hook = pm.hook
        self.output_dir = output_dir
        self.components: dict[str, Any] = {}
        self.start_step = 0
        self.total_steps = config.train.steps
        self.flops = FlopsLedger()
        self.evals: dict[str, dict[str, float]] = {}
        """Summary entries so far: ``student_before``, ``teacher``, ``student_after``."""
        self.prefetcher: RolloutPrefetcher | None = None
        """The sampler's prefetcher when ``train.overlap`` is on."""
        self._prefetch: Prefetch[_Boundary] | None = None
        """The next step's rollouts, being sampled in the background (``train.overlap``)."""

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
        self._plan_overlap()
        self.metrics = MetricsLog(self.output_dir) if self.dist.is_main else None
        if self.config.resume:
            self._resume()
        self.hook.opd_run_start(ctx=self.ctx)

    def _start_processes(self) -> None:
        """Join the other training processes (if any) and agree on one run folder, rank 0's."""
        cfg = self.config
        self.dist = Distributed(cfg.distributed, pick_device(cfg.device))
        self.output_dir = self.dist.broadcast(self.output_dir)
        self.dist.check_divisible(cfg.train.prompts_per_step, "train.prompts_per_step")
        self.device = self.dist.device

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
        self.optimizer = torch.optim.AdamW(
            params,
            lr=cfg.train.lr,
            weight_decay=cfg.train.weight_decay,
            betas=cfg.train.betas,
            **adamw_implementation(params, sharded=self.dist.sharded),
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, self.total_steps, cfg.train)
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

    def _plan_overlap(self) -> None:
        """With ``train.overlap``: the sampler's prefetcher, or a clear refusal."""
        cfg = self.config
        if cfg.train.overlap:
            self.prefetcher = plan_overlap(
                self.hook,
                cfg.sampler,
                self.components.get("loss"),
                str(cfg.loss.get("name", "?")),
                self.dist.world_size,
            )

    def _refuse_to_overwrite(self) -> None:
        if not self.config.resume and latest_checkpoint(self.output_dir) is not None:
            raise OPDError(
                f"{self.output_dir} already holds checkpoints; set resume=true to "
                "continue that run, or choose another hydra.run.dir."
            )

    def _resume(self) -> None:
        if self.dist.is_main:
            for leftover in remove_partial_checkpoints(self.output_dir):
                log.info("removed %s, left by an interrupted checkpoint write", leftover)
        checkpoint = latest_checkpoint(self.output_dir)
        if checkpoint is None:
            log.info(
                "resume=true but %s has no checkpoint yet: starting from step 0", self.output_dir
            )
            return
        state = load_trainer_state(checkpoint)
        self._check_state_layout(checkpoint, state.components.get("_state_layout", "full"))
        if self.dist.sharded:
            weights = read_model_weights(checkpoint)
            self.dist.load_sharded(self.train_model, self.optimizer, weights, state.optimizer)
        else:
            load_model_weights(self.student.model, checkpoint)
            self.optimizer.load_state_dict(state.optimizer)
        self.scheduler.load_state_dict(state.scheduler)
        for name, component in self.components.items():
            if name in state.components and hasattr(component, "load_state_dict"):
                component.load_state_dict(state.components[name])
        self.evals = dict(state.components.get("_evals", {}))
        self.flops.load_state_dict(self._own(state.components, "_flops"))
        restore_rng(self._own({"_rng": state.rng, **state.components}, "_rng"))
        self.start_step = state.step
        log.info("resumed from %s (step %d)", checkpoint, state.step)

    def _own(self, saved: dict[str, Any], key: str) -> Any:
        """This rank's entry of a per-rank state (``<key>_by_rank``), else the shared one."""
        by_rank = saved.get(f"{key}_by_rank")
        if self.dist.enabled and by_rank and len(by_rank) == self.dist.world_size:
            return by_rank[self.dist.rank]
        return saved.get(key, {})

    def _check_state_layout(self, checkpoint: Path, saved: str) -> None:
        """FSDP keeps optimizer state by parameter name, DDP and one process by index."""
        current = "sharded" if self.dist.sharded else "full"
        if saved != current:
            written = "distributed=fsdp" if saved == "sharded" else "distributed=ddp or one process"
            raise OPDError(
                f"Checkpoint {checkpoint} was written with {written}; resume it the same way."
            )

    # ---------------------------------------------------------------- train

    def train(self) -> dict[str, Any]:
        """Run the remaining steps; return the summary (also written to ``summary.json``)."""
        cfg = self.config
        started = time.perf_counter()
        # Signals wait (hold) except inside the stretches below that begin with release(); each
        # stretch keeps the state the run had when it began, taken while signals still waited.
        self.interrupts.hold()
        if self.start_step == 0:
            with self._keep_work(self._boundary(0)):
                self.interrupts.release()
                if cfg.eval.teacher and "teacher" not in self.evals:
                    self.evals["teacher"] = self.evaluate("teacher", step=0)
                if cfg.eval.at_start and "student_before" not in self.evals:
                    self.evals["student_before"] = self.evaluate("student", step=0)
                self.interrupts.hold()
        progress = Progress(
            total=self.total_steps,
            initial=self.start_step,
            enabled=cfg.progress and self.dist.is_main,
        )
        progress.show_eval(self.evals.get("student_before"))
        last: dict[str, float] = {}
        try:
            for step in range(self.start_step + 1, self.total_steps + 1):
                with self._keep_work(self._step_start(step)):
                    self.interrupts.release()  # a signal that waited for step - 1 stops here
                    last = self.train_step(step)  # update() holds signals to the step's end
                    if cfg.eval.every and step % cfg.eval.every == 0 and step < self.total_steps:
                        scores = self.evaluate("student", step)
                        last.update({f"eval/{k}": v for k, v in scores.items()})
                        progress.show_eval(scores)
                    if self.metrics is not None:
                        self.metrics.write(last)
                    self.hook.opd_step_end(ctx=self.ctx, step=step, metrics=last)
                    progress.update(last)
                    if cfg.checkpoint.every and step % cfg.checkpoint.every == 0:
                        self.save(step)
        except BaseException as err:
            # a second signal (forced) stops at once: the daemon thread dies with the process
            self._drop_prefetch(wait=not (isinstance(err, RunInterrupted) and err.forced))
            raise
        finally:
            progress.close()
        with self._keep_work(self._boundary(self.total_steps)):
            self.interrupts.release()
            self.evals["student_after"] = self.evaluate("student", step=self.total_steps)
            self.interrupts.hold()  # the run is complete: a signal now no longer stops it
        checkpoint = self.save(self.total_steps)
        summary = {
            **self.evals,
            "steps": self.total_steps,
            "flops": self.dist.combine_metrics(self.flops.metrics("flops")),
            "final_train_metrics": last,
            "checkpoint": str(checkpoint),
            "wall_time_s": round(time.perf_counter() - started, 2),
        }
        if self.dist.is_main:
            write_summary(self.output_dir, summary)
        self.dist.barrier()  # every rank is done before any leaves the process group
        self.hook.opd_run_end(ctx=self.ctx, summary=summary)
        return summary

    @contextmanager
    def _keep_work(self, state: _Boundary) -> Iterator[None]:
        """An interrupt inside checkpoints the step that ``state`` ended, then re-raises."""
        try:
            yield
        except RunInterrupted as stop:
            raise self._interrupted(stop, state) from None

    def _step_start(self, step: int) -> _Boundary:
        """The state as it was when ``step`` began: taken now, or, when its rollouts were
        sampled ahead, before its prompts were selected (during the previous step)."""
        if self._prefetch is not None and self._prefetch.step == step:
            return self._prefetch.state
        return self._boundary(step - 1)

    def _drop_prefetch(self, wait: bool) -> None:
        """Forget the rollouts being sampled ahead, after the sampling ended unless not ``wait``."""
        pending, self._prefetch = self._prefetch, None
        if pending is not None and wait:
            pending.wait()

    def _boundary(self, step: int) -> _Boundary:
        components = {
            name: copy.deepcopy(c.state_dict())
            for name, c in self.components.items()
            if hasattr(c, "state_dict") and hasattr(c, "load_state_dict")
        }
        return _Boundary(step, capture_rng(), components)

    def _interrupted(self, stop: RunInterrupted, state: _Boundary) -> RunInterrupted:
        """Checkpoint the last finished step (as it was at its end) unless one exists already."""
        stop.step = state.step
        latest = latest_checkpoint(self.output_dir)
        stop.checkpoint = str(latest) if latest is not None else None
        if stop.forced or self.dist.enabled:  # half-updated state, or ranks at different points
            return stop
        if latest is not None and latest.name == checkpoint_dir(self.output_dir, state.step).name:
            return stop
        if state.step == 0 and not self.evals:
            return stop  # nothing done yet
        self.interrupts.hold()  # another signal waits for this save (a third one forces)
        self._drop_prefetch(wait=True)  # the next step's prompts are selected again on resume
        restore_rng(state.rng)
        for name, saved in state.components.items():
            self.components[name].load_state_dict(saved)
        stop.checkpoint = str(self.save(state.step))
        return stop

    def train_step(self, step: int) -> dict[str, float]:
        """One step of on-policy distillation; returns its metrics."""
        cfg, hook, timer = self.config, self.hook, StageTimer()
        started = time.perf_counter()
        rollouts, overlap_metrics = self._rollouts(step, timer)
        if self.prefetcher is not None and step < self.total_steps:
            with timer.stage("prefetch"):  # the weight copy or sync: the cost of overlapping
                self._prefetch = self._start_prefetch(step + 1, self.prefetcher)
        with timer.stage("grade"):
            rewards = hook.opd_grade_completions(
                prompts=rollouts.prompts, completions=rollouts.completions
            )
            rewards_B = torch.tensor(rewards, dtype=torch.float32) if rewards is not None else None
        scores: TeacherScores | None = None
        if self.score_request is not None:
            with timer.stage("score"):
                scores = hook.opd_score_rollouts(rollouts=rollouts, top_k=self.score_request.top_k)
            if scores is None:
                raise OPDError(
                    "The objective needs teacher scores but no teacher scored the rollouts; "
                    "configure a teacher (+teacher=<name>)."
                )
        advantages = hook.opd_compute_advantages(
            rollouts=rollouts, scores=scores, rewards_B=rewards_B
        )
        if advantages is None:
            raise OPDError("No advantage function is configured; set advantage=<name>.")
        with timer.stage("update"):
            update_metrics = self.update(rollouts, advantages, scores)
        step_flops = rollout_flops(
            rollouts,
            self.student_shape,
            self.teacher_shape,
            scored=scores is not None,
            update_epochs=cfg.train.update_epochs,
        )
        self.flops.add(step_flops)
        metrics: dict[str, float] = {"step": step}
        metrics.update(rollout_metrics(rollouts, scores, rewards_B))
        metrics.update(advantage_metrics(advantages))
        if scores is not None:
            metrics.update(scores.metrics)
        metrics.update(update_metrics)
        metrics["passes"] = step * cfg.train.prompts_per_step / len(self.train_pool)
        metrics.update(step_flops.metrics("flops_step"))
        metrics.update(self.flops.metrics("flops"))
        metrics.update(overlap_metrics)
        metrics.update(timer.pop())
        metrics["time/step_s"] = Max(round(time.perf_counter() - started, 4))
        return self.dist.combine_metrics(metrics)

    def _select_prompts(self, step: int) -> list[Prompt]:
        """This process's share of the prompts the prompt source chooses for ``step``."""
        prompts = self.hook.opd_select_prompts(
            step=step, pool=self.train_pool, count=self.config.train.prompts_per_step
        )
        return list(self.dist.shard(prompts))  # every rank picked the same; each takes its share

    def _rollouts(self, step: int, timer: StageTimer) -> tuple[RolloutBatch, dict[str, float]]:
        """``step``'s rollouts: those sampled ahead for it, else sampled now; and the overlap
        metrics saying which (none without ``train.overlap``)."""
        pending, self._prefetch = self._prefetch, None
        if pending is not None and pending.step == step:
            with timer.stage("sample"):  # what the background sampling did not hide
                rollouts = pending.result()
            return rollouts, pending.metrics()
        prompts = self._select_prompts(step)
        with timer.stage("sample"):
            rollouts = self.hook.opd_sample_rollouts(
                prompts=prompts, samples_per_prompt=self.config.train.samples_per_prompt
            )
        return rollouts, dict(SAMPLED_NOW) if self.prefetcher is not None else {}

    def _start_prefetch(self, step: int, prefetcher: RolloutPrefetcher) -> Prefetch[_Boundary]:
        """Select ``step``'s prompts and start sampling them in the background from the weights
        as they are now; the state from before the selection goes with it."""
        state = self._boundary(step - 1)
        prompts = self._select_prompts(step)
        sample = prefetcher.prepare(prompts, self.config.train.samples_per_prompt)
        return Prefetch(step, state, sample)

    def update(
        self, rollouts: RolloutBatch, advantages: Advantages, scores: TeacherScores | None
    ) -> dict[str, float]:
        """Accumulate the loss over micro-batches and take ``update_epochs`` optimizer steps.

        From here to the end of the step a signal waits (:class:`opd_core.interrupts.Interrupts`).
        """
        self.interrupts.hold()
        cfg, model = self.config.train, self.train_model
        # Normalised by the loss tokens of all ranks and scaled by the number of ranks, whose
        # gradients are averaged: the step's gradient is the one a single process would get.
        num_loss_tokens = max(int(self.dist.sum(float(advantages.mask_BT.sum()))), 1)
        scale = float(self.dist.world_size)
        sums: dict[str, float] = {}
        model.train()
        grad_norm = 0.0
        starts = range(0, rollouts.batch_size, cfg.micro_batch_size)
        for _ in range(cfg.update_epochs):
            self.optimizer.zero_grad(set_to_none=True)
            for start in starts:
                rows = slice(start, start + cfg.micro_batch_size)
                micro = rollouts.select(rows).to(self.device)
                micro_adv = advantages.select(rows).to(self.device)
                micro_scores = scores.select(rows).to(self.device) if scores is not None else None
                with self.dist.no_sync(model, last_micro_batch=start == starts[-1]):
                    policy = policy_output(model, micro)
                    out = self.hook.opd_compute_loss(
                        rollouts=micro,
                        policy=policy,
                        advantages=micro_adv,
                        scores=micro_scores,
                        num_loss_tokens=num_loss_tokens,
                    )
                    if out is None:
                        raise OPDError("No loss is configured; set loss=<name>.")
                    (out.loss * scale).backward()
                mask_BT = micro_adv.mask_BT
                sums["loss"] = sums.get("loss", 0.0) + float(out.loss.detach()) * scale
                sums["entropy"] = sums.get("entropy", 0.0) + scale * float(
                    (policy.entropy_BT * mask_BT).sum() / num_loss_tokens
                )
                for key, value in out.metrics.items():
                    weight = scale * int(mask_BT.sum()) / num_loss_tokens
                    sums[key] = sums.get(key, 0.0) + value * weight
            grad_norm = clip_gradients(model, cfg.max_grad_norm)
            step_and_mark_updated(self.optimizer)
        lr = float(self.scheduler.get_last_lr()[0])
        self.scheduler.step()
        epochs = cfg.update_epochs
        return {**{k: v / epochs for k, v in sums.items()}, "grad_norm": grad_norm, "lr": lr}

    # ---------------------------------------------------------------- evaluate / save

    def evaluate(self, role: str, step: int) -> dict[str, float]:
        """Run every evaluator on the model playing ``role``; merged metrics by name."""
        if self._prefetch is not None:
            self._prefetch.wait()  # nothing samples in the background while evaluators generate
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
        components = {
            name: c.state_dict() for name, c in self.components.items() if hasattr(c, "state_dict")
        }
        if self._prefetch is not None:
            self._prefetch.wait()
            components.update(self._prefetch.state.components)
        components["_evals"] = dict(self.evals)
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
            )
        self.dist.barrier()
        return checkpoint_dir(self.output_dir, step)

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


def adamw_implementation(params: Sequence[torch.Tensor], sharded: bool) -> dict[str, bool]:
    """AdamW's fused kernel (one pass over all weights) where torch has one for the weights'
    devices and dtypes, else its multi-tensor ``foreach`` loop; never the per-tensor loop."""
    fusable = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return {"fused": True} if fusable and not sharded else {"foreach": True}


def step_and_mark_updated(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.step()``, then bump the in-place version counter of every weight it updated.
    The fused AdamW kernel writes the weights without bumping them, and those counters are how
    a weight consumer tells that the student changed (the vLLM sampler's weight sync)."""
    optimizer.step()
    updated = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    torch.autograd.graph.increment_version(updated)


def lr_factor(step: int, total_steps: int, train: Any) -> float:
    """The learning rate of optimizer step ``step`` (0-based) as a fraction of ``train.lr``:
    linear warm-up over ``train.warmup_steps``, then constant or a half cosine down to
    ``train.min_lr_ratio`` at the last step (``train.lr_schedule``)."""
    warmup = train.warmup_steps
    if step < warmup:
        return (step + 1) / warmup
    if train.lr_schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total_steps - 1 - warmup))
    floor = train.min_lr_ratio
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def policy_output(model: Any, rollouts: RolloutBatch) -> PolicyOutput:
    """Current log-probabilities (with gradients) and entropies of a micro-batch, on its
    completion tokens (0 on the prompt: the LM head runs on completion positions only)."""
    logits_BSV = next_token_logits(
        model, rollouts.input_ids_BT, rollouts.attention_mask_BT, first=rollouts.prompt_len
    )
    logprobs_BT = gather_logprobs(logits_BSV, rollouts.input_ids_BT)
    with torch.no_grad():
        entropy_BT = entropy(logits_BSV)
    return PolicyOutput(logprobs_BT=logprobs_BT, entropy_BT=entropy_BT, logits_BSV=logits_BSV)


def clip_gradients(model: Any, max_norm: float) -> float:
    """Clip the global gradient norm to ``max_norm`` (0: no clipping); return the norm before."""
    params = [p for p in model.parameters() if p.grad is not None]
    if not params:
        return 0.0
    limit = max_norm if max_norm > 0 else math.inf
    return float(torch.nn.utils.clip_grad_norm_(params, limit))


def masked_mean(values_BT: torch.Tensor, mask_BT: torch.Tensor) -> float:
    """Mean of ``values_BT`` over positions where ``mask_BT`` is 1."""
    mask = mask_BT.float()
    return float((values_BT * mask).sum() / mask.sum().clamp(min=1))


def rollout_metrics(
    rollouts: RolloutBatch, scores: TeacherScores | None, rewards_B: torch.Tensor | None
) -> dict[str, float]:
    """Sampled-token counts, task reward and (when scored) teacher reverse KL of the rollouts."""
    mask_BT = rollouts.completion_mask_BT.float()
    out = {
        "tokens": Sum(mask_BT.sum()),
        "completion_len": float(mask_BT.sum(1).mean()),
        "sequences": Sum(rollouts.batch_size),
    }
    if scores is not None:
        reverse_kl_BT = rollouts.sampler_logprobs_BT - scores.logprobs_BT
        out["teacher_reverse_kl"] = masked_mean(reverse_kl_BT, mask_BT)
    if rewards_B is not None:
        out["reward"] = float(rewards_B.mean())
    return out


def advantage_metrics(advantages: Advantages) -> dict[str, float]:
    """Mean, std, min and max of the advantages over their mask, plus the function's own."""
    mask = advantages.mask_BT.bool()
    values = advantages.advantages_BT[mask]
    if values.numel() == 0:
        return dict(advantages.metrics)
    return {
        "advantage/mean": float(values.mean()),
        "advantage/std": float(values.std()) if values.numel() > 1 else 0.0,
        "advantage/min": Min(values.min()),
        "advantage/max": Max(values.max()),
        **advantages.metrics,
    }


def merge_eval_results(results: Sequence[EvalResult]) -> dict[str, float]:
    """Merge evaluators' metrics; a name two evaluators share is prefixed by the evaluator."""
    counts: dict[str, int] = {}
    for result in results:
        for key in result.metrics:
            counts[key] = counts.get(key, 0) + 1
    merged: dict[str, float] = {}
    for result in results:
        for key, value in result.metrics.items():
            merged[key if counts[key] == 1 else f"{result.evaluator}/{key}"] = float(value)
    return merged
