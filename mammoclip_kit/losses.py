"""Contrastive losses of Mammo-CLIP: plain CLIP and multi-view supervision (MVS, docs/reference-notes.md §5).

Both losses receive L2-normalised embeddings and the (already exponentiated) logit scale, never the model. Under
``torch.distributed`` they all-gather the embeddings with :func:`gather_with_grad`, whose backward returns to each rank
the slice of the gradient summed over all ranks. With ``local_loss=True`` (the reference's choice) each rank contrasts
its own rows against the gathered columns with labels ``arange(b) + rank * b``; with ``local_loss=False`` every rank
computes the full ``N·b × N·b`` loss. Either way, ``N`` ranks × batch ``b`` give the same parameter gradients as one
process with batch ``N·b`` (DDP averages the ranks' gradients).

The MVS loss with images ``I1, I2`` (two views of a breast) and texts ``T1, T2`` (two report sentences), scale ``s``::

    L_i2t = ¼ [CE(s I1 T1ᵀ) + CE(s I2 T1ᵀ) + CE(s I1 T2ᵀ) + CE(s I2 T2ᵀ)]      (optionally label-smoothed)
    L_t2i = the same with T·Iᵀ
    L_i2i = ½ [CE(s I1 I2ᵀ) + CE(s I2 I1ᵀ)]
    L_t2t = ½ [CE(s T2 T1ᵀ) + CE(s T1 T2ᵀ)]
    loss  = (L_i2t + L_t2i) / 2 + 1.0 · L_i2i + 0.5 · L_t2t
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

__all__ = ["gather_with_grad", "distributed_info", "ClipLoss", "MultiViewClipLoss", "LossConfig", "create_loss"]


def distributed_info() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` when none is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward is the rank's slice of the gradient summed over ranks."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        world = dist.get_world_size()
        ctx.rank, ctx.rows = dist.get_rank(), tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(parts, tensor.contiguous())
        for rank, part in enumerate(parts):
            if part.shape != tensor.shape:  # pragma: no cover - all_gather itself requires equal shapes
                raise RuntimeError(f"rank {rank} sent shape {tuple(part.shape)}, expected {tuple(tensor.shape)}")
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from every rank (rank order) keeping the autograd graph.

    Without an initialised process group (or with one rank) the tensor is returned unchanged. All ranks must pass the
    same shape (use ``drop_last=True`` loaders).
    """
    rank, world = distributed_info()
    if world == 1:
        return tensor
    return _GatherWithGrad.apply(tensor)


def _targets(rows: int, offset: int, device: torch.device) -> torch.Tensor:
    return torch.arange(rows, device=device) + offset


class _ContrastiveBase(nn.Module):
    """Shared gather/label logic: rows (local or all) against all columns."""

    def __init__(self, local_loss: bool = True, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.local_loss = local_loss
        self.label_smoothing = label_smoothing

    def _gather(self, *tensors: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """Return (row tensors, column tensors, targets) for the current process-group setting."""
        rank, world = distributed_info()
        columns = [gather_with_grad(t) for t in tensors]
        b = tensors[0].shape[0]
        if self.local_loss or world == 1:
            return list(tensors), columns, _targets(b, rank * b, tensors[0].device)
        return columns, columns, _targets(b * world, 0, tensors[0].device)

    @staticmethod
    def _ce(rows: torch.Tensor, cols: torch.Tensor, scale: torch.Tensor, target: torch.Tensor,
            smoothing: float = 0.0) -> torch.Tensor:
        logits = scale * rows @ cols.t()
        if logits.dtype in (torch.float16, torch.bfloat16):  # CE in fp32 under autocast
            logits = logits.float()
        return F.cross_entropy(logits, target, label_smoothing=smoothing)


class ClipLoss(_ContrastiveBase):
    """Plain symmetric CLIP InfoNCE: ``(CE(s I Tᵀ) + CE(s T Iᵀ)) / 2`` (the paper's "CLIP" baseline)."""

    def forward(self, image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> dict[str, torch.Tensor]:
        """``image``, ``text``: (b, d) normalised embeddings; ``logit_scale``: ``exp`` of the learnable log-scale."""
        (img, txt), (img_all, txt_all), target = self._gather(image, text)
        ls = self.label_smoothing
        i2t = self._ce(img, txt_all, logit_scale, target, ls)
        t2i = self._ce(txt, img_all, logit_scale, target, ls)
        return {"i2t": i2t, "t2i": t2i, "loss": (i2t + t2i) / 2}


class MultiViewClipLoss(_ContrastiveBase):
    """The MVS loss of docs/reference-notes.md §5.2 (see the module docstring); returns every term and the
    weighted total."""

    def __init__(self, local_loss: bool = True, label_smoothing: float = 0.0, i2i_weight: float = 1.0,
                 t2t_weight: float = 0.5) -> None:
        super().__init__(local_loss=local_loss, label_smoothing=label_smoothing)
        self.i2i_weight = i2i_weight
        self.t2t_weight = t2t_weight

    def forward(self, image1: torch.Tensor, image2: torch.Tensor, text1: torch.Tensor, text2: torch.Tensor,
                logit_scale: torch.Tensor) -> dict[str, torch.Tensor]:
        """All inputs (b, d) normalised; ``image1/2`` two views of each breast, ``text1/2`` two of its texts."""
        (i1, i2, t1, t2), (i1a, i2a, t1a, t2a), y = self._gather(image1, image2, text1, text2)
        s, ls = logit_scale, self.label_smoothing
        i2t = (self._ce(i1, t1a, s, y, ls) + self._ce(i2, t1a, s, y, ls)
               + self._ce(i1, t2a, s, y, ls) + self._ce(i2, t2a, s, y, ls)) / 4
        t2i = (self._ce(t1, i1a, s, y, ls) + self._ce(t1, i2a, s, y, ls)
               + self._ce(t2, i1a, s, y, ls) + self._ce(t2, i2a, s, y, ls)) / 4
        i2i = (self._ce(i1, i2a, s, y) + self._ce(i2, i1a, s, y)) / 2
        t2t = (self._ce(t2, t1a, s, y) + self._ce(t1, t2a, s, y)) / 2
        total = (i2t + t2i) / 2 + self.i2i_weight * i2i + self.t2t_weight * t2t
        return {"i2t": i2t, "t2i": t2i, "i2i": i2i, "t2t": t2t, "loss": total}


@dataclass
class LossConfig:
    """Which contrastive loss to train with."""

    name: str = "mvs"              # "mvs" (Mammo-CLIP) | "clip" (plain CLIP baseline on one view and one text)
    local_loss: bool = True        # rows of this rank vs gathered columns (the reference) or all vs all
    label_smoothing: float = 0.0   # on the image–text terms only
    i2i_weight: float = 1.0        # image–image (ICL) weight
    t2t_weight: float = 0.5        # text–text (TCL) weight


def create_loss(config: LossConfig | dict | None = None) -> ClipLoss | MultiViewClipLoss:
    """Build the loss named by ``config.name`` (``"mvs"`` or ``"clip"``)."""
    cfg = config if isinstance(config, LossConfig) else LossConfig(**(config or {}))
    if cfg.name == "mvs":
        return MultiViewClipLoss(cfg.local_loss, cfg.label_smoothing, cfg.i2i_weight, cfg.t2t_weight)
    if cfg.name == "clip":
        return ClipLoss(cfg.local_loss, cfg.label_smoothing)
    raise ValueError(f"unknown loss name {cfg.name!r}: expected 'mvs' or 'clip'")
