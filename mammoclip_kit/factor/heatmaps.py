"""Heatmaps on a feature grid: FActOR's (the channels best aligned with an attribute) and the Grad-CAM baseline's.

The authors never released the heatmap step (the paper's §2.3 describes it): the kit weights the top-k channels by
their alignment with the attribute and sums their maps (:func:`factor_heatmaps`). The baseline is Grad-CAM of the
zero-shot score on the same last feature map (:func:`gradcam_heatmaps`). Both give ``(N, h, w)`` heatmaps on the grid
of the maps they read; :mod:`mammoclip_kit.factor.localization` turns them into boxes and scores them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


def channel_contrast(alignment: torch.Tensor, labels: Any) -> torch.Tensor:
    """One channel weighting per attribute, from training images: each channel's mean alignment on the images with
    the attribute minus its mean on the images without it → ``(C,)``.

    ``alignment`` ``(N, C)`` is one attribute's column of :func:`~mammoclip_kit.factor.mapper.channel_alignment` on
    training images, ``labels`` ``(N,)`` their 0/1 image-level labels (no boxes). The paper weights each image's own
    best-aligned channels; a channel that the mapper aligns with "mass" on *every* image (a texture or density
    channel) then dominates. The contrast keeps the channels whose alignment rises when the finding is present — the
    kit's documented variant (``channel_weights: contrast``), chosen on validation images. Without images lacking the
    attribute the weights are the positives' mean alignment; without any positive they are 0 (equal weights in
    :func:`factor_heatmaps`).
    """
    y = torch.as_tensor(np.asarray(labels, dtype=np.float32)).reshape(-1) > 0
    if alignment.dim() != 2 or len(y) != len(alignment):
        raise ValueError(f"channel_contrast: alignment must be (N, C) with N = {len(y)} labels, got "
                         f"{tuple(alignment.shape)}")
    alignment = alignment.float()
    if not bool(y.any()):
        return torch.zeros(alignment.shape[1])
    if bool(y.all()):
        return alignment[y].mean(0)
    return alignment[y].mean(0) - alignment[~y].mean(0)


def peak_contrast(maps: torch.Tensor, labels: Any, masks: torch.Tensor | None = None) -> torch.Tensor:
    """A channel weighting from image-level labels alone, with no text: how much higher a channel's peak is on the
    images with the finding than on those without it → ``(C,)``, Welch's t statistic of the per-image spatial maximum.

    ``maps`` ``(N, C, h, w)`` are training images' feature maps, ``labels`` ``(N,)`` their 0/1 labels; ``masks``
    (``(N, h, w)`` booleans, optional) restricts the maximum to cells inside the breast. A lesion is local, so a channel
    that answers it raises its *peak*, while its mean over the image barely moves. This is not FActOR (no attribute
    embedding, no mapper): notebook 09 shows it beside FActOR as the label-only reference, i.e. what a channel choice
    without the text can reach on the same map. Without positives or negatives the weights are 0.
    """
    y = torch.as_tensor(np.asarray(labels, dtype=np.float32)).reshape(-1) > 0
    if maps.dim() != 4 or len(y) != len(maps):
        raise ValueError(f"peak_contrast: maps must be (N, C, h, w) with N = {len(y)} labels, got {tuple(maps.shape)}")
    values = maps.float()
    if masks is not None:
        values = values.masked_fill(~torch.as_tensor(masks, dtype=torch.bool)[:, None], float("-inf"))
    peaks = values.flatten(2).amax(2)
    if not bool(y.any()) or bool(y.all()):
        return torch.zeros(maps.shape[1])
    pos, neg = peaks[y], peaks[~y]
    spread = pos.var(0, unbiased=len(pos) > 1) / len(pos) + neg.var(0, unbiased=len(neg) > 1) / len(neg)
    return (pos.mean(0) - neg.mean(0)) / spread.clamp_min(1e-12).sqrt()


def factor_heatmaps(alignment: torch.Tensor, maps: torch.Tensor, top_k: int = 20) -> torch.Tensor:
    """Weighted sum of the ``top_k`` best-aligned channels' maps → ``(N, h, w)``.

    ``alignment`` ``(N, C)`` is one attribute's column of :func:`~mammoclip_kit.factor.mapper.channel_alignment`, or
    ``(C,)`` one weighting for every image (e.g. :func:`channel_contrast`); ``maps`` ``(N, C, h, w)``. The weights are
    the top-k alignments clipped at 0 and normalised to sum 1 (equal weights when all are ≤ 0).
    """
    if alignment.dim() == 1 and maps.dim() == 4:
        alignment = alignment[None].expand(len(maps), -1)
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
                     batch_size: int = 32, dense: torch.Tensor | None = None,
                     head: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Grad-CAM of the zero-shot score ``cos(e, positive) − cos(e, negative)`` w.r.t. the last feature map → ``(N, h, w)``.

    ``e`` is the model's image embedding computed from the cached map (global average pool, as the EfficientNet head in
    eval mode, then ``model.image_projection``). Channel weights are the spatial means of the gradient; the map is
    ``ReLU(Σ_c α_c F_c)``. With an average-pooled linear head this equals CAM, the classic baseline. With ``dense``
    (the same images' shift-and-stitched maps, see :func:`mammoclip_kit.factor.feature_maps`) the weights from
    ``maps`` are applied to ``dense``, so the heatmap has its finer grid. ``head`` maps a batch of ``maps`` to the
    pooled image features (default: the spatial mean, for the last map); for an intermediate map pass the rest of the
    tower (e.g. :func:`gradcam_head`), so that Grad-CAM reads the same map as FActOR.
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
        pooled = chunk.mean(dim=(2, 3)) if head is None else head(chunk)
        emb = F.normalize(model.image_projection(pooled), dim=-1)
        score = emb @ pos - (emb @ neg if neg is not None else 0.0)
        (grad,) = torch.autograd.grad(score.sum(), chunk)
        alpha = grad.mean(dim=(2, 3), keepdim=True)
        weighted = alpha * target[start:start + batch_size].float().to(device)
        out.append(torch.relu(weighted.sum(1)).detach().cpu())
    return torch.cat(out) if out else torch.zeros(0, *target.shape[2:])


def gradcam_head(encoder: Any, stride: int | None) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The rest of the image tower after its intermediate map at ``stride`` → a ``head`` for :func:`gradcam_heatmaps`
    (None for the last map, or a tower that cannot continue from an intermediate map: the kit's own EfficientNet).

    For a timm tower the map at ``stride`` is the output of ``model.blocks[i]``; the head runs ``blocks[i + 1:]``, the
    head convolution and the pooling (:meth:`~mammoclip_kit.models.towers.TimmTower.forward_from_trunk`), in eval mode.
    """
    if stride is None or not hasattr(encoder, "forward_from_trunk"):
        return None
    from mammoclip_kit.factor.features import tap_for_stride

    module = str(encoder.feature_info[tap_for_stride(encoder, stride)]["module"])  # e.g. "blocks.2"
    if not module.startswith("blocks."):
        return None
    blocks = int(module.split(".")[1]) + 1
    return lambda h: encoder.forward_from_trunk(h, blocks)
