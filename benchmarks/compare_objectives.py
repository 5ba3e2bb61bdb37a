"""The seed's comparison on this CPU: SFT, RL and every on-policy distillation objective,
continued from one SFT-initialised student, over several seeds.

    python benchmarks/compare_objectives.py                  # ~3 h of CPU, run 2 at a time
    python benchmarks/compare_objectives.py --steps 100 --seeds 1   # a quick, noisy look
    python benchmarks/compare_objectives.py --report-only    # rewrite the report from the runs

Every method starts from the embedded demo's student (SFT-initialised to a middling level), on
its arithmetic task, with 128 sequences per step, the same learning rate and schedule, and the
same evaluation (greedy accuracy on 500 held-out problems every 25 steps). Each run is a real
``python -m opd_core`` process (``OMP_NUM_THREADS=1`` per process; ``--jobs`` run at once). The
report reads the run folders back (``opd_report.curves``) and writes into ``docs/results/``:

- ``comparison.md``: per method the seeds, final accuracy (mean ± std), steps, FLOPs and
  training seconds to 90% and 95% of the teacher (median over the seeds that got there), and the
  ratios the seed reports (OPD against SFT in FLOPs, against RL in gradient steps);
- ``comparison.json``: the same per method key (``flops_to_90``, ``steps_to_90``, ... null where
  not reached) and every curve point of every seed;
- ``comparison_steps.png`` / ``comparison_flops.png``: mean accuracy against steps and FLOPs with
  the min-max band over seeds.

Runs whose folder holds a ``summary.json`` are reused (``--fresh`` reruns them).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cli_runs import cost_to, median_or_none, run_cli

from opd_report.curves import Curve, CurvePoint, first_reaching, load_curve

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
LORA = ["+student.lora.r=32", "+student.lora.alpha=64"]


@dataclass(frozen=True)
class Method:
    """One line of the comparison."""

    label: str
    overrides: tuple[str, ...]
    family: str
    """``opd``, ``sft`` or ``rl``: which of the seed's ratios the method enters."""
    main: bool = True
    """Main methods run every seed; the others (variants) run the first seed only unless
    ``--all-seeds``."""
    tier: int = 1
    """Order of the work: every main method's first seed comes first, then the further seeds
    of tier 1, tier 2, and the variants (so an interrupted run leaves the most useful part)."""
    lr_scale: float = 1.0
    """The method's learning rate relative to the run's: LoRA trains at 2.5x (5e-3 against full
    fine-tuning's 2e-3; at 10x, 2e-2, both LoRA runs diverged to 14% and 34%)."""
    lr_from: str | None = None
    """With ``--tuned``, the method whose tuned learning rate this one follows (a variant
    that the sweep does not cover)."""


METHODS: dict[str, Method] = {
    "opd_reverse_kl_topk": Method(
        "OPD, exact reverse KL over top-20 + tail", ("+experiment=reverse_kl_topk",), "opd"
    ),
    "opd_reverse_kl_sampled": Method(
        "OPD, sampled-token reverse KL (the seed's estimator)", ("+experiment=opd",), "opd", tier=2
    ),
    "opd_forward_kl_topk": Method(
        "OPD, forward KL over top-20 + tail", ("+experiment=forward_kl",), "opd", tier=2
    ),
    "sft_teacher_samples": Method(
        "SFT on teacher samples (off-policy distillation)", ("+experiment=sft",), "sft"
    ),
    "sft_references": Method(
        "SFT on reference solutions",
        (
            "sampler=dataset",
            "advantage=uniform",
            "loss=cross_entropy",
        ),
        "sft",
        tier=2,
    ),
    "rl_grpo": Method("RL (GRPO, 16 prompts x 8 samples)", ("+experiment=rl",), "rl"),
    "opd_reverse_kl_truncated": Method(
        "OPD, reverse KL truncated to the teacher's top-20",
        ("+experiment=reverse_kl_truncated",),
        "opd",
        main=False,
    ),
    "opd_entropy_aware": Method(
        "OPD, entropy-aware (reverse KL + forward KL where teacher entropy > 0.5)",
        ("+experiment=entropy_aware_kl",),
        "opd",
        main=False,
    ),
    "opd_reverse_kl_topk_lora32": Method(
        "OPD, exact reverse KL top-20, LoRA rank 32 (lr x2.5)",
        ("+experiment=reverse_kl_topk", *LORA),
        "opd",
        main=False,
        lr_scale=2.5,
        lr_from="opd_reverse_kl_topk",
    ),
    "sft_teacher_samples_lora32": Method(
        "SFT on teacher samples, LoRA rank 32 (lr x2.5)",
        ("+experiment=sft", *LORA),
        "sft",
        main=False,
        lr_scale=2.5,
        lr_from="sft_teacher_samples",
    ),
    "opd_single_prompt": Method(
        "OPD (forward KL top-20, the best objective here), one prompt x 128 samples",
        (
            "+experiment=forward_kl",
            "train.pool_size=1",
            "train.prompts_per_step=1",
            "train.samples_per_prompt=128",
        ),
        "opd",
        main=False,
        lr_from="opd_forward_kl_topk",
    ),
}
SHARED = ("++train.lr_schedule=cosine", "eval.every=25")
DEFAULT_LR = 5e-4
"""The comparison's learning rate without --tuned or --lr (the demo schedule's before the sweep)."""
SINGLE_PROMPT = ("eval.every=10",)
SEED_CLAIMS = {
    "flops_vs_sft": "9-30x less compute than SFT",
    "steps_vs_rl": "7-10x fewer gradient steps than RL",
    "lora": "LoRA trails full fine-tuning by 13% after SFT and by 6% after OPD",
    "single_prompt": "one prompt for 20 steps (5120 samples) reaches the teacher's score",
}
TARGETS = (0.90, 0.95)


