"""Does ``train.overlap`` pay? s/step with it off and on, side by side, per sampler.

    python benchmarks/overlap.py            # about 25 min on 2 quiet CPU cores
    python benchmarks/overlap.py --quick    # tiny models, a few seconds a run (checks the script)

opd-core's side of ``benchmarks/vs_trl.py`` (``bench_common.timing``; ``objective=opd``: the
sampled-token reverse KL with ``loss=importance_sampling``, whose ratio corrects the
one-step-stale rollouts; random-init Qwen3 student and teacher sharing one tokenizer, every
completion runs to the token limit, fp32, fused AdamW, device=cpu), run with
``train.overlap=false`` and ``true``:

- ``sampler=hf`` (``teacher=hf``): the main environment;
- ``sampler=vllm`` (``teacher=hf``; vLLM's engine in the training process, as the sampler runs
  it) with the Python of ``.venv-vllm`` (``make setup-vllm``; ``--vllm-python`` points
  elsewhere), skipped with a note when that environment is missing. vLLM refuses a stop token
  outside the model's vocabulary, so these models keep the tokenizer's EOS and a random model's
  completions may end early (the table gives the mean completion tokens of both runs).

Each run is its own process (so its peak RSS is its own: overlap keeps a second copy of the
student's weights for ``sampler=hf``); the runs of a point are interleaved and repeated with
their order rotated. A run's timed steps leave out the first ``warmup`` steps (the first step
of an overlapped run samples in the loop's thread) and its last step (it starts no prefetch).
The summary per sampler is the median over repeats of off / on (>1: overlap pays), with each
stage's median seconds and how much of the background sampling ran beside the rest of the step
(``overlap/hidden_s``). Results: ``docs/results/overlap.{md,json}`` (``--quick`` writes under
``outputs/overlap/`` instead). Time it on a quiet machine (``uptime`` first): a figure measured
under load is not a figure.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench_common.models import PAIRS, Shape, build_models
from bench_common.paths import OUTPUTS, ROOT, ResultFiles
from bench_common.report import load_text, markdown_table, produced_by, write_report
from bench_common.runs import (
    command_line,
    load_average,
    package_versions,
    spawn_worker,
    warn_if_busy,
)
from bench_common.timing import (
    Point,
    StepClock,
    fresh_dir,
    opd_overrides,
    pair_ratios,
    repeat_medians,
    rotations,
    run_opd,
    slug,
)

RESULTS = ResultFiles.of(__file__)
SAMPLERS = ("hf", "vllm")
MODES = ("off", "on")
QUICK_PAIR = (Shape(64, 128, 1, 2, 1, 32), Shape(64, 128, 2, 2, 1, 32))
"""vLLM's CPU attention needs a head dimension of at least 32."""


def plan(quick: bool, repeats: int) -> list[Point]:
    """The measured points: vs_trl's main point (sampling about 40% of a step) and its long
    completions (sampling most of a step)."""
    if quick:
        return [Point("tiny, 16 tokens", *QUICK_PAIR, 4, 16, warmup=2, steps=2, repeats=1)]
    return [
        Point("10M/50M, 64 tokens", *PAIRS["10M/50M"], 32, 64, warmup=2, steps=4, repeats=repeats),
        Point("10M/50M, 512 tokens", *PAIRS["10M/50M"], 4, 512, warmup=2, steps=3, repeats=repeats),
    ]


def run_overrides(point: Point, models: Path, sampler: str, overlap: bool) -> list[str]:
    """opd-core's overrides for one run: ``point.warmup + point.steps + 1`` steps (the last one
    is not timed), the sampler, and ``train.overlap``."""
    overrides = opd_overrides(point, models, steps=point.warmup + point.steps + 1)
    overrides.append(f"train.overlap={str(overlap).lower()}")
    if sampler == "hf":
        return overrides
    max_len = 128 + point.new_tokens
    return [o for o in overrides if not o.startswith("sampler.batch_size=")] + [
        "sampler=vllm",
        "sampler.dtype=float32",
        f"sampler.engine.max_model_len={max_len}",
        "sampler.engine.kv_cache_gib=1",
        "sampler.engine.enforce_eager=true",
        f"sampler.engine.max_num_seqs={point.prompts}",
    ]


