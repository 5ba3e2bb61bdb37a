"""Mixed precision: forward passes in bf16 where the hardware computes it natively, measured.

``train.precision=bf16`` runs the models' forward passes under ``torch.autocast`` in bfloat16
(sampling, teacher scoring, the update's forward; the backward follows the forward's dtypes),
while the weights, the optimizer state, the logits handed to the objectives, log-probabilities
and losses stay fp32. Honoured by the HF sampler and teacher; other samplers and teachers
(vLLM, remote, cross-tokenizer) run in their own precision.
``auto`` chooses bf16 only where it is measured faster; ``fp32`` (the default) never uses it.

Whether bf16 is fast depends on the chip, not on torch: a GPU with bf16 units, or a CPU with
AVX512-BF16 / AMX, runs a bf16 matmul 2-3x faster than fp32; a CPU without them emulates it,
hundreds of times slower (``../shared/MACHINE.md`` has both). So support is *measured*:
:func:`probe_bf16` times a linear layer in both precisions (what ``bf16`` is refused with), and
``auto`` times the student itself (:func:`probe_student`: its decode steps, a scoring forward and
an update), because on small models the casts and per-operation overheads, not the matmuls,
decide.
"""

from __future__ import annotations

import contextlib
import functools
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from opd_core.errors import OPDError

PRECISIONS = ("fp32", "bf16", "auto")
"""The values of ``train.precision``."""
FASTER_AT = 1.2
"""``auto`` picks bf16 when its measured rate is at least this multiple of fp32's."""
PROBE_WIDTH = 1024
"""The hidden size of :func:`probe_bf16`'s linear layer."""
PROBE_ROWS = 512
"""Tokens per probe call: a scoring or update micro-batch's worth."""


@dataclass(frozen=True)
class _Probe(ABC):
    """A bf16 measurement on one device type: what the hardware reports and how much faster."""

    device: str
    reported: bool
    """The hardware reports bf16 support (CUDA's check; on a CPU, oneDNN's)."""

    @property
    @abstractmethod
    def speedup(self) -> float:
        """How many times faster bf16 ran than fp32 (0: not measured)."""

    @property
    def faster(self) -> bool:
        return self.reported and self.speedup >= FASTER_AT

    @abstractmethod
    def measured(self) -> str:
        """What was timed, in words, with both results."""

    def describe(self) -> str:
        return (
            f"{self.device}: bf16 {'reported' if self.reported else 'not reported'} by the "
            f"hardware; {self.measured()} ({self.speedup:.2f}x)"
        )


@dataclass(frozen=True)
class Bf16Probe(_Probe):
    """One linear layer timed in both precisions."""

    fp32_gflops: float
    bf16_gflops: float

    @property
    def speedup(self) -> float:
        """bf16's matmul rate over fp32's."""
        return self.bf16_gflops / self.fp32_gflops if self.fp32_gflops > 0 else 0.0

    def measured(self) -> str:
        return (
            f"a linear layer of width {PROBE_WIDTH} ran at {self.bf16_gflops:.0f} GFLOP/s in bf16 "
            f"against {self.fp32_gflops:.0f} in fp32"
        )


def bf16_reported(device: torch.device) -> bool:
    """Whether the hardware says it computes bf16 (CUDA's check; on a CPU, oneDNN's)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@functools.cache
def probe_bf16(device_type: str, rows: int = PROBE_ROWS, repeats: int = 3) -> Bf16Probe:
    """Time a linear layer as a model of hidden size :data:`PROBE_WIDTH` runs it (``rows``
    tokens into four times the width) in fp32 and under bf16 autocast, which casts the input on
    every call and keeps its bf16 copy of the trainable weight (best of ``repeats`` after a
    warm-up): well under a second on a CPU, once per process. One layer does
    not capture a whole model's per-operation overheads: at the demo's width (96) it measured
    bf16 1.5x faster while the demo's steps ran 0.79x (docs/performance.md); ``auto`` measures
    the student itself (:func:`probe_student`)."""
    device = torch.device(device_type)
    reported = bf16_reported(device)
    width = PROBE_WIDTH
    x_RW = torch.randn(rows, width, device=device)
    weight_FW = torch.randn(4 * width, width, device=device, requires_grad=True)
    rates = {}
    for precision in ("fp32", "bf16"):
        best = float("inf")
        with torch.no_grad(), autocast(precision, device):
            for _ in range(repeats + 1):  # the first is a warm-up
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                torch.nn.functional.linear(x_RW, weight_FW)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                best = min(best, time.perf_counter() - start)
                if best > 1.0:  # emulated bf16: one slow run says enough
                    break
        rates[precision] = 2 * rows * width * 4 * width / best / 1e9
    return Bf16Probe(device.type, reported, rates["fp32"], rates["bf16"])


@dataclass(frozen=True)
class StudentProbe(_Probe):
    """One training step's kinds of work on the student itself, timed in both precisions."""

    fp32_s: float
    bf16_s: float
    rows: int
    tokens: int

    @property
    def speedup(self) -> float:
        """fp32 seconds over bf16 seconds (>1: bf16 is faster)."""
        return self.fp32_s / self.bf16_s if 0 < self.bf16_s < float("inf") else 0.0

    def measured(self) -> str:
        return (
            f"the student's decode steps, scoring forward and update ({self.rows} rows x "
            f"{self.tokens} tokens) took {1e3 * self.bf16_s:.0f} ms in bf16 against "
            f"{1e3 * self.fp32_s:.0f} ms in fp32"
        )


