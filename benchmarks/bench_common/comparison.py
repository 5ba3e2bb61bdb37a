"""The objective comparison's methods and run folders, shared by ``compare_objectives.py``
(which runs them over seeds) and ``lr_sweep.py`` (which runs them over learning rates, in the
same folders, and picks each method's learning rate for ``compare_objectives.py --tuned``)."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from bench_common.paths import OUTPUTS, ResultFiles
from bench_common.runs import run_cli

RUNS = OUTPUTS / "compare_objectives"
"""Both scripts' run folders (the sweep's default-lr runs are the comparison's first seed)."""
SWEEP = ResultFiles("lr_sweep")
"""Where the sweep's best learning rates are read from."""
LORA = ("+student.lora.r=32", "+student.lora.alpha=64")


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
        "OPD, exact reverse KL over top-20 + tail", ("objective=reverse_kl_topk",), "opd"
    ),
    "opd_reverse_kl_sampled": Method(
        "OPD, sampled-token reverse KL (the seed's estimator)", ("objective=opd",), "opd", tier=2
    ),
    "opd_forward_kl_topk": Method(
        "OPD, forward KL over top-20 + tail", ("objective=forward_kl",), "opd", tier=2
    ),
    "sft_teacher_samples": Method(
        "SFT on teacher samples (off-policy distillation)", ("objective=sft",), "sft"
    ),
    "sft_references": Method(
        "SFT on reference solutions",
        ("objective=sft", "sampler=dataset"),
        "sft",
        tier=2,
    ),
    "rl_grpo": Method("RL (GRPO, 16 prompts x 8 samples)", ("objective=grpo",), "rl"),
    "opd_reverse_kl_truncated": Method(
        "OPD, reverse KL truncated to the teacher's top-20",
        ("objective=reverse_kl_truncated",),
        "opd",
        main=False,
    ),
    "opd_entropy_aware": Method(
        "OPD, entropy-aware (reverse KL + forward KL where teacher entropy > 0.5)",
        ("objective=entropy_aware_kl",),
        "opd",
        main=False,
    ),
    "opd_reverse_kl_topk_lora32": Method(
        "OPD, exact reverse KL top-20, LoRA rank 32 (lr x2.5)",
        ("objective=reverse_kl_topk", *LORA),
        "opd",
        main=False,
        lr_scale=2.5,
        lr_from="opd_reverse_kl_topk",
    ),
    "sft_teacher_samples_lora32": Method(
        "SFT on teacher samples, LoRA rank 32 (lr x2.5)",
        ("objective=sft", *LORA),
        "sft",
        main=False,
        lr_scale=2.5,
        lr_from="sft_teacher_samples",
    ),
    "opd_single_prompt": Method(
        "OPD (forward KL top-20, the best objective here), one prompt x 128 samples",
        (
            "objective=forward_kl",
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
DEFAULT_STEPS = 200
SINGLE_PROMPT = ("eval.every=10",)
SINGLE_PROMPT_STEPS = 50
EVAL_PROBLEMS = 500


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


def tuned_lrs(path: Path = SWEEP.json) -> dict[str, float]:
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