def worker(point: Point, sampler: str, overlap: bool, models: Path, out: Path) -> dict[str, Any]:
    """One run in this process (models built here on first use, with this environment's
    transformers); its timed step times, stage and overlap medians, and peak RSS."""
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    torch.manual_seed(0)
    # vLLM refuses a stop token outside the vocabulary: its completions may end at EOS
    info = build_models(models, point.student, point.teacher, unreachable_eos=sampler == "hf")
    clock = StepClock()
    run_opd(run_overrides(point, models, sampler, overlap), out, clock)
    return {**clock.summary(slice(point.warmup, point.warmup + point.steps)), "models": info}


def measure(point: Point, samplers: dict[str, str], work: Path, threads: int) -> dict[str, Any]:
    """Every (sampler, overlap) run of ``point``, interleaved over its repeats (order rotated
    each repeat); ``samplers`` maps each measured sampler to the Python that runs it."""
    sides = [(s, m) for s in samplers for m in MODES]
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {side: [] for side in sides}
    for repeat, (sampler, mode) in rotations(sides, point.repeats):
        out = fresh_dir(work / "runs" / f"{slug(point.name)}_{sampler}_{mode}_{repeat}")
        models = work / "models" / slug(point.name.split(",")[0]) / sampler
        models.mkdir(parents=True, exist_ok=True)
        args = ["--point", json.dumps(dataclasses.asdict(point)), "--sampler", sampler]
        args += ["--overlap", mode, "--models", str(models), "--out", str(out / "run")]
        label = f"{point.name} | sampler={sampler} overlap {mode} | repeat {repeat + 1}"
        runs[(sampler, mode)].append(
            spawn_worker(
                __file__,
                args,
                threads,
                f"{label}/{point.repeats}",
                out / "worker.log",
                python=samplers[sampler],
            )
        )
    record: dict[str, Any] = {"point": dataclasses.asdict(point), "samplers": {}}
    for sampler in samplers:
        per_repeat = {mode: repeat_medians(runs[(sampler, mode)]) for mode in MODES}
        ratios = pair_ratios(per_repeat["off"], per_repeat["on"])
        record["samplers"][sampler] = {
            "models": runs[(sampler, "off")][-1]["models"],
            "speedup": statistics.median(ratios),
            "ratios_per_pair": ratios,
            "modes": {
                mode: {
                    "s_per_step": statistics.median(per_repeat[mode]),
                    "s_per_step_per_repeat": per_repeat[mode],
                    "stages_s": runs[(sampler, mode)][-1]["stages_s"],
                    "overlap": runs[(sampler, mode)][-1]["overlap"],
                    "peak_rss_mb": max(r["peak_rss_mb"] for r in runs[(sampler, mode)]),
                    "completion_tokens": runs[(sampler, mode)][-1]["completion_tokens"],
                }
                for mode in MODES
            },
        }
    return record


def table_row(point: dict[str, Any], sampler: str, result: dict[str, Any]) -> str:
    """One (point, sampler) line of the report's table."""
    off, on = result["modes"]["off"], result["modes"]["on"]
    return (
        f"{point['name']} ({point['prompts']} x {point['new_tokens']}) | {sampler} | "
        f"{off['s_per_step']:.2f} | {on['s_per_step']:.2f} | {result['speedup']:.2f} | "
        f"{off['stages_s'].get('sample', 0.0):.2f} | "
        f"{on['overlap'].get('overlap/hidden_s', 0.0):.2f} | "
        f"{on['overlap'].get('overlap/wait_s', 0.0):.2f} | "
        f"{on['stages_s'].get('prefetch', 0.0):.3f} | "
        f"{off['peak_rss_mb']:.0f} / {on['peak_rss_mb']:.0f} MB | "
        f"{off['completion_tokens']:.1f} / {on['completion_tokens']:.1f}"
    )


