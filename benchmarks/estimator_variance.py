"""Bias and variance of the on-policy distillation estimators, measured on the CPU demo.

    python benchmarks/estimator_variance.py                # ~3 min on 2 CPU cores
    python benchmarks/estimator_variance.py --pairs 16     # tighter spread

From the demo's student (its start, before any OPD) the script samples pairs of independent
batches of rollouts (64 prompts x 2 answers, as one demo step) and computes, for every named
objective, the gradient of its loss on each batch. It reports:

- **agreement**: the cosine between the gradients of two independent batches. An estimator
  whose one-batch gradient is mostly noise agrees poorly with itself; 1 means no noise.
- **alignment**: the cosine between one batch's gradient and the reference direction, the exact
  full-vocabulary reverse KL gradient averaged over every batch of the run. The sampled-token
  estimator is unbiased for it, so a low alignment there is noise, not bias; for the top-k
  estimators the gap to their agreement shows the bias of bucketing or truncation.

Results go to ``docs/results/estimators.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir

from opd_core.app import CONF_DIR
from opd_core.config import RunConfig
from opd_core.plugin_manager import make_plugin_manager
from opd_core.trainer import Trainer, policy_output
from opd_core.types import Advantages, LossOutput, RolloutBatch, TeacherScores
from opd_objectives.distribution import (
    EntropyAwareKL,
    ForwardKL,
    TopKReverseKL,
    TruncatedReverseKL,
)
from opd_objectives.importance_sampling import ImportanceSampling
from opd_objectives.reverse_kl import ReverseKL

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
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


def build_trainer(overrides: list[str], out: Path) -> Trainer:
    """The demo's trainer, set up (student and teacher loaded) but never stepped."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*overrides, "progress=false"])
    trainer = Trainer(RunConfig.from_dict(cfg), make_plugin_manager(), out)
    trainer.setup()
    return trainer


def measure(trainer: Trainer, pairs: int, top_k: int) -> dict[str, Any]:
    """Gradients of every objective on ``2 * pairs`` independent batches; their statistics."""
    cfg, hook = trainer.config, trainer.hook
    model = trainer.train_model
    vocab = int(model.get_output_embeddings().weight.shape[0])
    named = objectives(vocab, top_k)
    gradients: dict[str, list[torch.Tensor]] = {key: [] for key in named}
    model.train()
    for batch in range(2 * pairs):
        prompts = hook.opd_select_prompts(
            step=batch + 1, pool=trainer.train_pool, count=cfg.train.prompts_per_step
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


def write_report(rows: dict[str, Any], args: argparse.Namespace, seconds: float) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/estimator_variance.py" + (
        f" --pairs {args.pairs}" if args.pairs != DEFAULT_PAIRS else ""
    )
    lines = [
        "# Bias and variance of the OPD estimators on the CPU demo",
        "",
        f"Produced by `{command}` ({seconds / 60:.1f} min). From the demo student before OPD, "
        f"{2 * args.pairs} independent batches of 64 prompts x 2 sampled answers; for each "
        "objective the gradient of its loss on each batch. *Agreement*: cosine between the "
        f"gradients of two independent batches ({args.pairs} pairs). *Alignment*: cosine between "
        "one batch's gradient and the reference direction (the exact full-vocabulary reverse-KL "
        "gradient averaged over all batches). Mean ± standard deviation over pairs / batches.",
        "",
        "| objective | key | agreement | alignment with exact reverse KL | gradient norm |",
        "|---|---|---|---|---|",
    ]
    for key, row in rows.items():
        lines.append(
            f"| {row['label']} | `{key}` | {row['agreement_mean']:.3f} ± {row['agreement_std']:.3f}"
            f" | {row['alignment_mean']:.3f} ± {row['alignment_std']:.3f}"
            f" | {row['gradient_norm_mean']:.3g} |"
        )
    lines += ["", "![agreement and alignment](estimators.png)", ""]
    (RESULTS / "estimators.md").write_text("\n".join(lines))
    payload = {"command": command, "pairs": args.pairs, "seconds": seconds, "objectives": rows}
    (RESULTS / "estimators.json").write_text(json.dumps(payload, indent=1) + "\n")
    plot(rows)
    print("\n".join(lines))


def plot(rows: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(rows)
    xs = range(len(keys))
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.38
    for offset, stat, label in (
        (-width / 2, "agreement", "agreement (batch vs batch)"),
        (width / 2, "alignment", "alignment with exact reverse KL"),
    ):
        ax.bar(
            [x + offset for x in xs],
            [rows[k][f"{stat}_mean"] for k in keys],
            width,
            yerr=[rows[k][f"{stat}_std"] for k in keys],
            capsize=3,
            label=label,
        )
    ax.set_xticks(list(xs), [k.removeprefix("opd_") for k in keys], rotation=20, fontsize=8)
    ax.set_ylabel("gradient cosine")
    ax.set_ylim(min(0.0, min(rows[k]["agreement_mean"] for k in keys)) - 0.05, 1.05)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "estimators.png", dpi=120)
    plt.close(fig)


DEFAULT_PAIRS = 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=DEFAULT_PAIRS)
    parser.add_argument("--top-k", type=int, default=20)
    parser.add_argument("overrides", nargs="*", help="config overrides (default: the demo)")
    args = parser.parse_args()
    if args.pairs < 2:
        sys.exit("estimator_variance: --pairs must be at least 2")
    torch.manual_seed(0)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="opd_estimators_") as tmp:
        trainer = build_trainer(args.overrides, Path(tmp) / "run")
        rows = measure(trainer, args.pairs, args.top_k)
        trainer.cleanup()
    write_report(rows, args, time.perf_counter() - started)
    assert all(math.isfinite(r["agreement_mean"]) for r in rows.values())


if __name__ == "__main__":
    main()
