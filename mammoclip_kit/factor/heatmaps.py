"""Heatmaps on a feature grid: FActOR's (the channels best aligned with an attribute) and the Grad-CAM baseline's.

The authors never released the heatmap step (the paper's §2.3 describes it): the kit weights the top-k channels by
their alignment with the attribute and sums their maps (:func:`factor_heatmaps`). The baseline is Grad-CAM of the
zero-shot score on the same last feature map (:func:`gradcam_heatmaps`). Both give ``(N, h, w)`` heatmaps on the grid
of the maps they read; :mod:`mammoclip_kit.factor.localization` turns them into boxes and scores them.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def factor_heatmaps(alignment: torch.Tensor, maps: torch.Tensor, top_k: int = 20) -> torch.Tensor:
    """Weighted sum of the ``top_k`` best-aligned channels' maps → ``(N, h, w)``.

    ``alignment`` ``(N, C)`` is one attribute's column of :func:`~mammoclip_kit.factor.mapper.channel_alignment`;
    ``maps`` ``(N, C, h, w)``. The weights are the top-k alignments clipped at 0 and normalised to sum 1 (equal
    weights when all are ≤ 0).
    """
    if alignment.dim() != 2 or maps.dim() != 4 or alignment.shape != maps.shape[:2]:
        raise ValueError(f"factor_heatmaps: alignment (N, C) must match maps (N, C, h, w); got "
                         f"{tuple(alignment.shape)} and {tuple(maps.shape)}")
    k = max(1, min(int(top_k), maps.shape[1]))
    values, index = alignment.float().topk(k, dim=1)
    weights = values.clamp_min(0)
    total = weights.sum(1, keepdim=True)
    weights = torch.where(total > 0, weights / total.clamp_min(1e-12), torch.full_like(weights, 1.0 / k))
    chosen = torch.gather(maps.float(), 1, index[:, :, None, None].expand(-1, -1, *maps.shape[2:]))
    return (chosen * weights[:, :, None, None]).sum(1)


def gradcam_heatmaps(model: Any, maps: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor | None = None,
                     batch_size: int = 32, dense: torch.Tensor | None = None) -> torch.Tensor:
    """Grad-CAM of the zero-shot score ``cos(e, positive) − cos(e, negative)`` w.r.t. the last feature map → ``(N, h, w)``.

    ``e`` is the model's image embedding computed from the cached map (global average pool, as the EfficientNet head in
    eval mode, then ``model.image_projection``). Channel weights are the spatial means of the gradient; the map is
    ``ReLU(Σ_c α_c F_c)``. With an average-pooled linear head this equals CAM, the classic baseline. With ``dense``
    (the same images' shift-and-stitched maps, see :func:`mammoclip_kit.factor.feature_maps`) the weights from
    ``maps`` are applied to ``dense``, so the heatmap has its finer grid.
    """
    if dense is not None and (len(dense) != len(maps) or dense.shape[1] != maps.shape[1]):
        raise ValueError(f"gradcam_heatmaps: dense maps {tuple(dense.shape)} do not match maps {tuple(maps.shape)} in "
                         "images and channels")
    device = next(model.image_projection.parameters()).device
    pos = F.normalize(positive.float().to(device), dim=-1)
    neg = F.normalize(negative.float().to(device), dim=-1) if negative is not None else None
    target = maps if dense is None else dense
    out = []
    for start in range(0, len(maps), batch_size):
        chunk = maps[start:start + batch_size].float().to(device).requires_grad_(True)
        emb = F.normalize(model.image_projection(chunk.mean(dim=(2, 3))), dim=-1)
        score = emb @ pos - (emb @ neg if neg is not None else 0.0)
        (grad,) = torch.autograd.grad(score.sum(), chunk)
        alpha = grad.mean(dim=(2, 3), keepdim=True)
        weighted = alpha * target[start:start + batch_size].float().to(device)
        out.append(torch.relu(weighted.sum(1)).detach().cpu())
    return torch.cat(out) if out else torch.zeros(0, *target.shape[2:])