def markdown(record: dict[str, Any]) -> list[str]:
    """The report: s/step off and on per point and sampler, then every run's stages."""
    versions = record["versions"]
    table = markdown_table(
        "point | sampler | s/step off | s/step on | off / on (median of pairs) | "
        "sample s (off) | sampling hidden s (on) | wait s (on) | prefetch s (on) | "
        "peak RSS off / on | completion tokens off / on",
        [
            table_row(point["point"], sampler, result)
            for point in record["points"]
            for sampler, result in point["samplers"].items()
        ],
    )
    stages = [
        f"- {point['point']['name']}, {sampler}, overlap {mode}: "
        + ", ".join(f"{n} {t:.3f}" for n, t in sorted(result["modes"][mode]["stages_s"].items()))
        for point in record["points"]
        for sampler, result in point["samplers"].items()
        for mode in MODES
    ]
    return [
        "# Does train.overlap pay?",
        "",
        produced_by(
            record["command"],
            f"{record['threads']} thread(s) per run, torch {versions.get('torch', '?')}, vLLM "
            f"{versions.get('vllm', '-')}",
            load_text(record["load_average_before_after"]),
            f"{record['wall_s'] / 60:.1f} min",
        )
        + ". opd-core with `objective=opd` (importance "
        "sampling, sampler log-probs as the behaviour policy), random-init Qwen3 student and "
        "teacher, fp32, every completion to the token limit with sampler=hf (with sampler=vllm "
        "they may stop at EOS); each run its own process, the runs "
        "of a point interleaved and repeated with their order rotated; s/step is the median of a "
        "run's timed steps (warm-up and the last step left out), then the median over repeats.",
        "",
        *table,
        "",
        "Stages (s, median over the last repeat's timed steps; with overlap `sample` is what the "
        "step waited for its rollouts, `prefetch` the weight copy or sync for the next step):",
        "",
        *stages,
        "",
        *record["notes"],
        "",
    ]


def versions(vllm_python: str | None) -> dict[str, str]:
    """torch's version here and vLLM's in its environment (when measured)."""
    import subprocess

    found = package_versions("torch")
    if vllm_python is not None:
        done = subprocess.run(
            [vllm_python, "-c", "import vllm; print(vllm.__version__)"],
            capture_output=True,
            text=True,
        )
        found["vllm"] = (done.stdout.strip().splitlines() or ["?"])[-1]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny models: check the script")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per run")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of each point")
    parser.add_argument(
        "--vllm-python",
        default=str(ROOT / ".venv-vllm" / "bin" / "python"),
        help="the Python of an environment with vLLM (make setup-vllm)",
    )
    parser.add_argument("--samplers", default="hf,vllm", help="which samplers to measure")
    parser.add_argument("--work", type=Path, default=OUTPUTS / "overlap")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--point", help=argparse.SUPPRESS)
    parser.add_argument("--sampler", help=argparse.SUPPRESS)
    parser.add_argument("--overlap", help=argparse.SUPPRESS)
    parser.add_argument("--models", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--answer", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        point = Point.from_json(args.point)
        answer = worker(point, args.sampler, args.overlap == "on", args.models, args.out)
        args.answer.write_text(json.dumps(answer))
        return
    load_before = warn_if_busy("overlap")
    started = time.perf_counter()
    notes: list[str] = []
    samplers: dict[str, str] = {}
    for sampler in args.samplers.split(","):
        if sampler == "hf":
            samplers["hf"] = sys.executable
        elif sampler == "vllm" and Path(args.vllm_python).exists():
            samplers["vllm"] = args.vllm_python
        elif sampler == "vllm":
            notes.append(
                f"sampler=vllm not measured: no Python at {args.vllm_python} (make setup-vllm, "
                "or --vllm-python PATH)."
            )
            print(f"[overlap] {notes[-1]}", flush=True)
        else:
            raise SystemExit(f"--samplers: unknown sampler {sampler!r}; use hf and/or vllm")
    record: dict[str, Any] = {
        "command": command_line(__file__, *sys.argv[1:]),
        "threads": args.threads,
        "versions": versions(samplers.get("vllm")),
        "points": [
            measure(point, samplers, args.work, args.threads)
            for point in plan(args.quick, args.repeats)
        ],
        "notes": notes,
    }
    record["wall_s"] = time.perf_counter() - started
    record["load_average_before_after"] = (load_before, load_average())
    files = RESULTS.under(args.work / "results") if args.quick else RESULTS
    write_report(files, markdown(record), record)


if __name__ == "__main__":
    main()
