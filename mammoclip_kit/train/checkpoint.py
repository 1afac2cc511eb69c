"""Atomic training-state checkpoints with every RNG state, for exact resume.

The training state (``train/last.pt``) holds the model, optimizer, scheduler and grad-scaler state dicts, the Python /
NumPy / torch (CPU and CUDA) RNG states, the epoch, the optimizer step and the batch position inside the epoch. It is
written to a temporary file and renamed, so a crash never leaves a half-written checkpoint. The model that later
notebooks load is saved separately in the kit format (``model.safetensors`` + ``config.json``).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["rng_state", "set_rng_state", "save_state", "load_state", "atomic_torch_save"]


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
    tmp = path.with_name(path.name + ".tmp")
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
    except Exception as exc:  # noqa: BLE001 - re-raised with the file name
        raise RuntimeError(f"{path}: cannot read the training state ({exc})") from exc
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler") is not None:
        scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    return {k: state[k] for k in ("epoch", "step", "batch_in_epoch", "extra")}
