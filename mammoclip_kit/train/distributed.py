"""torchrun / DistributedDataParallel helpers: gloo on CPU, NCCL on CUDA.

``torchrun --nproc_per_node N -m mammoclip_kit.pretrain ...`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the
rendezvous variables (multi-node works through torchrun's usual ``--nnodes`` / ``--rdzv-*`` arguments);
:func:`init_distributed` reads them and is a no-op for a plain single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "init_distributed", "cleanup", "all_reduce_mean", "barrier", "in_torchrun"]


@dataclass
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def in_torchrun() -> bool:
    """True when launched by torchrun (or any launcher that sets ``WORLD_SIZE`` and ``RANK``)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def init_distributed(device: torch.device | str | None = None, backend: str | None = None) -> DistInfo:
    """Initialise the default process group from torchrun's environment (if any) and pick this rank's device.

    ``backend`` defaults to ``nccl`` when the device is CUDA and ``gloo`` otherwise. Without torchrun the process
    group is left alone and ``device`` (or CPU) is returned.
    """
    device = torch.device(device) if device is not None else None
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", rank))
    elif in_torchrun() and int(os.environ["WORLD_SIZE"]) > 1:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", 0))
        use_cuda = (device is None or device.type == "cuda") and torch.cuda.is_available()
        backend = backend or ("nccl" if use_cuda else "gloo")
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
    else:
        return DistInfo(device=device or torch.device("cpu"))
    if device is None or device.type == "cuda":
        device = torch.device("cuda", local) if torch.cuda.is_available() else torch.device("cpu")
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=device)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(value: float, device: torch.device | None = None) -> float:
    """Average a Python number over ranks (identity without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return float(value)
    tensor = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return float(tensor.item()) / dist.get_world_size()


def cleanup() -> None:
    """Destroy the process group if this process created one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
