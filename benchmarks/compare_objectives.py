"""The seed's comparison on this CPU: SFT, RL and on-policy distillation from one student.

    python benchmarks/compare_objectives.py                 # under an hour on 2 CPU cores
    python benchmarks/compare_objectives.py --steps 100     # a quicker, noisier look

Every method starts from the embedded demo's student (same weights, same arithmetic task, same
128 answers per step, same evaluation of 200 held-out problems) and is run as a real
``python -m opd_core +experiment=<method>`` process. The report reads the run folders back
(``opd_core.curves``) and writes into ``docs/results/``:

- ``comparison.md``: final accuracy, teacher and student FLOPs, gradient steps and FLOPs to
  reach 90% of the teacher's accuracy (or, when a method never gets there, the best accuracy
  both methods of a ratio reach), and OPD's compute ratio against SFT and step ratio against RL
  next to the seed's;
- ``comparison_flops.png`` and ``comparison_steps.png``: accuracy against FLOPs and steps;
- ``comparison.json``: every curve point.

Runs whose folder already holds a ``summary.json`` are reused (``--fresh`` reruns them).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from opd_core.curves import Curve, CurvePoint, first_reaching, load_curve

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"

METHODS: dict[str, tuple[str, list[str]]] = {
    "opd": ("On-policy distillation (reverse KL)", ["+experiment=opd"]),
    "opd_forward_kl": ("On-policy distillation (top-20 forward KL)", ["+experiment=forward_kl"]),
    "sft": ("SFT on teacher samples (off-policy)", ["+experiment=sft"]),
    "rl": (
        "RL (GRPO, 16 prompts x 8 samples)",
        ["+experiment=rl", "train.prompts_per_step=16", "train.samples_per_prompt=8"],
    ),
    "rl_low_lr": (
        "RL (GRPO, 16 prompts x 8 samples, lr 1e-4)",
        [
            "+experiment=rl",
            "train.prompts_per_step=16",
            "train.samples_per_prompt=8",
            "train.lr=1e-4",
        ],
    ),
    "opd_single_prompt": (
        "On-policy distillation, one prompt x 128 samples",
        ["+experiment=single_prompt", "train.samples_per_prompt=128"],
    ),
}
SEED = {
    "compute_ratio_vs_sft": "9-30x less compute",
    "step_ratio_vs_rl": "1/7-1/10 of the gradient steps",
}


def run_method(name: str, overrides: list[str], out: Path, steps: int, eval_every: int) -> float:
    """Run one method as a real CLI process into ``out``; return its wall time in seconds."""
    command = [
        sys.executable,
        "-m",
        "opd_core",
        *overrides,
        f"train.steps={steps}",
        f"eval.every={eval_every}",
        f"eval.teacher={'true' if name == 'opd' else 'false'}",
        "progress=false",
        f"hydra.run.dir={out}",
    ]
    print(f"[{name}] {' '.join(command[2:])}", flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    return time.perf_counter() - started


def steps_and_flops(curve: Curve, target: float) -> tuple[int | None, float | None]:
    point = first_reaching(curve, target)
    return (point.step, point.total_flops) if point else (None, None)


def ratio(better: Curve, worse: Curve, teacher: float, measure: str) -> tuple[float | None, float]:
    """``worse``'s cost over ``better``'s to reach a common target (90% of the teacher, or the
    best score both reach); returns the ratio (``None`` when the target is no better than the
    start) and the target used."""
    target = min(0.9 * teacher, better.best_score, worse.best_score)
    a, b = first_reaching(better, target), first_reaching(worse, target)
    if a is None or b is None or a.step == 0 or b.step == 0:
        return None, target

    def cost(p: CurvePoint) -> float:
        return float(p.step) if measure == "steps" else p.total_flops

    return (cost(b) / cost(a) if cost(a) > 0 else None), target


def score_at(curve: Curve, step: int) -> float | None:
    """The score ``curve`` measured at exactly ``step``, if it evaluated there."""
    return next((p.score for p in curve.points if p.step == step), None)


def fmt_flops(value: float | None) -> str:
    return "-" if value is None else f"{value:.2e}"


def write_report(curves: dict[str, Curve], walls: dict[str, float], steps: int) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    teacher = next((c.teacher_score for c in curves.values() if c.teacher_score), None)
    if teacher is None:
        raise SystemExit("the opd run has no teacher accuracy; rerun it with --fresh")
    target = 0.9 * teacher
    lines = [
        "# SFT vs RL vs on-policy distillation, reproduced on the CPU demo",
        "",
        "Produced by `python benchmarks/compare_objectives.py"
        + (f" --steps {steps}" if steps != DEFAULT_STEPS else "")
        + "` (2 CPU cores, fp32). Every method starts from the demo's student on its arithmetic "
        "task with 128 sampled answers per step and the same evaluation (greedy accuracy on 200 "
        "held-out problems). FLOPs follow `opd_core/flops.py` (real tokens; sampling, scoring "
        "and training; evaluation not counted).",
        "",
        f"Teacher accuracy: **{teacher:.1%}**; target (90% of the teacher): **{target:.1%}**. "
        f"Wall time of all runs, one after another: {sum(walls.values()) / 60:.0f} min.",
        "",
        "| method | final accuracy | best | teacher FLOPs | student FLOPs "
        "| steps to target | FLOPs to target | wall time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, curve in curves.items():
        reach_steps, reach_flops = steps_and_flops(curve, target)
        lines.append(
            f"| {METHODS[key][0]} | {curve.final.score:.1%} | {curve.best_score:.1%} "
            f"| {fmt_flops(curve.final.teacher_flops)} | {fmt_flops(curve.final.student_flops)} "
            f"| {reach_steps if reach_steps is not None else 'not reached'} "
            f"| {fmt_flops(reach_flops)} | {walls.get(key, 0.0) / 60:.1f} min |"
        )
    lines += ["", "## Ratios, as measured", ""]
    best_rl = max(("rl", "rl_low_lr"), key=lambda key: curves[key].best_score)
    for opd in ("opd", "opd_forward_kl"):
        for worse, measure, seed_key, what in (
            ("sft", "flops", "compute_ratio_vs_sft", "compute (teacher + student FLOPs)"),
            (best_rl, "steps", "step_ratio_vs_rl", "gradient steps"),
        ):
            value, used = ratio(curves[opd], curves[worse], teacher, measure)
            measured = (
                f"{METHODS[worse][0]} needs {value:.2f}x the {what}"
                if value is not None
                else "not comparable (one of them never got past its starting accuracy)"
            )
            lines.append(
                f"- {METHODS[opd][0]} vs {METHODS[worse][0]}, to reach {used:.1%}: {measured}. "
                f"Seed: OPD needs {SEED[seed_key]} (AIME'24, Qwen3-8B student, Qwen3-32B teacher)."
            )
    single, full = curves["opd_single_prompt"], curves["opd"]
    same_step = score_at(full, single.final.step)
    pool = (
        f"{same_step:.1%} from the full prompt pool after as many steps"
        if same_step is not None
        else "(the full-pool run has no evaluation at that step)"
    )
    lines += [
        f"- One prompt reused for {single.final.step} steps "
        f"({single.final.step * 128} samples): {single.final.score:.1%} "
        f"(best {single.best_score:.1%}, start {single.points[0].score:.1%}), against {pool}. "
        "Seed: one prompt for 20 steps (5120 samples) reaches the teacher's score.",
        "",
        "![accuracy against FLOPs](comparison_flops.png)",
        "![accuracy against steps](comparison_steps.png)",
        "",
    ]
    (RESULTS / "comparison.md").write_text("\n".join(lines))
    data = {key: [asdict(p) for p in c.points] for key, c in curves.items()}
    payload = {"teacher": teacher, "curves": data, "wall_s": walls}
    (RESULTS / "comparison.json").write_text(json.dumps(payload, indent=1))
    plot(curves, teacher)
    print((RESULTS / "comparison.md").read_text())


def plot(curves: dict[str, Curve], teacher: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for axis, filename in (("flops", "comparison_flops.png"), ("steps", "comparison_steps.png")):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for key, curve in curves.items():
            xs = [p.total_flops if axis == "flops" else p.step for p in curve.points]
            ax.plot(xs, [p.score for p in curve.points], marker="o", ms=3, label=METHODS[key][0])
        ax.axhline(teacher, color="black", ls="--", lw=1, label="teacher")
        ax.axhline(0.9 * teacher, color="gray", ls=":", lw=1, label="90% of teacher")
        if axis == "flops":
            ax.set_xscale("symlog", linthresh=1e9)
            ax.set_xlabel("FLOPs (teacher + student)")
        else:
            ax.set_xlabel("gradient steps")
        ax.set_ylabel("eval accuracy")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(RESULTS / filename, dpi=120)
        plt.close(fig)


DEFAULT_STEPS = 400
DEFAULT_SINGLE_PROMPT_STEPS = 50
SINGLE_PROMPT_EVAL_EVERY = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument(
        "--single-prompt-steps",
        type=int,
        default=DEFAULT_SINGLE_PROMPT_STEPS,
        help="steps of the single-prompt run (evaluated every 10; the seed used 20)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "compare_objectives")
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--fresh", action="store_true", help="rerun methods already finished")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    walls_path = args.out / "wall_s.json"
    walls: dict[str, float] = json.loads(walls_path.read_text()) if walls_path.exists() else {}
    for name in args.methods:
        out = args.out / name
        if args.fresh and out.exists():
            shutil.rmtree(out)
        if not (out / "summary.json").exists():
            if out.exists():
                shutil.rmtree(out)  # an unfinished run of this benchmark: start it again
            steps, every = (
                (args.single_prompt_steps, SINGLE_PROMPT_EVAL_EVERY)
                if name == "opd_single_prompt"
                else (args.steps, args.eval_every)
            )
            walls[name] = run_method(name, METHODS[name][1], out, steps, every)
            args.out.mkdir(parents=True, exist_ok=True)
            walls_path.write_text(json.dumps(walls))
    curves = {name: load_curve(args.out / name, name=name) for name in METHODS}
    write_report(curves, walls, args.steps)


if __name__ == "__main__":
    main()