def command_for(key: str, seed: int, steps: int, lr: float = DEFAULT_LR) -> list[str]:
    """The config overrides of one method and seed at learning rate ``lr`` (times the
    method's own ``lr_scale``)."""
    method = METHODS[key]
    single = key == "opd_single_prompt"
    return [
        *SHARED,
        f"train.lr={lr * method.lr_scale:g}",
        *(SINGLE_PROMPT if single else ()),
        *method.overrides,  # last: a method's own settings (e.g. LoRA's lr) win
        f"train.steps={SINGLE_PROMPT_STEPS if single else steps}",
        f"seed={seed}",
    ]


def run_dir(root: Path, key: str, seed: int, lr: float) -> Path:
    """Where one run lives: ``<root>/<key>/seed<N>`` at the default learning rate,
    ``<root>/<key>@lr<the method's own lr>/seed<N>`` at any other (so the sweep and the
    comparison share runs)."""
    name = key if lr == DEFAULT_LR else f"{key}@lr{lr * METHODS[key].lr_scale:g}"
    return root / name / f"seed{seed}"


def tuned_lrs(path: Path) -> dict[str, float]:
    """Each method's learning rate from the sweep's JSON (``benchmarks/lr_sweep.py``); methods
    it did not cover follow their ``lr_from`` method, else the default."""
    if not path.exists():
        raise SystemExit(
            f"compare_objectives: --tuned needs {path}; run `python benchmarks/lr_sweep.py` first"
        )
    best: dict[str, float] = json.loads(path.read_text())["best_lr"]
    return {
        key: best.get(key, best.get(method.lr_from or "", DEFAULT_LR))
        for key, method in METHODS.items()
    }


def run_one(
    key: str, seed: int, steps: int, out: Path, fresh: bool, lr: float = DEFAULT_LR
) -> float | None:
    """Run one method and seed as a real CLI process into ``out``; its wall seconds, or None
    when an earlier run is reused."""
    if fresh and out.exists():
        shutil.rmtree(out)
    if (out / "summary.json").exists() or wait_if_running_elsewhere(out):
        return None
    if out.exists():
        shutil.rmtree(out)  # an unfinished run of this benchmark: start it again
    _, seconds = run_cli(
        command_for(key, seed, steps, lr), out, f"{key} seed {seed} lr {lr:g}"
    )  # failed: no summary
    return seconds


def wait_if_running_elsewhere(out: Path, fresh_s: float = 180.0) -> bool:
    """If another process is still writing the run in ``out`` (its metrics changed in the last
    ``fresh_s`` seconds), wait until it finishes; True when it finished, False when it stalls."""
    metrics = out / "metrics.jsonl"
    announced = False
    while metrics.exists() and time.time() - metrics.stat().st_mtime < fresh_s:
        if (out / "summary.json").exists():
            return True
        if not announced:
            print(f"[{out}] another process is running it; waiting", flush=True)
            announced = True
        time.sleep(15)
    return (out / "summary.json").exists()


def seeds_of(key: str, seeds: Sequence[int], all_seeds: bool) -> list[int]:
    return list(seeds) if METHODS[key].main or all_seeds else list(seeds[:1])


# ---------------------------------------------------------------- report


def reach(curve: Curve, target: float) -> CurvePoint | None:
    return first_reaching(curve, target)


