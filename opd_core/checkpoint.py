"""Checkpoints in Hugging Face format, written atomically, and resuming from them.

Layout of a run's output folder::

    checkpoints/step_000020/model/          save_pretrained (full model or peft adapter) + tokenizer
    checkpoints/step_000020/trainer_state.pt optimizer, scheduler, RNG and component states
    checkpoints/latest                       name of the newest complete checkpoint
    checkpoints/best                         name of the best one (``checkpoint.best_metric``)

A checkpoint directory appears only when complete (it is built under a temporary name and
renamed), and ``latest`` is rewritten atomically afterwards, so a crash at any moment leaves the
previous checkpoint intact. So does a write that fails (a full disk, a folder that became
read-only): :class:`CheckpointNotWritten` says which checkpoint is still there. Rotation keeps the
last ``keep`` checkpoints and the best one.
"""

from __future__ import annotations

import errno
import json
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from opd_core.errors import OPDError
from opd_core.io import write_dir_atomic, write_text_atomic

CHECKPOINT_DIR = "checkpoints"
_STEP_DIR = re.compile(r"^step_(\d+)$")


class CheckpointNotWritten(OPDError):
    """Writing a checkpoint failed (disk full, folder not writable); the previous one is intact."""


@dataclass(frozen=True)
class TrainerState:
    """Everything besides the weights that an exact resume needs."""

    step: int
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, Any]
    components: dict[str, Any]


def capture_rng() -> dict[str, Any]:
    """The state of every random generator the loop uses."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Restore generators captured by :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_root(output_dir: Path) -> Path:
    return output_dir / CHECKPOINT_DIR


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    """Where the checkpoint of ``step`` lives."""
    return checkpoint_root(output_dir) / f"step_{step:06d}"


def save_checkpoint(
    output_dir: Path,
    model: Any,
    tokenizer: Any,
    state: TrainerState,
    keep: int,
    model_state: dict[str, Any] | None = None,
    best_step: int | None = None,
) -> Path:
    """Write checkpoint ``step_<state.step>`` atomically, point ``latest`` at it (and ``best`` at
    ``step_<best_step>`` when given), prune all but the last ``keep`` and the best one.

    ``model_state`` replaces the model's own state dict (the gathered weights of a sharded model).
    A write that fails raises :class:`CheckpointNotWritten`, leaving the previous checkpoint as it
    was.
    """
    root = checkpoint_root(output_dir)
    final = checkpoint_dir(output_dir, state.step)
    best = checkpoint_dir(output_dir, best_step) if best_step is not None else None

    def fill(tmp: Path) -> None:
        gathered = {} if model_state is None else {"state_dict": model_state}
        model.save_pretrained(tmp / "model", **gathered)
        tokenizer.save_pretrained(tmp / "model")
        torch.save(state.__dict__, tmp / "trainer_state.pt")

    previous = latest_checkpoint(output_dir)
    try:
        write_dir_atomic(final, fill)
        if best is not None:
            write_text_atomic(root / "best", best.name + "\n")
        write_text_atomic(root / "latest", final.name + "\n")
    except Exception as err:
        if not is_write_error(err):
            raise
        raise not_written(final, previous, err) from err
    _prune(root, keep=keep, protect={final, *([best] if best is not None else [])})
    return final


_WRITE_HINTS = (
    "os error",
    "no space",
    "read-only",
    "permission denied",
    "write",
    "inline_container",
)


def is_write_error(err: BaseException) -> bool:
    """Whether ``err`` is the file system refusing a write: an ``OSError``, or the error a
    serializer raises over one (torch's ``RuntimeError`` from its zip writer, safetensors'
    ``SafetensorError: ... No space left on device (os error 28)``)."""
    if isinstance(err, OSError):
        return True
    if isinstance(err, RuntimeError | ValueError) or type(err).__name__ == "SafetensorError":
        return any(hint in str(err).lower() for hint in _WRITE_HINTS)
    return False


def not_written(final: Path, previous: Path | None, err: BaseException) -> CheckpointNotWritten:
    """The sentence for a checkpoint write that failed: why, and what is still there. A
    serializer's error that hides the cause (torch's ``unexpected pos``) counts as a full disk
    when less space is free than the previous checkpoint takes."""
    code = getattr(err, "errno", None)
    text = str(err).lower()
    free = shutil.disk_usage(final.parent).free if final.parent.exists() else 0
    needed = folder_bytes(previous) if previous is not None else 0
    if code == errno.ENOSPC or "no space" in text or "os error 28" in text:
        why, fix = "the disk is full", "free space"
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS) or "read-only" in text:
        reason = getattr(err, "strerror", None) or "read-only"
        why, fix = f"{final.parent} is not writable: {reason}", "make the run folder writable"
    elif free < needed:
        why = f"the disk is full: {free / 1e6:.1f} MB free, a checkpoint takes {needed / 1e6:.1f}"
        fix = "free space"
    else:
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        why = f"{type(err).__name__}: {first}; {free / 1e6:.1f} MB free on its disk"
        fix = "check the disk"
    kept = (
        f"the previous checkpoint {previous} is intact and loadable"
        if previous is not None
        else "no earlier checkpoint exists"
    )
    return CheckpointNotWritten(
        f"Could not write checkpoint {final.name} ({why}); {kept}; {fix}, then continue with "
        "resume=true."
    )


def folder_bytes(folder: Path) -> int:
    """The bytes of the files under ``folder``."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _prune(root: Path, keep: int, protect: set[Path]) -> None:
    steps = sorted(p for p in root.iterdir() if _STEP_DIR.match(p.name))
    for old in steps[:-keep]:
        if old not in protect:
            shutil.rmtree(old, ignore_errors=True)


