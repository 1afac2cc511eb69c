"""Learning-rate schedules stepped per iteration (docs/reference-notes.md §7.8).

``warmup_cos2``: the reference's ``LinearWarmupCosineAnnealingLR`` — multiplier ``step / warmup`` during warm-up, then
``cos²(progress · π/2)`` floored at 0, where ``progress = (step − warmup) / (total − warmup)``. ``cosine``: linear
warm-up then the usual half cosine ``½ (1 + cos(π · progress))``. ``constant``: warm-up then 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = ["SCHEDULES", "warmup_cos2", "warmup_cosine", "warmup_constant", "create_scheduler"]


def warmup_cos2(step: int, warmup: int, total: int) -> float:
    """The paper's multiplier at iteration ``step`` (0-based)."""
    if step < warmup:
        return step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, math.cos(progress * math.pi / 2) ** 2) if progress <= 1 else 0.0


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """Linear warm-up then half-cosine decay to 0."""
    if step < warmup:
        return step / max(1, warmup)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_constant(step: int, warmup: int, total: int) -> float:
    """Linear warm-up then a constant rate."""
    return step / max(1, warmup) if step < warmup else 1.0


SCHEDULES: dict[str, Callable[[int, int, int], float]] = {  # name -> multiplier(step, warmup, total)
    "warmup_cos2": warmup_cos2,
    "cosine": warmup_cosine,
    "constant": warmup_constant,
}


def create_scheduler(optimizer: torch.optim.Optimizer, name: str, warmup_steps: int,
                     total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` applying schedule ``name`` over ``total_steps`` iterations (call ``.step()`` every iteration)."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}: expected one of {sorted(SCHEDULES)}")
    if total_steps < 1 or not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"bad schedule length: warmup_steps={warmup_steps}, total_steps={total_steps}")
    fn = SCHEDULES[name]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: fn(step, warmup_steps, total_steps))
