"""Would a compiled decode step speed up the HF sampler on this CPU? Measured, not assumed.

    python benchmarks/compiled_decode.py          # about 5 min on 2 quiet CPU cores
    python benchmarks/compiled_decode.py --quick  # tiny model: checks the script

The sampler (``opd_hf.generation.decode``) runs one single-token forward of the student per
sampled token over a static KV cache. On a small model each step is bound by per-operation
overhead (issue 13's profile), which is what ``torch.compile`` removes by fusing operations. This
script times, on vs_trl's random-init 10.7M student, 32 rows:

- ``decode``: the sampler's whole decode loop (prefill + 63 single-token steps, eager);
- one single-token step at a fixed cache position, eager, and the same step through
  ``torch.compile(model)`` (inductor, static shapes; the full-length attention mask, so every
  step has the same shapes), after its compilation, whose time is reported too.

Medians of interleaved repeats. Results: ``docs/results/compiled_decode.{md,json}`` (``--quick``:
``outputs/compiled_decode/``). Time it on a quiet machine (``uptime`` first).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

import torch
from bench_common.models import PAIRS, build_models
from bench_common.paths import OUTPUTS, ResultFiles
from bench_common.report import markdown_table, produced_by, write_report
from bench_common.runs import command_line, load_average

RESULTS = ResultFiles.of(__file__)


def timed(function: Any, repeats: int) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``function``."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model: check the script")
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--prompt-tokens", type=int, default=24)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20, help="timed single steps per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    from transformers import AutoModelForCausalLM

    from opd_core.api import GenerationParams, forward_accepts
    from opd_hf.generation import decode, make_cache

    pair = "tiny" if args.quick else "10M/50M"
    work = OUTPUTS / RESULTS.name
    folder = work / pair.replace("/", "_")
    info = build_models(folder, *PAIRS[pair])
    model = AutoModelForCausalLM.from_pretrained(folder / "student", dtype=torch.float32).eval()
    B, P, C = args.rows, args.prompt_tokens, args.new_tokens
    vocab = int(info["vocab"])
    prompt_ids_BP = torch.randint(0, vocab - 1, (B, P))
    prompt_mask_BP = torch.ones(B, P, dtype=torch.long)
    params = GenerationParams(max_new_tokens=C, temperature=1.0)
    cache_key = "cache" if forward_accepts(model, "cache") else "past_key_values"

    def whole_decode() -> None:
        decode(model, prompt_ids_BP, prompt_mask_BP, params, stop_ids=[vocab + 10], pad_id=0)

    cache = make_cache(model, P + C)
    mask_BL = torch.ones(B, P + C, dtype=torch.long)
    with torch.no_grad():  # fill the cache with the prompt, as the sampler's prefill does
        model(input_ids=prompt_ids_BP, attention_mask=mask_BL[:, :P], use_cache=True,
              **{cache_key: cache}, cache_position=torch.arange(P))  # fmt: skip
    step_inputs = {
        "input_ids": torch.randint(0, vocab - 1, (B, 1)),
        "attention_mask": mask_BL,  # full length: every step the same shapes
        "position_ids": torch.full((B, 1), P),
        "cache_position": torch.tensor([P]),
        "use_cache": True,
        cache_key: cache,
    }
    compiled = torch.compile(model, dynamic=False)

    def fresh_inputs() -> dict[str, Any]:
        """The step's inputs, the cache rewound to hold just the prompt (each forward advances
        its static layers' own length counters)."""
        for layer in getattr(cache, "layers", ()):
            if isinstance(getattr(layer, "cumulative_length", None), torch.Tensor):
                layer.cumulative_length.fill_(P)
        return {
            **step_inputs,
            "cache_position": torch.tensor([P]),
            "position_ids": torch.full((B, 1), P),
        }

    @torch.no_grad()
    def eager_step() -> None:
        model(**fresh_inputs())

    @torch.no_grad()
    def compiled_step() -> None:
        compiled(**fresh_inputs())

    started = time.perf_counter()
    compiled_step()  # compiles
    compile_s = time.perf_counter() - started
    print(f"[compiled_decode] compiled in {compile_s:.1f} s", flush=True)
    with torch.no_grad():
        eager_logits = model(**fresh_inputs()).logits
        max_diff = float((compiled(**fresh_inputs()).logits - eager_logits).abs().max())
        scale = float(eager_logits.abs().max())
    rounds: dict[str, list[float]] = {"decode_s": [], "eager_step_s": [], "compiled_step_s": []}
    whole_decode()  # warm-up
    for index in range(args.rounds):
        rounds["decode_s"].append(statistics.median(timed(whole_decode, 1)))
        order = [("eager_step_s", eager_step), ("compiled_step_s", compiled_step)]
        for key, function in order if index % 2 == 0 else order[::-1]:
            rounds[key].append(statistics.median(timed(function, args.repeats)))
        print(f"[compiled_decode] round {index + 1}/{args.rounds}: "
              + ", ".join(f"{k} {v[-1]:.4f}" for k, v in rounds.items()), flush=True)  # fmt: skip
    medians = {k: statistics.median(v) for k, v in rounds.items()}
    record = {
        "command": command_line(__file__, *sys.argv[1:]),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "student_params": info["student_params"],
        "rows": B,
        "prompt_tokens": P,
        "new_tokens": C,
        "compile_s": round(compile_s, 2),
        "compiled_logits_max_abs_diff": max_diff,
        "logits_max_abs": scale,
        "medians": medians,
        "rounds": rounds,
        "compiled_speedup_per_step": medians["eager_step_s"] / medians["compiled_step_s"],
        "decode_s_per_token": medians["decode_s"] / C,
        "load_average_before": load_average(),
    }
    write_report(RESULTS.under(work) if args.quick else RESULTS, markdown(record), record)


