"""Bias and variance of the on-policy distillation estimators, measured on the CPU demo.

    python benchmarks/estimator_variance.py                # ~3 min on 2 CPU cores
    python benchmarks/estimator_variance.py --pairs 16     # tighter spread

From the demo's student (its start, before any OPD) the script samples pairs of independent
batches of rollouts (as many prompts and answers as one training step of the run) and
computes, for every named objective, the gradient of its loss on each batch. It reports:

- **agreement**: the cosine between the gradients of two independent batches. An estimator
  whose one-batch gradient is mostly noise agrees poorly with itself; 1 means no noise.
- **alignment**: the cosine between one batch's gradient and the reference direction, the exact
  full-vocabulary reverse KL gradient averaged over every batch of the run. The sampled-token
  estimator is unbiased for it, so a low alignment there is noise, not bias; for the top-k
  estimators the gap to their agreement shows the bias of bucketing or truncation.

The measurement runs inside an ordinary run (``opd_core.app.run``, the demo's config plus the
overrides given): a plugin's ``opd_run_start`` gets the loaded student and every component
through the run context, measures, and ends the run before its first step. Batches are drawn
from the task's whole training pool. Results go to
``docs/results/estimator_variance.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from bench_common.inprocess import run_in_process
from bench_common.paths import ResultFiles
from bench_common.plots import Bars, figure, plot_bars
from bench_common.report import markdown_table, produced_by, write_report
from bench_common.runs import command_line

from opd_core import hookimpl
from opd_core.api import (
    Advantages,
    LossOutput,
    PolicyOutput,
    RolloutBatch,
    RunContext,
    TeacherScores,
    entropy,
    gather_logprobs,
    next_token_logits,
)
from opd_objectives.distribution import (
    EntropyAwareKL,
    ForwardKL,
    TopKReverseKL,
    TruncatedReverseKL,
)
from opd_objectives.importance_sampling import ImportanceSampling
from opd_objectives.reverse_kl import ReverseKL

RESULTS = ResultFiles.of(__file__)
LossFn = Callable[[RolloutBatch, Any, TeacherScores, int], LossOutput]


def sampled_reverse_kl(rollouts: RolloutBatch, policy: Any, scores: TeacherScores, n: int):
    """The seed's estimator: advantage ``-(log q - log p)`` of the sampled token, policy
    gradient with importance weights."""
    advantages = ReverseKL().opd_compute_advantages(rollouts, scores, None)
    return ImportanceSampling().opd_compute_loss(rollouts, policy, advantages, n)


def distribution_loss(objective: Any) -> LossFn:
    """A loss over the teacher's top-k (advantage 1 on every completion token)."""

    def loss(rollouts: RolloutBatch, policy: Any, scores: TeacherScores, n: int) -> LossOutput:
        mask_BT = rollouts.completion_mask_BT.float()
        advantages = Advantages(advantages_BT=mask_BT.clone(), mask_BT=mask_BT)
        return objective.opd_compute_loss(rollouts, policy, advantages, scores, n)

    return loss


def objectives(vocab: int, top_k: int) -> dict[str, tuple[str, LossFn]]:
    """Every estimator measured, keyed by the name the comparison uses."""
    return {
        "opd_reverse_kl_sampled": (
            "reverse KL, sampled token (policy gradient; the seed's)",
            sampled_reverse_kl,
        ),
        "opd_reverse_kl_topk": (
            f"reverse KL, exact over top-{top_k} + tail",
            distribution_loss(TopKReverseKL(top_k)),
        ),
        "opd_reverse_kl_full": (
            f"reverse KL, exact over the full vocabulary ({vocab})",
            distribution_loss(TopKReverseKL(vocab)),
        ),
        "opd_reverse_kl_truncated": (
            f"reverse KL, truncated to the teacher's top-{top_k}",
            distribution_loss(TruncatedReverseKL(top_k)),
        ),
        "opd_forward_kl_topk": (
            f"forward KL over top-{top_k} + tail",
            distribution_loss(ForwardKL(top_k)),
        ),
        "opd_entropy_aware": (
            f"entropy-aware (reverse + forward KL where teacher entropy > 0.5), top-{top_k}",
            distribution_loss(EntropyAwareKL(top_k, 0.5)),
        ),
    }


