"""Data-parallel training across processes: DDP through ``accelerate``, or FSDP2 by config.

Launch one process per device with ``torchrun --nproc_per_node N -m opd_core ...`` (or, on
GPUs, ``accelerate launch --multi_gpu --num_processes N -m opd_core ...``); a plain
``python -m opd_core`` is a single process and uses none of this. With N processes:

- every rank selects the same step prompts (the prompt source is seeded alike) and samples,
  grades and scores only its contiguous share of them (:meth:`Distributed.shard`);
- the loss is normalised by the step's loss tokens over *all* ranks and multiplied by N before
  ``backward``, so that the gradient all-ranks average equals the one-process gradient;
- ``distributed.strategy=ddp`` (default) wraps the student in ``DistributedDataParallel`` with
  :meth:`accelerate.Accelerator.prepare_model`; ``fsdp`` shards each decoder layer and the root
  with ``torch.distributed.fsdp.fully_shard`` (FSDP2), which runs on GPUs and on CPUs (gloo)
  alike (accelerate's own FSDP plugin only engages on GPUs);
- rank 0 alone writes metrics, checkpoints and the summary; the others wait for it.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any, TypeVar

import torch

from opd_core.config import DistributedConfig
from opd_core.errors import OPDError
from opd_core.reduction import combine_rank_metrics, plain

T = TypeVar("T")


def launched_world_size() -> int:
    """Number of processes the launcher (torchrun, accelerate launch, SLURM) started.

    torchrun and accelerate launch set ``WORLD_SIZE``; the tasks of a SLURM job submitted by
    submitit (``hydra/launcher=slurm``) see only ``SLURM_*`` variables, which submitit itself
    translates into torch.distributed's (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ...).
    """
    in_submitit_slurm_job = os.environ.get("SUBMITIT_EXECUTOR") == "slurm"
    if "WORLD_SIZE" not in os.environ and in_submitit_slurm_job:
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    return int(os.environ.get("WORLD_SIZE", "1"))


class Distributed:
    """Rank, world size and the few collective operations the loop needs.

    A single process gets the trivial implementation (rank 0 of 1, nothing wrapped); several
    processes share one ``accelerate.Accelerator``.
    """

    def __init__(self, config: DistributedConfig, device: torch.device) -> None:
        self.config = config
        self.accelerator: Any = None
        self.rank, self.world_size, self.device = 0, 1, device
        if launched_world_size() > 1:
            from accelerate import Accelerator

            self.accelerator = Accelerator(cpu=device.type == "cpu")
            self.rank = self.accelerator.process_index
            self.world_size = self.accelerator.num_processes
            self.device = self.accelerator.device

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the process that writes outputs."""
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        """Whether the student is sharded over ranks (FSDP with several processes)."""
        return self.enabled and self.config.strategy == "fsdp"

    @property
    def enabled(self) -> bool:
        """Whether more than one process takes part."""
        return self.world_size > 1

    # ------------------------------------------------------------------ data

    def check_divisible(self, count: int, what: str) -> None:
        """Fail unless ``count`` items split evenly over the ranks."""
        if count % self.world_size:
            raise OPDError(
                f"{what}={count} does not split evenly over {self.world_size} processes; "
                f"make it a multiple of {self.world_size}."
            )

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's contiguous share of ``items`` (whose length the ranks divide)."""
        per_rank = len(items) // self.world_size
        return list(items[self.rank * per_rank : (self.rank + 1) * per_rank])

    def sum(self, value: float) -> float:
        """``value`` added over all ranks."""
        if not self.enabled:
            return value
        total = torch.tensor([value], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(total)
        return float(total.item())

    def combine_metrics(self, metrics: Mapping[str, float]) -> dict[str, float]:
        """One set of step metrics from every rank's, each merged as its producer declared
        (:mod:`opd_core.reduction`)."""
        if not self.enabled:
            return plain(metrics)
        return combine_rank_metrics(self.gather(dict(metrics)))

    def gather(self, value: T) -> list[T]:
        """Every rank's ``value``, in rank order."""
        if not self.enabled:
            return [value]
        gathered: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(gathered, value)
        return gathered

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` on every rank."""
        if not self.enabled:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.enabled:
            self.accelerator.wait_for_everyone()

    # ------------------------------------------------------------------ model

    def wrap(self, model: Any) -> Any:
        """The student as the training forward/backward must call it.

        DDP returns a wrapper (the sampler keeps using the bare model, whose parameters it
        shares); FSDP shards ``model`` in place and returns it.
        """
        if not self.enabled:
            return model
        if self.config.strategy == "ddp":
            return self.accelerator.prepare_model(model)
        return shard_fsdp(model, self.device, self.world_size)

    def no_sync(self, model: Any, last_micro_batch: bool) -> Any:
        """Skip DDP's gradient all-reduce on all but the last micro-batch of a step."""
        if self.enabled and self.config.strategy == "ddp" and not last_micro_batch:
            return self.accelerator.no_sync(model)
        return nullcontext()

    def full_state_dict(self, model: Any) -> dict[str, Any] | None:
        """Every parameter of a sharded model, on rank 0's CPU (``None`` when not sharded).

        Called on every rank: gathering the shards is a collective operation.
        """
        if not self.sharded:
            return None
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
        )

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return dict(get_model_state_dict(model, options=options))

    def optimizer_state_dict(self, model: Any, optimizer: Any) -> dict[str, Any]:
        """The optimizer state a checkpoint keeps (unsharded; collective under FSDP)."""
        if not self.sharded:
            return dict(optimizer.state_dict())
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return dict(get_optimizer_state_dict(model, optimizer, options=options))

    def load_sharded(
        self,
        model: Any,
        optimizer: Any,
        model_state: dict[str, Any],
        optimizer_state: dict[str, Any],
    ) -> None:
        """Load full (unsharded) weights and optimizer state into a sharded model, every rank
        keeping its shard."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True)
        set_model_state_dict(model, model_state, options=options)
        set_optimizer_state_dict(model, optimizer, optimizer_state, options=options)

    def close(self) -> None:
        """Leave the process group (the launcher's processes then exit cleanly)."""
        if self.enabled and torch.distributed.is_initialized():
            self.accelerator.free_memory()  # its references to the DDP wrapper
            gc.collect()  # (a reducer freed after the group is destroyed can hang on exit)
            torch.distributed.destroy_process_group()


def shard_fsdp(model: Any, device: torch.device, world_size: int) -> Any:
    """Shard ``model`` in place with FSDP2: each no-split block (decoder layer), then the root."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (world_size,))
    block_names = set(getattr(model, "_no_split_modules", None) or [])
    blocks = [m for m in model.modules() if type(m).__name__ in block_names]
    if not blocks:
        raise OPDError(
            f"distributed.strategy=fsdp found no decoder layers to shard in "
            f"{type(model).__name__} (it lists no _no_split_modules); use strategy=ddp."
        )
    for block in blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


@contextmanager
def main_process_first(dist: Distributed) -> Iterator[None]:
    """Let rank 0 run a block (e.g. building cached files) before the other ranks do."""
    if not dist.is_main:
        dist.barrier()
    yield
    if dist.is_main:
        dist.barrier()