def probe_student(
    model: torch.nn.Module,
    device: torch.device,
    rows: int = 8,
    tokens: int = 32,
    decode_steps: int = 8,
    repeats: int = 1,
) -> StudentProbe:
    """Time the work a step does with the student, in fp32 and under bf16 autocast: ``decode_steps``
    single-token forwards of ``rows`` rows (sampling), a no-grad forward of ``rows x tokens``
    (scoring) and a forward and backward of the same (the update); best of ``repeats`` after a
    warm-up. Unlike one layer (:func:`probe_bf16`) this includes the model's per-operation casts
    and call overheads, which decide the matter on small models. Leaves no gradients and draws
    no numbers from the global generator. Once per run: 0.2 s for the demo's student, 17 s for
    SmolLM2-135M (one thread on a loaded 2-core CPU)."""
    vocab = int(getattr(getattr(model, "config", None), "vocab_size", None) or 2)
    generator = torch.Generator(device).manual_seed(0)
    ids_RT = torch.randint(0, vocab, (rows, tokens), generator=generator, device=device)
    kept_grads = [(p, p.grad) for p in model.parameters()]
    reported = bf16_reported(device)
    seconds = {"bf16": float("inf")}  # not timed where emulated: hundreds of times slower
    for precision in ("fp32", "bf16") if reported else ("fp32",):
        best = float("inf")
        for _ in range(repeats + 1):  # the first is a warm-up
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            with autocast(precision, device):
                with torch.no_grad():
                    for t in range(decode_steps):
                        model(input_ids=ids_RT[:, t : t + 1])
                    model(input_ids=ids_RT)
                logits_RTV = model(input_ids=ids_RT).logits
            logits_RTV.float().logsumexp(-1).mean().backward()
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
        seconds[precision] = best
    for parameter, grad in kept_grads:
        parameter.grad = grad
    return StudentProbe(device.type, reported, seconds["fp32"], seconds["bf16"], rows, tokens)


def auto_precision(model: torch.nn.Module, device: torch.device) -> tuple[str, StudentProbe]:
    """``train.precision=auto`` for this student on ``device``: ``bf16`` where the student's
    own work is measured at least :data:`FASTER_AT` times faster in it (:func:`probe_student`),
    else ``fp32``; with the probe, for the run's log."""
    probe = probe_student(model, device)
    return ("bf16" if probe.faster else "fp32"), probe


def resolve_precision(name: str, device: torch.device) -> str:
    """``train.precision`` as run on ``device``: ``fp32`` or ``bf16``; ``bf16`` asked of
    hardware that does not compute it natively is refused, naming what was measured. ``auto``
    without a student to measure: bf16 where a linear layer is faster in it (a run decides
    ``auto`` on its student with :func:`auto_precision`)."""
    if name not in PRECISIONS:
        raise OPDError(f"Unknown train.precision={name!r}. Use one of: {', '.join(PRECISIONS)}.")
    if name == "fp32":
        return "fp32"
    probe = probe_bf16(device.type)
    if name == "auto":
        return "bf16" if probe.faster else "fp32"
    if not probe.reported:
        raise OPDError(
            f"train.precision=bf16, but this hardware does not compute bf16 natively "
            f"({probe.describe()}); mixed precision would be slower, not faster. Use "
            "train.precision=fp32, or train.precision=auto to use bf16 only where it is faster."
        )
    return "bf16"


@contextlib.contextmanager
def autocast(precision: str, device: torch.device) -> Iterator[None]:
    """Run the enclosed forward passes in bf16 when ``precision`` is ``bf16`` (weights stay
    in their own dtype; cast the outputs to fp32 before taking log-probabilities)."""
    if precision != "bf16":
        yield
        return
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
        yield