def markdown(record: dict[str, Any]) -> list[str]:
    """The report: the decode loop, one step eager and compiled, the compilation, a verdict."""
    m = record["medians"]
    return [
        "# A compiled decode step on this CPU",
        "",
        produced_by(record["command"], f"{record['threads']} threads, torch {record['torch']}")
        + f". Random-init Qwen3 student of {record['student_params'] / 1e6:.1f}M "
        f"parameters (vs_trl's 10M), {record['rows']} rows, {record['prompt_tokens']} prompt "
        f"tokens, {record['new_tokens']} new tokens, static KV cache. Medians of "
        f"{len(record['rounds']['decode_s'])} interleaved rounds.",
        "",
        *markdown_table(
            "measure | seconds",
            [
                f"the sampler's decode loop, eager (prefill + {record['new_tokens'] - 1} steps) "
                f"| {m['decode_s']:.3f} ({record['decode_s_per_token'] * 1000:.1f} ms a token)",
                f"one single-token step, eager | {m['eager_step_s'] * 1000:.2f} ms",
                "the same step, `torch.compile` (inductor, static shapes) "
                f"| {m['compiled_step_s'] * 1000:.2f} ms",
                f"compilation (once per shape) | {record['compile_s']:.1f} s",
            ],
        ),
        "",
        f"Eager time / compiled time per step: {record['compiled_speedup_per_step']:.2f} (above 1: "
        "compiling pays). The "
        f"compiled step's logits differ from eager's by at most "
        f"{record['compiled_logits_max_abs_diff']:.1e} (largest logit "
        f"{record['logits_max_abs']:.1f}).",
        "",
        "Verdict: "
        + (
            "compiling the decode step pays here."
            if record["compiled_speedup_per_step"] > 1
            else "on this CPU the compiled step is slower than eager, so the sampler decodes "
            "eagerly (a GPU, where a compiled step also removes kernel launches, may differ)."
        ),
        "",
    ]


if __name__ == "__main__":
    main()