def remove_partial_checkpoints(output_dir: Path) -> list[Path]:
    """Delete what interrupted checkpoint writes left behind (``.step_*.tmp``, ``.step_*.old``,
    ``.latest.*.tmp``); return what was removed. Only for a run folder no process writes to."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    leftovers = [
        p for pattern in (".step_*.tmp", ".step_*.old", ".latest.*.tmp") for p in root.glob(pattern)
    ]
    for path in leftovers:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return leftovers


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run folder, or ``None``."""
    root = checkpoint_root(output_dir)
    pointer = root / "latest"
    if pointer.exists():
        candidate = root / pointer.read_text(encoding="utf-8").strip()
        if (candidate / "trainer_state.pt").exists():
            return candidate
    complete = (
        sorted(
            p
            for p in root.glob("step_*")
            if _STEP_DIR.match(p.name) and (p / "trainer_state.pt").exists()
        )
        if root.exists()
        else []
    )
    return complete[-1] if complete else None


def best_checkpoint(output_dir: Path) -> Path | None:
    """The checkpoint ``checkpoints/best`` names (``checkpoint.best_metric``), or ``None``."""
    pointer = checkpoint_root(output_dir) / "best"
    if not pointer.exists():
        return None
    candidate = checkpoint_root(output_dir) / pointer.read_text(encoding="utf-8").strip()
    return candidate if (candidate / "trainer_state.pt").exists() else None


def load_trainer_state(checkpoint: Path) -> TrainerState:
    """Read a checkpoint's trainer state."""
    try:
        raw = torch.load(checkpoint / "trainer_state.pt", weights_only=False)
        return TrainerState(**raw)
    except Exception as err:
        raise OPDError(
            f"Checkpoint {checkpoint} is unreadable ({_first_line(err)}); resume from an "
            "earlier one by writing its name into checkpoints/latest, or start a new run."
        ) from err


def rank_entry(saved: dict[str, Any], key: str, rank: int, world_size: int) -> Any:
    """This rank's entry of a per-rank state (``<key>_by_rank``) when the run has as many
    processes as saved it, else the shared one (``<key>``)."""
    by_rank = saved.get(f"{key}_by_rank")
    if world_size > 1 and by_rank and len(by_rank) == world_size:
        return by_rank[rank]
    return saved.get(key, {})


def check_state_layout(checkpoint: Path, saved: str, sharded: bool) -> None:
    """FSDP keeps optimizer state by parameter name, DDP and one process by index: a checkpoint
    resumes only the way it was written."""
    current = "sharded" if sharded else "full"
    if saved != current:
        written = "distributed=fsdp" if saved == "sharded" else "distributed=ddp or one process"
        raise OPDError(
            f"Checkpoint {checkpoint} was written with {written}; resume it the same way."
        )


def weight_shards(folder: Path) -> list[str]:
    """The safetensors files of a ``save_pretrained`` folder (one, or those its index lists)."""
    index = folder / "model.safetensors.index.json"
    if index.exists():
        return sorted(set(json.loads(index.read_text())["weight_map"].values()))
    return ["model.safetensors"]


def read_model_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    """Every weight of a checkpoint's full model, by name (for loading into a sharded model)."""
    folder = checkpoint / "model"
    if (folder / "adapter_model.safetensors").exists():
        raise OPDError(
            f"Checkpoint {checkpoint} holds a LoRA adapter, which distributed=fsdp cannot "
            "resume; train LoRA students with distributed=ddp (their trainable state is small)."
        )
    weights: dict[str, torch.Tensor] = {}
    for shard in weight_shards(folder):
        weights.update(read_shard(checkpoint, folder / shard))
    return weights


def read_shard(checkpoint: Path, path: Path) -> dict[str, torch.Tensor]:
    """One safetensors file of a checkpoint; a missing, empty or damaged one is named."""
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except Exception as err:  # safetensors raises its own error type for a damaged header
        raise OPDError(
            f"Checkpoint {checkpoint} is unreadable ({path.name}: {_first_line(err)}); resume "
            "from an earlier one by writing its name into checkpoints/latest, or start a new run."
        ) from err


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def load_model_weights(model: Any, checkpoint: Path) -> None:
    """Load a checkpoint's weights (full model or peft adapter) into ``model`` in place."""
    folder = checkpoint / "model"
    if (folder / "adapter_model.safetensors").exists():
        from peft import set_peft_model_state_dict

        adapter = read_shard(checkpoint, folder / "adapter_model.safetensors")
        set_peft_model_state_dict(model, adapter)
        return
    shards = weight_shards(folder)
    expected = set(model.state_dict())
    loaded: set[str] = set()
    unexpected: list[str] = []
    for shard in shards:  # one shard in memory at a time
        try:
            result = model.load_state_dict(read_shard(checkpoint, folder / shard), strict=False)
        except RuntimeError as err:  # shape mismatch: another model's weights
            raise OPDError(
                f"Checkpoint {checkpoint} does not match the student model "
                f"({str(err).splitlines()[-1].strip()}); resume with the same "
                "student config the run started with."
            ) from err
        unexpected += result.unexpected_keys
        loaded |= expected - set(result.missing_keys)
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    missing = [k for k in expected - loaded if k not in tied and "lm_head" not in k]
    if missing or unexpected:
        raise OPDError(
            f"Checkpoint {checkpoint} does not match the student model "
            f"(missing {sorted(missing)[:3]}, unexpected {unexpected[:3]}); resume "
            "with the same student config the run started with."
        )