def flat_gradient(model: torch.nn.Module, loss: torch.Tensor) -> torch.Tensor:
    """The loss's gradient with respect to every trainable parameter, as one vector (the graph
    is kept: every objective differentiates the same forward pass)."""
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
    return torch.cat(
        [
            (g if g is not None else torch.zeros_like(p)).flatten()
            for g, p in zip(grads, params, strict=True)
        ]
    )


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def policy_output(model: Any, rollouts: RolloutBatch) -> PolicyOutput:
    """The student's log-probabilities (with gradients) and entropies on the completion tokens,
    as the loop computes them for its losses."""
    logits_BSV = next_token_logits(
        model, rollouts.input_ids_BT, rollouts.attention_mask_BT, first=rollouts.prompt_len
    )
    logprobs_BT = gather_logprobs(logits_BSV, rollouts.input_ids_BT)
    with torch.no_grad():
        entropy_BT = entropy(logits_BSV)
    return PolicyOutput(logprobs_BT=logprobs_BT, entropy_BT=entropy_BT, logits_BSV=logits_BSV)


class Measured(Exception):
    """Ends the run once the probe has measured (before its first step)."""


class Probe:
    """A plugin that measures every objective's gradients when the run starts."""

    def __init__(self, pairs: int, top_k: int) -> None:
        self.pairs, self.top_k = pairs, top_k
        self.rows: dict[str, Any] = {}
        self.batch = (0, 0)
        """Prompts and samples per prompt of each batch (the run's training step)."""

    @hookimpl
    def opd_run_start(self, ctx: RunContext) -> None:
        self.batch = (ctx.config.train.prompts_per_step, ctx.config.train.samples_per_prompt)
        self.rows = measure(ctx, self.pairs, self.top_k)
        raise Measured


def measure(ctx: RunContext, pairs: int, top_k: int) -> dict[str, Any]:
    """Gradients of every objective on ``2 * pairs`` independent batches; their statistics."""
    cfg, hook = ctx.config, ctx.hook
    model = ctx.student.model
    vocab = int(model.get_output_embeddings().weight.shape[0])
    named = objectives(vocab, top_k)
    gradients: dict[str, list[torch.Tensor]] = {key: [] for key in named}
    pool = hook.opd_task_prompts(split="train")
    model.train()
    for batch in range(2 * pairs):
        prompts = hook.opd_select_prompts(
            step=batch + 1, pool=pool, count=cfg.train.prompts_per_step
        )
        rollouts = hook.opd_sample_rollouts(
            prompts=prompts, samples_per_prompt=cfg.train.samples_per_prompt
        )
        scores = hook.opd_score_rollouts(rollouts=rollouts, top_k=vocab)
        n = int(rollouts.completion_mask_BT.sum())
        policy = policy_output(model, rollouts)  # one forward, differentiated per objective
        for key, (_, loss_fn) in named.items():
            gradients[key].append(flat_gradient(model, loss_fn(rollouts, policy, scores, n).loss))
        print(f"[estimators] batch {batch + 1}/{2 * pairs}: {n} completion tokens", flush=True)
    reference = torch.stack(gradients["opd_reverse_kl_full"]).mean(0)
    rows: dict[str, Any] = {}
    for key, (label, _) in named.items():
        grads = gradients[key]
        agreement = [cosine(grads[2 * i], grads[2 * i + 1]) for i in range(pairs)]
        alignment = [cosine(g, reference) for g in grads]
        rows[key] = {
            "label": label,
            "agreement_mean": statistics.mean(agreement),
            "agreement_std": statistics.stdev(agreement) if pairs > 1 else 0.0,
            "alignment_mean": statistics.mean(alignment),
            "alignment_std": statistics.stdev(alignment),
            "gradient_norm_mean": statistics.mean(float(g.norm()) for g in grads),
        }
    return rows


