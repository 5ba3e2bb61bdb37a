"""Build the demo models from scratch and report build times and held-out accuracies.

    python -m opd_arith.measure                      # default DemoSpec, fresh temporary cache
    python -m opd_arith.measure --teacher-steps 600 --student-steps 200 --num-eval 400
    python -m opd_arith.measure --num-eval 500 --bpe-teacher-steps 500 750 1000   # + teacher_bpe

Used to tune :class:`opd_arith.build.DemoSpec`: the teacher should be strong, the student
clearly weaker but able to learn.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from opd_arith.build import DemoSpec, build_demo_models, evaluate_accuracy
from opd_arith.other_tokenizer import build_bpe_teacher


def _spec_from_args(args: argparse.Namespace) -> DemoSpec:
    """The default spec with the command line's overrides."""
    overrides = {
        name: getattr(args, name)
        for name in (
            "teacher_steps",
            "student_steps",
            "num_train",
            "seed",
            "student_target_accuracy",
        )
        if getattr(args, name) is not None
    }
    return dataclasses.replace(DemoSpec(), **overrides)


def _accuracy(model_dir: Path, spec: DemoSpec, num_eval: int) -> tuple[float, float]:
    """Held-out greedy accuracy of the model in ``model_dir`` and the seconds it took."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    start = time.perf_counter()
    accuracy = evaluate_accuracy(model, tokenizer, spec.eval_problems(num_eval), 32, 100)
    return accuracy, time.perf_counter() - start


def measure(spec: DemoSpec, cache_dir: Path, num_eval: int) -> dict[str, float]:
    """Build ``spec`` into ``cache_dir`` and return its build times and accuracies."""
    start = time.perf_counter()
    paths = build_demo_models(spec, cache_dir, progress=True)
    total = time.perf_counter() - start
    info = json.loads((paths.teacher_dir.parent / "build_info.json").read_text())
    teacher_acc, teacher_eval_s = _accuracy(paths.teacher_dir, spec, num_eval)
    student_acc, student_eval_s = _accuracy(paths.student_dir, spec, num_eval)
    return {
        "build_total_s": total,
        "tokenizer_s": info["tokenizer_seconds"],
        "teacher_sft_s": info["teacher"]["seconds"],
        "student_sft_s": info["student"]["seconds"],
        "teacher_params": info["teacher"]["params"],
        "student_params": info["student"]["params"],
        "teacher_accuracy": teacher_acc,
        "student_accuracy": student_acc,
        "teacher_eval_s": teacher_eval_s,
        "student_eval_s": student_eval_s,
    }


def measure_bpe_teacher(spec: DemoSpec, cache_dir: Path, num_eval: int, steps: int) -> float:
    """Build (or reuse) the other-tokenizer teacher trained ``steps`` SFT steps into
    ``cache_dir`` and return its held-out accuracy."""
    folder = build_bpe_teacher(spec, cache_dir, steps=steps)
    return _accuracy(folder, spec, num_eval)[0]


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, build, measure and print the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="reuse/keep builds here (default: a fresh temporary folder)",
    )
    parser.add_argument("--num-eval", type=int, default=200, help="held-out problems")
    parser.add_argument("--teacher-steps", type=int, default=None)
    parser.add_argument("--student-steps", type=int, default=None)
    parser.add_argument("--num-train", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--student-target-accuracy", type=float, default=None)
    parser.add_argument(
        "--bpe-teacher-steps",
        type=int,
        nargs="*",
        default=[],
        help="also build the other-tokenizer teacher (demo://arithmetic/teacher_bpe's recipe) "
        "with each of these SFT step counts and report its accuracy",
    )
    args = parser.parse_args(argv)
    spec = _spec_from_args(args)
    print(f"[measure] torch threads: {torch.get_num_threads()}; spec digest {spec.digest()}")
    with tempfile.TemporaryDirectory(prefix="opd_arith_measure_") as tmp:
        cache = args.cache_dir or Path(tmp)
        results = measure(spec, cache, args.num_eval)
        for steps in args.bpe_teacher_steps:
            accuracy = measure_bpe_teacher(spec, cache, args.num_eval, steps)
            results[f"teacher_bpe_{steps}_accuracy"] = accuracy
    for name, value in results.items():
        shown = f"{value:.1%}" if name.endswith("accuracy") else f"{value:,.1f}"
        print(f"[measure] {name:18s} {shown}")


if __name__ == "__main__":
    main()
