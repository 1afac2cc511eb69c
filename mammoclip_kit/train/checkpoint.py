"""Atomic training-state checkpoints with every RNG state, for exact resume.

The training state (``train/last.pt``) holds the model, optimizer, scheduler and grad-scaler state dicts, the Python /
NumPy / torch (CPU and CUDA) RNG states, the epoch, the optimizer step and the batch position inside the epoch. It is
written to a temporary file and renamed, so a crash never leaves a half-written checkpoint. The model that later
notebooks load is saved separately in the kit format (``model.safetensors`` + ``config.json``).
"""

from __future__ import annotations

import contextlib
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mammoclip_kit.errors import UserError

__all__ = ["rng_state", "set_rng_state", "save_state", "load_state", "atomic_torch_save", "OutputLocked",
           "lock_output", "config_changes", "check_resume_config"]

#: Config fields that may change between an interrupted run and its resume (speed and logging, not the optimisation).
RESUME_FREE_FIELDS = frozenset({"num_workers", "cache_images", "tensorboard", "log_every_steps", "save_every_steps",
                                "monitor_every_epochs", "monitor_on_improve", "monitor_max_images", "zero_shot_task",
                                "recall_k", "compile"})


class OutputLocked(UserError):
    """Another training run holds the output folder."""


@contextlib.contextmanager
def lock_output(out_dir: str | Path):
    """Hold an exclusive lock on ``out_dir/train/run.lock`` for one training run; a second run into the same folder
    fails at once with :class:`OutputLocked` (instead of both writing the same temporary files and log rows).
    No-op where ``fcntl`` is missing (Windows)."""
    folder = Path(out_dir) / "train"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(folder / "run.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise OutputLocked(f"{out_dir}: another training run ({holder}) is writing to this folder; wait for it "
                               "or choose another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def config_changes(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``name: old → new`` for every config field (outside :data:`RESUME_FREE_FIELDS`) that differs."""
    names = sorted((set(recorded) | set(current)) - RESUME_FREE_FIELDS)
    return [f"{n}: {recorded.get(n)!r} → {current.get(n)!r}" for n in names if recorded.get(n) != current.get(n)]


def check_resume_config(recorded: dict[str, Any] | None, current: dict[str, Any], state_path: str | Path,
                        allow_change: bool = False) -> list[str]:
    """Refuse to resume ``state_path`` with a config that differs from the one it was trained with (``ValueError``
    naming the fields) unless ``allow_change``; returns the changes (empty when the state records no config)."""
    if recorded is None:
        return []
    changes = config_changes(recorded, current)
    if changes and not allow_change:
        shown = "; ".join(changes[:4]) + (f"; … ({len(changes)} in all)" if len(changes) > 4 else "")
        raise ValueError(f"{state_path}: the interrupted run used another config ({shown}); resume with the same "
                         "settings, pass --allow-config-change to continue anyway, or --no-resume to start over")
    return changes


def rng_state() -> dict[str, Any]:
    """Snapshot of the Python, NumPy and torch RNGs (every CUDA device when CUDA is initialised)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore a snapshot taken by :func:`rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to ``path.tmp`` then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path


def save_state(path: str | Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
               scaler: Any, epoch: int, step: int, batch_in_epoch: int, extra: dict[str, Any] | None = None) -> Path:
    """Write the full training state atomically (see module docstring)."""
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng_state(),
        "epoch": int(epoch),
        "step": int(step),
        "batch_in_epoch": int(batch_in_epoch),
        "extra": extra or {},
    }
    return atomic_torch_save(state, path)


def load_state(path: str | Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
               scaler: Any, map_location: Any = "cpu") -> dict[str, Any]:
    """Restore everything :func:`save_state` wrote; returns the counters and ``extra``."""
    path = Path(path)
    try:
        # Our own file; RNG states contain numpy arrays, which weights_only=True rejects.
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file name, as the user error it is
        raise UserError(f"{path}: cannot read the training state ({' '.join(str(exc).split())[:200]}); delete it to "
                        "start the run over, or retrain") from None
    if not isinstance(state, dict) or not {"model", "optimizer", "rng", "epoch", "step"} <= set(state):
        raise UserError(f"{path}: not a training state written by the kit (keys missing); delete it to start over")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler") is not None:
        scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    return {k: state[k] for k in ("epoch", "step", "batch_in_epoch", "extra")}