def summarize(key: str, curves: list[Curve], teacher: float, lr: float) -> dict[str, Any]:
    finals = [c.final.score for c in curves]
    row: dict[str, Any] = {
        "label": METHODS[key].label,
        "family": METHODS[key].family,
        "lr": lr * METHODS[key].lr_scale,
        "seeds": len(curves),
        "eval_problems": EVAL_PROBLEMS,
        "steps_run": curves[0].final.step,
        "start": curves[0].points[0].score,
        "final_mean": statistics.mean(finals),
        "final_std": statistics.stdev(finals) if len(finals) > 1 else 0.0,
        "final_min": min(finals),
        "final_max": max(finals),
        "best_mean": statistics.mean(c.best_score for c in curves),
        "train_seconds_mean": statistics.mean(c.final.train_seconds for c in curves),
    }
    for fraction in TARGETS:
        pct = round(fraction * 100)
        points = [reach(c, fraction * teacher) for c in curves]
        row[f"reached_{pct}"] = sum(p is not None for p in points)
        row[f"steps_to_{pct}"] = median_or_none(
            [p.step if p else None for p in points], len(curves)
        )
        row[f"flops_to_{pct}"] = median_or_none(
            [p.total_flops if p else None for p in points], len(curves)
        )
        row[f"seconds_to_{pct}"] = median_or_none(
            [p.train_seconds if p else None for p in points], len(curves)
        )
    return row


def fmt(value: float | None, kind: str) -> str:
    if value is None:
        return "not reached"
    if kind == "flops":
        return f"{value:.2e}"
    if kind == "seconds":
        return f"{value:.0f} s"
    return f"{value:.0f}"


def ratio(
    curves: dict[str, list[Curve]], better: str, worse: str, teacher: float, measure: str
) -> tuple[float | None, float]:
    """``worse``'s cost over ``better``'s to 90% of the teacher, or, when either does not get
    there, to the highest accuracy every seed of both reached; returns it with the target."""
    common = min(min(c.best_score for c in curves[k]) for k in (better, worse))
    target = min(0.9 * teacher, common)
    a, b = cost_to(curves[better], target, measure), cost_to(curves[worse], target, measure)
    return (b / a if a and b else None), target


def ratio_line(
    curves: dict[str, list[Curve]], better: str, worse: str, teacher: float, measure: str,
    claim: str,
) -> tuple[str, dict[str, Any]]:  # fmt: skip
    """The ratio as a report line, and as data for the JSON."""
    value, target = ratio(curves, better, worse, teacher, measure)
    what = "FLOPs" if measure == "flops" else "gradient steps"
    where = (
        "90% of the teacher"
        if target >= 0.9 * teacher
        else f"{target:.1%}, the best accuracy every seed of both reached (90% of the teacher, "
        f"{0.9 * teacher:.1%}, was not)"
    )
    measured = (
        f"{worse} needs **{value:.2f}x** the {what} of {better}"
        if value is not None
        else f"not comparable (a start-level target, {target:.1%})"
    )
    line = f"- {better} vs {worse}, to {where}: {measured}. Seed: OPD needs {claim}."
    return line, {"better": better, "worse": worse, "measure": measure, "target": target,
                  "ratio": value}  # fmt: skip


