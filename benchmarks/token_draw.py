"""The decode loop's token draw against ``torch.multinomial``, alone and inside a real decode.

    python benchmarks/token_draw.py           # about 3 min on 2 quiet CPU cores
    python benchmarks/token_draw.py --quick   # fewer repeats, 16 new tokens: checks the script

``opd_hf.generation.pick_tokens`` draws each row's token by inverting its cumulative
distribution at one uniform number. The draw it replaced, and HF ``generate``'s, is
``torch.multinomial`` over the softmax, which on CPU draws an exponential number for every
vocabulary entry. This script times both, side by side and interleaved:

- the draw alone (fp32 logits, temperature 1) at the demo's shape (128 rows x 320 entries) and at
  chat vocabularies (SmolLM2's 49,152 entries, Qwen3's 151,936);
- a whole decode of SmolLM2-135M-Instruct (the PyPI GGUF, fp32): 8 chat prompts x 128 new tokens
  with no stop token (every row runs to the end), once with each draw.

Medians of interleaved repeats. Results: ``docs/results/token_draw.{md,json}`` (``--quick``:
``outputs/token_draw/``). Time it on a quiet machine (``uptime`` first).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from bench_common.models import smollm2_models
from bench_common.paths import OUTPUTS, ResultFiles
from bench_common.prompts import CHAT_PROMPTS
from bench_common.report import load_text, markdown_table, produced_by, write_report
from bench_common.runs import command_line, load_average

from opd_core.api import GenerationParams

RESULTS = ResultFiles.of(__file__)
SHAPES = {  # rows x vocabulary entries
    "demo (128 x 320)": (128, 320),
    "SmolLM2, 8 rows (8 x 49,152)": (8, 49_152),
    "SmolLM2, 32 rows (32 x 49,152)": (32, 49_152),
    "Qwen3, 8 rows (8 x 151,936)": (8, 151_936),
}
Draw = Callable[[torch.Tensor, GenerationParams, "torch.Tensor | None"], Any]


def multinomial_draw(
    logits_RV: torch.Tensor, params: GenerationParams, uniform_R: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The draw before: ``torch.multinomial`` over the tempered softmax (``uniform_R`` unused;
    the global generator supplies one exponential per entry)."""
    logprobs_RV = torch.log_softmax(logits_RV / params.temperature, dim=-1)
    token_R = torch.multinomial(logprobs_RV.exp(), 1).squeeze(-1)
    return token_R, logprobs_RV.gather(-1, token_R[:, None]).squeeze(-1)


def interleaved(calls: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median wall seconds of each call, the calls alternating ``repeats`` times."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def draw_only(repeats: int) -> dict[str, dict[str, float]]:
    """Seconds per draw of each method at each of :data:`SHAPES`."""
    from opd_hf.generation import pick_tokens

    params = GenerationParams(max_new_tokens=1, temperature=1.0)
    rows = {}
    for label, (R, V) in SHAPES.items():
        logits_RV = torch.randn(R, V) * 3
        uniform_R = torch.rand(R)
        seconds = interleaved(
            {
                "multinomial": partial(multinomial_draw, logits_RV, params),
                "inverse_cdf": partial(pick_tokens, logits_RV, params, uniform_R),
            },
            repeats,
        )
        rows[label] = {**seconds, "speedup": seconds["multinomial"] / seconds["inverse_cdf"]}
        print(f"[draw] {label}: {rows[label]}", flush=True)
    return rows


def decode_with(draw: Draw, run: Callable[[], Any]) -> Callable[[], Any]:
    """``run`` with the decode loop's draw replaced by ``draw``."""
    import opd_hf.generation as generation

    def call() -> Any:
        kept = generation.pick_tokens
        generation.pick_tokens = draw  # type: ignore[assignment]
        try:
            return run()
        finally:
            generation.pick_tokens = kept

    return call


def whole_decode(new_tokens: int, repeats: int) -> dict[str, float]:
    """Seconds per SmolLM2 decode of 8 chat prompts with each draw."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from opd_hf.generation import decode, pick_tokens

    folder = OUTPUTS / RESULTS.name / "smollm2"
    smollm2_models(folder, CHAT_PROMPTS, 8)
    tokenizer = AutoTokenizer.from_pretrained(folder / "student")
    model = AutoModelForCausalLM.from_pretrained(folder / "student", dtype=torch.float32).eval()
    chats = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
        )
        for p in CHAT_PROMPTS[:8]
    ]
    tokenizer.padding_side = "left"
    batch = tokenizer(chats, return_tensors="pt", padding=True, add_special_tokens=False)
    params = GenerationParams(max_new_tokens=new_tokens, temperature=1.0)

    def run() -> Any:
        return decode(model, batch.input_ids, batch.attention_mask, params, stop_ids=[], pad_id=0)

    run()  # warm-up
    seconds = interleaved(
        {
            "multinomial": decode_with(multinomial_draw, run),
            "inverse_cdf": decode_with(pick_tokens, run),
        },
        repeats,
    )
    result = {**seconds, "speedup": seconds["multinomial"] / seconds["inverse_cdf"]}
    print(f"[decode] {result}", flush=True)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, 16 new tokens")
    given = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(given)
    torch.set_num_threads(2)
    torch.manual_seed(0)
    load_before = load_average()
    draws = draw_only(repeats=5 if args.quick else 50)
    new_tokens = 16 if args.quick else 128
    decoded = whole_decode(new_tokens, repeats=1 if args.quick else 3)
    load = (load_before, load_average())
    files = RESULTS.under(OUTPUTS / RESULTS.name) if args.quick else RESULTS
    command = command_line(__file__, *given)
    lines = [
        "# The token draw: inverse CDF against torch.multinomial",
        "",
        produced_by(command, f"2 threads, torch {torch.__version__}", load_text(load))
        + ". fp32 logits, temperature 1; medians of interleaved repeats (50 per draw shape, "
        "3 per decode).",
        "",
        *markdown_table(
            "shape | torch.multinomial | inverse CDF (pick_tokens) | speedup",
            [
                f"{label} | {1e3 * r['multinomial']:.3f} ms | {1e3 * r['inverse_cdf']:.3f} ms "
                f"| {r['speedup']:.2f}x"
                for label, r in draws.items()
            ],
        ),
        "",
        f"A whole decode (`opd_hf.generation.decode`) of SmolLM2-135M-Instruct, fp32, 8 chat "
        f"prompts x {new_tokens} new tokens, no stop token: {decoded['multinomial']:.2f} s with "
        f"torch.multinomial, {decoded['inverse_cdf']:.2f} s with the inverse CDF: "
        f"**{decoded['speedup']:.2f}x**.",
        "",
    ]
    record = {"command": command, "load_average": load, "draw": draws, "decode": decoded}
    write_report(files, lines, record)


if __name__ == "__main__":
    main()