def run_probe(overrides: list[str], out: Path, pairs: int, top_k: int) -> Probe:
    """The demo's run (with ``overrides``) set up in this process and measured by the returned
    :class:`Probe`."""
    probe = Probe(pairs, top_k)
    try:
        run_in_process([*overrides, "progress=false"], out, [probe])
    except Measured:
        return probe
    raise RuntimeError("the run ended without calling opd_run_start")


def report(probe: Probe, overrides: list[str], seconds: float) -> None:
    """Write the estimators' Markdown, JSON and figure."""
    rows, pairs, (prompts, samples) = probe.rows, probe.pairs, probe.batch
    flags = [f"--pairs {pairs}"] if pairs != DEFAULT_PAIRS else []
    flags += [f"--top-k {probe.top_k}"] if probe.top_k != DEFAULT_TOP_K else []
    command = command_line(__file__, *flags, *overrides)
    lines = [
        "# Bias and variance of the OPD estimators on the CPU demo",
        "",
        produced_by(command, f"{seconds / 60:.1f} min") + ". From the demo student before OPD, "
        f"{2 * pairs} independent batches of {prompts} prompts x {samples} sampled answers; for "
        "each objective the gradient of its loss on each batch. *Agreement*: cosine between the "
        f"gradients of two independent batches ({pairs} pairs). *Alignment*: cosine between "
        "one batch's gradient and the reference direction (the exact full-vocabulary reverse-KL "
        "gradient averaged over all batches). Mean ± standard deviation over pairs / batches.",
        "",
        *markdown_table(
            "objective | key | agreement | alignment with exact reverse KL | gradient norm",
            [
                f"{row['label']} | `{key}` "
                f"| {row['agreement_mean']:.3f} ± {row['agreement_std']:.3f} "
                f"| {row['alignment_mean']:.3f} ± {row['alignment_std']:.3f} "
                f"| {row['gradient_norm_mean']:.3g}"
                for key, row in rows.items()
            ],
        ),
        "",
        RESULTS.image("agreement and alignment"),
        "",
    ]
    record = {
        "command": command,
        "pairs": pairs,
        "prompts_per_step": prompts,
        "samples_per_prompt": samples,
        "seconds": seconds,
        "objectives": rows,
    }
    write_report(RESULTS, lines, record)
    keys = list(rows)
    with figure(RESULTS.png(), size=(8, 4)) as (ax,):
        plot_bars(
            ax,
            [k.removeprefix("opd_") for k in keys],
            [
                Bars(
                    label,
                    [rows[k][f"{stat}_mean"] for k in keys],
                    [rows[k][f"{stat}_std"] for k in keys],
                )
                for stat, label in (
                    ("agreement", "agreement (batch vs batch)"),
                    ("alignment", "alignment with exact reverse KL"),
                )
            ],
            ylabel="gradient cosine",
            rotation=20,
        )
        ax.set_ylim(min(0.0, min(rows[k]["agreement_mean"] for k in keys)) - 0.05, 1.05)


DEFAULT_PAIRS = 8
DEFAULT_TOP_K = 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=DEFAULT_PAIRS)
    parser.add_argument("--top-k", type=int, default=DEFAULT_TOP_K)
    parser.add_argument("overrides", nargs="*", help="config overrides (default: the demo)")
    args = parser.parse_args()
    if args.pairs < 2:
        sys.exit("estimator_variance: --pairs must be at least 2")
    torch.manual_seed(0)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="opd_estimators_") as tmp:
        probe = run_probe(args.overrides, Path(tmp) / "run", args.pairs, args.top_k)
    report(probe, args.overrides, time.perf_counter() - started)
    assert all(math.isfinite(r["agreement_mean"]) for r in probe.rows.values())


if __name__ == "__main__":
    main()
