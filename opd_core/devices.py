"""Where a run computes: the device a config names, and a CUDA side stream for background work."""

from __future__ import annotations

from collections.abc import Callable

import torch

from opd_core.errors import OPDError
from opd_core.types import RolloutBatch


def pick_device(name: str) -> torch.device:
    """``auto`` is the first CUDA device when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise OPDError(f"Invalid device={name!r}: use auto, cpu, cuda or cuda:N.") from err


def on_side_stream(
    sample: Callable[[], Callable[[], RolloutBatch]], device: torch.device
) -> Callable[[], Callable[[], RolloutBatch]]:
    """``sample`` (a prefetcher's background function), run on a CUDA stream of its own when
    ``device`` is a GPU, so that its kernels can run beside training's instead of queueing
    behind them on one stream. The stream first waits for the work queued so far on the
    calling thread's stream (the weight copy); ``sample`` ends with its stream drained. On
    other devices ``sample`` itself."""
    if device.type != "cuda":
        return sample
    ready = torch.cuda.Event()
    ready.record(torch.cuda.current_stream(device))
    stream = torch.cuda.Stream(device)

    def run() -> Callable[[], RolloutBatch]:
        with torch.cuda.stream(stream):
            stream.wait_event(ready)
            finish = sample()
        stream.synchronize()
        return finish

    return run