def write_report(
    curves: dict[str, list[Curve]],
    command: str,
    wall_s: dict[str, float],
    jobs: int,
    lrs: dict[str, float],
    tuned: bool,
) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    teacher = statistics.mean(
        c.teacher_score for runs in curves.values() for c in runs if c.teacher_score
    )
    rows = {key: summarize(key, runs, teacher, lrs[key]) for key, runs in curves.items()}
    lr_text = (
        "each method at its own learning rate (the best of `benchmarks/lr_sweep.py`, column lr)"
        if tuned
        else f"lr {next(iter(lrs.values())):g}"
    )
    lines = [
        "# SFT vs RL vs on-policy distillation, continued from one SFT-initialised student",
        "",
        f"Produced by `{command}` (2 CPU cores, fp32, {jobs} run(s) at a time with one thread "
        f"each; {len([c for runs in curves.values() for c in runs])} runs, "
        f"{sum(c.final.train_seconds for runs in curves.values() for c in runs) / 3600:.1f} h of "
        "training steps in all, under load from other work). Every method starts from the "
        "demo's SFT-initialised student on its "
        f"arithmetic task with 128 sequences per step, {lr_text} with 50 warm-up steps and "
        "cosine decay, and the same evaluation: greedy accuracy on "
        f"{EVAL_PROBLEMS} held-out problems "
        "(one problem = 0.2 points; the binomial standard error near 80% is about 1.8 points). "
        "FLOPs follow `opd_core/flops.py` (sampling, scoring and training; evaluation not "
        "counted); *seconds* are the training steps' own time (evaluations excluded), measured "
        "while other runs shared the machine: compare them within this table only.",
        "",
        f"Teacher: **{teacher:.1%}**; 90% of it: {0.9 * teacher:.1%}; 95%: {0.95 * teacher:.1%}. "
        f"Student at the start: {next(iter(rows.values()))['start']:.1%}. To-target columns "
        "give the median over the seeds that got there (n/seeds reached), or *not reached* "
        "unless a majority did.",
        "",
        "| method | key | lr | seeds | final accuracy (mean ± std, min-max) | steps to 90% "
        "| FLOPs to 90% | seconds to 90% | steps to 95% | FLOPs to 95% |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, row in rows.items():
        lines.append(
            f"| {row['label']} | `{key}` | {row['lr']:g} | {row['seeds']} "
            f"| {row['final_mean']:.1%} ± "
            f"{row['final_std']:.1%} ({row['final_min']:.1%}-{row['final_max']:.1%}) "
            f"| {fmt(row['steps_to_90'], 'steps')} ({row['reached_90']}/{row['seeds']}) "
            f"| {fmt(row['flops_to_90'], 'flops')} | {fmt(row['seconds_to_90'], 'seconds')} "
            f"| {fmt(row['steps_to_95'], 'steps')} ({row['reached_95']}/{row['seeds']}) "
            f"| {fmt(row['flops_to_95'], 'flops')} |"
        )
    lines += ["", "## The seed's ratios, as measured here", ""]
    opd_runs = [k for k in rows if METHODS[k].family == "opd" and k != "opd_single_prompt"]
    opd_main = [k for k in opd_runs if METHODS[k].main] or opd_runs
    if not opd_main:
        raise SystemExit("compare_objectives: no finished OPD run to compare; run one first")
    best = min(
        opd_main,
        key=lambda k: (
            rows[k]["flops_to_90"] is None,
            rows[k]["flops_to_90"] or 0.0,
            -rows[k]["final_mean"],
        ),
    )
    lines.append(f"Best OPD objective here: `{best}`.")
    lines.append("")
    ratios = []
    for worse, measure, claim in (
        ("sft_teacher_samples", "flops", SEED_CLAIMS["flops_vs_sft"]),
        ("sft_references", "flops", SEED_CLAIMS["flops_vs_sft"]),
        ("rl_grpo", "steps", SEED_CLAIMS["steps_vs_rl"]),
    ):
        if worse in rows:
            line, data = ratio_line(curves, best, worse, teacher, measure, claim)
            lines.append(line)
            ratios.append(data)
    lora_pairs = (
        ("sft_teacher_samples", "sft_teacher_samples_lora32"),
        ("opd_reverse_kl_topk", "opd_reverse_kl_topk_lora32"),
    )
    for full, lora in lora_pairs:
        if full in rows and lora in rows:
            gap = rows[full]["final_mean"] - rows[lora]["final_mean"]
            lines.append(
                f"- LoRA rank 32 vs full fine-tuning ({full}): final accuracy "
                f"{rows[lora]['final_mean']:.1%} vs {rows[full]['final_mean']:.1%} "
                f"({gap * 100:+.1f} points for full FT). Seed: {SEED_CLAIMS['lora']}."
            )
    if "opd_single_prompt" in curves and "opd_forward_kl_topk" in curves:
        single = curves["opd_single_prompt"][0]
        step = single.final.step
        pool = [
            next((p.score for p in c.points if p.step == step), None)
            for c in curves["opd_forward_kl_topk"]
        ]
        pool_scores = [p for p in pool if p is not None]
        pool_text = (
            f"{statistics.mean(pool_scores):.1%} for the full prompt pool at step {step}"
            if pool_scores
            else "(the full-pool runs have no evaluation at that step)"
        )
        lines.append(
            f"- One prompt reused for {step} steps ({step * 128} samples): "
            f"{single.final.score:.1%} (best {single.best_score:.1%}, start "
            f"{single.points[0].score:.1%}), against {pool_text}. "
            f"Seed: {SEED_CLAIMS['single_prompt']}."
        )
    lines += [
        "",
        "![accuracy against steps](comparison_steps.png)",
        "![accuracy against FLOPs](comparison_flops.png)",
        "",
    ]
    (RESULTS / "comparison.md").write_text("\n".join(lines))
    payload = {
        "command": command,
        "teacher": teacher,
        "eval_problems": EVAL_PROBLEMS,
        "methods": rows,
        "best_opd": best,
        "ratios": ratios,
        "curves": {
            key: [[asdict(p) for p in c.points] for c in runs] for key, runs in curves.items()
        },
    }
    (RESULTS / "comparison.json").write_text(json.dumps(payload, indent=1) + "\n")
    plot(curves, teacher)
    print("\n".join(lines))


def plot(curves: dict[str, list[Curve]], teacher: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for axis, filename in (("steps", "comparison_steps.png"), ("flops", "comparison_flops.png")):
        fig, ax = plt.subplots(figsize=(8, 5))
        for key, runs in curves.items():
            if key == "opd_single_prompt":
                continue
            steps = sorted({p.step for p in runs[0].points})
            by_step = [[p for c in runs for p in c.points if p.step == s] for s in steps]
            xs = [
                statistics.mean(p.step if axis == "steps" else p.total_flops for p in ps)
                for ps in by_step
            ]
            scores = [[p.score for p in ps] for ps in by_step]
            style = "-" if METHODS[key].main else ":"
            (line,) = ax.plot(
                xs,
                [statistics.mean(s) for s in scores],
                style,
                marker="o",
                ms=2,
                label=f"{key} ({len(runs)} seeds)",
            )
            if len(runs) > 1:
                ax.fill_between(
                    xs,
                    [min(s) for s in scores],
                    [max(s) for s in scores],
                    color=line.get_color(),
                    alpha=0.15,
                )
        ax.axhline(teacher, color="black", ls="--", lw=1, label="teacher")
        for fraction in TARGETS:
            ax.axhline(fraction * teacher, color="gray", ls=":", lw=1)
        if axis == "flops":
            ax.set_xlim(left=0)
            ax.set_xlabel("FLOPs (teacher + student)")
        else:
            ax.set_xlabel("gradient steps")
        ax.set_ylabel(f"held-out accuracy ({EVAL_PROBLEMS} problems)")
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        fig.savefig(RESULTS / filename, dpi=120)
        plt.close(fig)


DEFAULT_STEPS = 200
SINGLE_PROMPT_STEPS = 50
EVAL_PROBLEMS = 500
SWEEP_JSON = RESULTS / "lr_sweep.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the main methods")
    parser.add_argument("--all-seeds", action="store_true", help="run variants on every seed")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (one thread each)")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "compare_objectives")
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--fresh", action="store_true", help="rerun finished runs")
    parser.add_argument("--report-only", action="store_true", help="only rewrite the report")
    parser.add_argument("--lr", type=float, default=DEFAULT_LR, help="every method's lr")
    parser.add_argument(
        "--tuned",
        action="store_true",
        help=f"each method at its best lr from {SWEEP_JSON.relative_to(ROOT)} (overrides --lr)",
    )
    args = parser.parse_args()
    lrs = tuned_lrs(SWEEP_JSON) if args.tuned else {key: args.lr for key in METHODS}
    seeds = list(range(args.seeds))
    # the first seed of every main method first, then further seeds by tier, then variants
    work = sorted(
        (
            (key, seed)
            for seed in seeds
            for key in args.methods
            if seed in seeds_of(key, seeds, args.all_seeds)
        ),
        key=lambda item: (
            0
            if item[1] == 0 and (METHODS[item[0]].main or item[0] == "opd_single_prompt")
            else METHODS[item[0]].tier
            if METHODS[item[0]].main
            else 3,
            item[1],
            list(METHODS).index(item[0]),
        ),
    )
    wall_s: dict[str, float] = {}
    if not args.report_only:
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futures = {
                f"{key}/seed{seed}": pool.submit(
                    run_one,
                    key,
                    seed,
                    args.steps,
                    run_dir(args.out, key, seed, lrs[key]),
                    args.fresh,
                    lrs[key],
                )
                for key, seed in work
            }
            for name, future in futures.items():
                seconds = future.result()
                if seconds is not None:
                    wall_s[name] = seconds
    curves: dict[str, list[Curve]] = {}
    for key, seed in work:
        folder = run_dir(args.out, key, seed, lrs[key])
        if (folder / "summary.json").exists():
            curves.setdefault(key, []).append(load_curve(folder, name=key))
        else:
            print(f"[report] {key} seed {seed}: no finished run in {folder}; left out")
    flags = [f"--steps {args.steps}"] if args.steps != DEFAULT_STEPS else []
    flags += [f"--seeds {args.seeds}"] if args.seeds != 3 else []
    flags += ["--tuned"] if args.tuned else [f"--lr {args.lr:g}"] if args.lr != DEFAULT_LR else []
    command = " ".join(["python benchmarks/compare_objectives.py", *flags])
    write_report(curves, command, wall_s, args.jobs, lrs, args.tuned)


if __name__ == "__main__":
    main()
