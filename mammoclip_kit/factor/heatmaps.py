"""Mammo-FActOR, part 2: heatmaps, boxes, the Grad-CAM baseline, localisation metrics and figures.

The heatmap step was never published (spec §6.5, upstream issue #36); the kit implements the paper's description:
channel–attribute alignment → weights of the top-k channels → weighted sum of their feature maps → upsampled to the
image → thresholded at a quantile → connected components → scored boxes → mapped back to original pixels.

Public names are re-exported by :mod:`mammoclip_kit.factor`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mammoclip_kit.eval.metrics import APResult, average_precision_at_iou, pointing_game


def factor_heatmaps(alignment: torch.Tensor, maps: torch.Tensor, top_k: int = 20) -> torch.Tensor:
    """Weighted sum of the ``top_k`` best-aligned channels' maps → ``(N, h, w)``.

    ``alignment`` ``(N, C)`` is one attribute's column of :func:`channel_alignment`; ``maps`` ``(N, C, h, w)``. The
    weights are the top-k alignments clipped at 0 and normalised to sum 1 (equal weights when all are ≤ 0).
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


def upsample(heatmap: Any, size: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of a 2-D heatmap to ``size = (height, width)`` (pixel-centre aligned) → float32 array."""
    tensor = torch.as_tensor(np.asarray(heatmap, dtype=np.float32))
    if tensor.dim() != 2:
        raise ValueError(f"upsample: expected a 2-D heatmap, got shape {tuple(tensor.shape)}")
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"upsample: size must be (height, width) with positive values, got {size}")
    out = F.interpolate(tensor[None, None], size=tuple(int(s) for s in size), mode="bilinear", align_corners=False)
    return out[0, 0].numpy()


def heatmap_to_boxes(heatmap: Any, quantile: float = 0.95, max_boxes: int | None = None,
                     min_pixels: int = 1, mask: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Threshold a heatmap at its ``quantile`` and turn each connected region into a scored box.

    Pixels ``>= np.quantile(heatmap, quantile)`` are kept (``>`` when that quantile is the minimum, so that a flat
    background is never selected); :func:`scipy.ndimage.label` (4-connectivity) finds the
    regions; each becomes ``(xmin, ymin, xmax, ymax)`` in pixel-edge coordinates (a region covering columns 3..7 gives
    ``xmin = 3, xmax = 8``) scored by the heatmap's maximum inside it. Returns ``(boxes K×4, scores K)`` sorted by
    score, at most ``max_boxes``. A constant heatmap gives no box. With a boolean ``mask`` (e.g. the breast, see
    :func:`tissue_mask`) the quantile is taken over the masked pixels only and nothing outside it is kept.
    """
    from scipy import ndimage

    array = np.asarray(heatmap, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"heatmap_to_boxes: expected a 2-D heatmap, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("heatmap_to_boxes: heatmap contains NaN or inf")
    if not 0.0 <= quantile < 1.0:
        raise ValueError(f"heatmap_to_boxes: quantile must lie in [0, 1), got {quantile}")
    region = np.ones(array.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if region.shape != array.shape:
        raise ValueError(f"heatmap_to_boxes: mask shape {region.shape} differs from the heatmap's {array.shape}")
    values = array[region]
    if values.size == 0 or np.ptp(values) == 0:
        return np.zeros((0, 4)), np.zeros(0)
    threshold = np.quantile(values, quantile)
    # ties at the minimum (a flat background) would select the whole image: keep only pixels above it then
    mask = (array > threshold if threshold <= values.min() else array >= threshold) & region
    labels, count = ndimage.label(mask)
    boxes, scores = [], []
    for index, region in enumerate(ndimage.find_objects(labels), start=1):
        if region is None:
            continue
        inside = labels[region] == index
        if inside.sum() < min_pixels:
            continue
        rows, cols = region
        boxes.append([cols.start, rows.start, cols.stop, rows.stop])
        scores.append(float(array[region][inside].max()))
    if not boxes:
        return np.zeros((0, 4)), np.zeros(0)
    boxes_arr, scores_arr = np.asarray(boxes, dtype=np.float64), np.asarray(scores)
    order = np.argsort(-scores_arr, kind="stable")[:max_boxes]
    return boxes_arr[order], scores_arr[order]


def tissue_mask(image: Any, threshold: float = 0.0) -> np.ndarray:
    """Boolean mask of the pixels brighter than ``threshold`` (the breast: the kit's PNGs have a 0 background)."""
    array = np.asarray(image)
    if array.ndim != 2:
        raise ValueError(f"tissue_mask: expected a 2-D image, got shape {array.shape}")
    return array > threshold


def localize(heatmap: Any, size: tuple[int, int], quantile: float = 0.95, max_boxes: int | None = 10,
             manifest_row: Mapping[str, Any] | None = None,
             mask: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Feature-map heatmap → upsampled heatmap (PNG frame, ``size``), boxes and scores.

    With a ``mask`` (PNG frame) the heatmap is set to its minimum outside it, so thresholds, boxes and the peak stay
    inside. With a preprocessing ``manifest_row`` the boxes are mapped back to original DICOM pixels
    (:func:`mammoclip_kit.data.preprocess.png_to_original`); otherwise they stay in PNG pixels.
    """
    full = upsample(heatmap, size)
    if mask is not None:
        region = np.asarray(mask, dtype=bool)
        if region.shape != full.shape:
            raise ValueError(f"localize: mask shape {region.shape} differs from the image size {full.shape}")
        if region.any():
            full = np.where(region, full, full[region].min()).astype(np.float32)
    boxes, scores = heatmap_to_boxes(full, quantile, max_boxes, mask=mask)
    if manifest_row is not None and len(boxes):
        from mammoclip_kit.data.preprocess import png_to_original

        boxes = png_to_original(boxes, manifest_row)
    return full, boxes, scores


def _boxes_array(boxes: Any) -> np.ndarray:
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def box_oracle_heatmaps(gt_boxes: Sequence[Any], sizes: Sequence[tuple[int, int]],
                        grid: tuple[int, int]) -> list[np.ndarray]:
    """The best heatmaps a ``grid = (h, w)`` feature map can hold: each cell is the share of it the ground-truth
    boxes cover (boxes rasterised at the image ``sizes[i] = (height, width)``, then area-averaged onto the grid).

    Put through :func:`evaluate_localization` like any heatmap, they give the ceiling that the grid and the threshold
    alone set on mAP and the pointing game — what a perfect channel combination could reach on that grid.
    """
    if len(gt_boxes) != len(sizes):
        raise ValueError(f"box_oracle_heatmaps: {len(gt_boxes)} box lists for {len(sizes)} image sizes")
    h, w = (int(v) for v in grid)
    if h < 1 or w < 1:
        raise ValueError(f"box_oracle_heatmaps: grid must be (h, w) with positive values, got {grid}")
    out = []
    for boxes, (height, width) in zip(gt_boxes, sizes, strict=True):
        canvas = torch.zeros(1, 1, int(height), int(width))
        for x0, y0, x1, y1 in _boxes_array(boxes):
            top, left = max(0, int(np.floor(y0))), max(0, int(np.floor(x0)))
            canvas[0, 0, top:int(np.ceil(y1)), left:int(np.ceil(x1))] = 1.0
        out.append(F.adaptive_avg_pool2d(canvas, (h, w))[0, 0].numpy())
    return out


def _cell_centres(grid: tuple[int, int], size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Cell centres ``(xs (w,), ys (h,))`` of an ``(h, w)`` grid over an image of ``size = (height, width)`` pixels."""
    (h, w), (height, width) = grid, size
    return (np.arange(w) + 0.5) * width / w, (np.arange(h) + 0.5) * height / h


def _inside(boxes: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Whether each point ``(x[k], y[k])`` lies in any box (edges count) → bool ``(K,)``."""
    return ((boxes[:, None, 0] <= x) & (x <= boxes[:, None, 2]) & (boxes[:, None, 1] <= y)
            & (y <= boxes[:, None, 3])).any(0)


def channel_hit_rates(maps: torch.Tensor, sizes: Sequence[tuple[int, int]], gt_boxes: Sequence[Any],
                      masks: Sequence[Any] | None = None) -> np.ndarray:
    """Per channel, the pointing game of its own map: the share of images (with ≥ 1 box) whose channel peak — the
    arg-max cell's centre in image pixels, among the cells whose centre lies in ``masks[i]`` when given — falls inside
    a box. ``maps`` ``(N, C, h, w)``, ``sizes[i] = (height, width)``, ``gt_boxes[i]`` in the same pixels → ``(C,)``.

    A diagnostic that uses the boxes to judge channels; a weakly supervised method may not choose channels this way.
    """
    if maps.dim() != 4 or not (len(maps) == len(sizes) == len(gt_boxes)):
        raise ValueError(f"channel_hit_rates: need maps (N, C, h, w) and N sizes and box lists; got "
                         f"{tuple(maps.shape)}, {len(sizes)}, {len(gt_boxes)}")
    if masks is not None and len(masks) != len(maps):
        raise ValueError(f"channel_hit_rates: {len(masks)} masks for {len(maps)} maps")
    _, channels, h, w = maps.shape
    hits, counted = np.zeros(channels), 0
    for i, (size, boxes) in enumerate(zip(sizes, gt_boxes, strict=True)):
        boxes = _boxes_array(boxes)
        if not len(boxes):
            continue
        xs, ys = _cell_centres((h, w), size)
        allowed = np.ones((h, w), dtype=bool)
        if masks is not None:
            mask = np.asarray(masks[i], dtype=bool)
            rows = np.minimum(ys.astype(int), mask.shape[0] - 1)
            allowed = mask[rows][:, np.minimum(xs.astype(int), mask.shape[1] - 1)]
            allowed = allowed if allowed.any() else np.ones((h, w), dtype=bool)
        values = maps[i].float().masked_fill(~torch.as_tensor(allowed), float("-inf")).flatten(1)
        peak = values.argmax(1).numpy()
        hits += _inside(boxes, xs[peak % w], ys[peak // w])
        counted += 1
    return hits / counted if counted else np.full(channels, np.nan)


def box_supervised_weights(maps: torch.Tensor, sizes: Sequence[tuple[int, int]], gt_boxes: Sequence[Any],
                           c: float = 0.01) -> torch.Tensor:
    """Channel weights of the best *box-supervised* linear heatmap → ``(C,)``, in activation units, so that
    ``torch.einsum("nchw,c->nhw", maps, weights)`` is the heatmap.

    A heatmap that weights channels is a linear function of each cell's ``C``-vector; this fits that function with the
    boxes: an L2 logistic regression (inverse strength ``c``, balanced classes, on standardised features) of "the cell
    centre lies in a box, or the cell holds a box's centre" over every cell of ``maps`` ``(N, C, h, w)``. It is a
    supervised reference for what any channel weighting of these maps could reach — not a weakly supervised method.
    """
    from sklearn.linear_model import LogisticRegression

    if maps.dim() != 4 or not (len(maps) == len(sizes) == len(gt_boxes)):
        raise ValueError(f"box_supervised_weights: need maps (N, C, h, w) and N sizes and box lists; got "
                         f"{tuple(maps.shape)}, {len(sizes)}, {len(gt_boxes)}")
    h, w = maps.shape[2:]
    labels = []
    for (height, width), boxes in zip(sizes, gt_boxes, strict=True):
        boxes = _boxes_array(boxes)
        xs, ys = _cell_centres((h, w), (height, width))
        inside = _inside(boxes, np.tile(xs, h), np.repeat(ys, w)).reshape(h, w)
        # a box smaller than a cell may hold no cell centre: it still marks the cell that holds its own centre
        rows = np.clip(((boxes[:, 1] + boxes[:, 3]) / 2 * h / height).astype(int), 0, h - 1)
        cols = np.clip(((boxes[:, 0] + boxes[:, 2]) / 2 * w / width).astype(int), 0, w - 1)
        inside[rows, cols] = True
        labels.append(inside.ravel())
    y = np.concatenate(labels)
    if y.all() or not y.any():
        raise ValueError(f"box_supervised_weights: need cells inside and outside the boxes; {int(y.sum())} of "
                         f"{y.size} cells are marked by a box")
    x = maps.float().permute(0, 2, 3, 1).reshape(-1, maps.shape[1]).numpy().astype(np.float64)
    mean, std = x.mean(0), x.std(0) + 1e-6
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=2000).fit((x - mean) / std, y)
    return torch.as_tensor(model.coef_[0] / std, dtype=torch.float32)


@dataclass
class LocalizationResult:
    """mAP at IoU 0.25 / 0.5 and the pointing game of one attribute's heatmaps on a set of images."""

    map25: float
    map50: float
    pointing: float
    n_images: int
    n_boxes: int
    ap25: APResult | None = None
    ap50: APResult | None = None
    predictions: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    frame: str = "png"

    def summary(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}map25": self.map25, f"{prefix}map50": self.map50, f"{prefix}pointing": self.pointing,
                f"{prefix}n_images": self.n_images, f"{prefix}n_boxes": self.n_boxes}


def evaluate_localization(heatmaps: Sequence[Any], sizes: Sequence[tuple[int, int]],
                          gt_png: Sequence[Any], *, gt_original: Sequence[Any] | None = None,
                          manifest_rows: Sequence[Mapping[str, Any] | None] | None = None, quantile: float = 0.95,
                          max_boxes: int | None = 10, masks: Sequence[Any] | None = None) -> LocalizationResult:
    """Evaluate heatmaps as the paper: boxes from :func:`localize`, VOC mAP at IoU 0.25 and 0.5, pointing game.

    ``heatmaps[i]`` is image ``i``'s feature-map heatmap, ``sizes[i]`` its PNG ``(height, width)``, ``gt_png[i]`` its
    ground-truth boxes in PNG pixels. With ``manifest_rows`` and ``gt_original`` the AP is computed in original DICOM
    pixels (the boxes mapped back through the manifest), otherwise in PNG pixels; the pointing game always uses the
    upsampled heatmap's arg-max against the PNG boxes. Every detection counts (no score threshold). ``masks[i]``
    (PNG frame, e.g. :func:`tissue_mask` of the image) restricts image ``i``'s heatmap to the breast.
    """
    n = len(heatmaps)
    if not (len(sizes) == len(gt_png) == n):
        raise ValueError(f"evaluate_localization: {n} heatmaps, {len(sizes)} sizes, {len(gt_png)} box lists")
    original = manifest_rows is not None and gt_original is not None
    if masks is not None and len(masks) != n:
        raise ValueError(f"evaluate_localization: {len(masks)} masks for {n} heatmaps")
    if original and not (len(manifest_rows) == len(gt_original) == n):
        raise ValueError("evaluate_localization: manifest_rows and gt_original need one entry per heatmap")
    predictions, full_maps, truth = [], [], []
    for i in range(n):
        row = manifest_rows[i] if original else None
        full, boxes, scores = localize(heatmaps[i], sizes[i], quantile, max_boxes, row,
                                       masks[i] if masks is not None else None)
        predictions.append((boxes, scores))
        full_maps.append(full)
        truth.append(np.asarray(gt_original[i] if original else gt_png[i], dtype=np.float64).reshape(-1, 4))
    ap25 = average_precision_at_iou(predictions, truth, 0.25)
    ap50 = average_precision_at_iou(predictions, truth, 0.5)
    pointing = pointing_game(full_maps, [np.asarray(b, dtype=np.float64).reshape(-1, 4) for b in gt_png])
    return LocalizationResult(ap25.ap, ap50.ap, pointing, n, sum(len(t) for t in truth), ap25, ap50, predictions,
                              "original" if original else "png")


# ----------------------------------------------------------------------------------------------------------------------
# Figures


def _gray(image: Any) -> np.ndarray:
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 3:
        array = array[0] if array.shape[0] in (1, 3) else array[..., 0]
    low, high = float(array.min()), float(array.max())
    return (array - low) / (high - low) if high > low else np.zeros_like(array)


def show_heatmap(image: Any, heatmap: Any, *, boxes: Any = None, scores: Any = None, gt_boxes: Any = None,
                 quantile: float | None = 0.95, overlay: bool = True, alpha: float = 0.45, title: str | None = None,
                 ax: Any = None, max_boxes: int = 3):
    """Static figure: the image, the heatmap (upsampled to the image when smaller) as an overlay, the threshold
    contour, predicted boxes (orange, dashed, with scores) and ground-truth boxes (green). All boxes in image pixels.
    Returns the axes."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    gray = _gray(image)
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.shape != gray.shape:
        heat = upsample(heat, gray.shape)
    if ax is None:
        _, ax = plt.subplots(figsize=(3, 4.6))
    ax.imshow(gray, cmap="gray", vmin=0, vmax=1)
    if overlay:
        ax.imshow(heat, cmap="jet", alpha=alpha)
    if quantile is not None and np.ptp(heat) > 0:
        ax.contour(heat >= np.quantile(heat, quantile), levels=[0.5], colors="white", linewidths=0.8)
    for box in np.asarray(gt_boxes if gt_boxes is not None else np.zeros((0, 4)), dtype=float).reshape(-1, 4):
        ax.add_patch(Rectangle((box[0], box[1]), box[2] - box[0], box[3] - box[1], fill=False, ec="lime", lw=1.5))
    pred = np.asarray(boxes if boxes is not None else np.zeros((0, 4)), dtype=float).reshape(-1, 4)
    for j, box in enumerate(pred[:max_boxes]):
        ax.add_patch(Rectangle((box[0], box[1]), box[2] - box[0], box[3] - box[1], fill=False, ec="orange", lw=1.2,
                               ls="--"))
        if scores is not None and j < len(scores):
            ax.text(box[0], box[1] - 2, f"{float(scores[j]):.2f}", color="orange", fontsize=7)
    ax.set_title(title or "", fontsize=8)
    ax.axis("off")
    return ax


def widgets_available() -> bool:
    """True inside a live IPython kernel with ipywidgets installed (a viewer can then be interactive)."""
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def heatmap_viewer(images: Sequence[Any], heatmap_fn: Callable[[int, str], np.ndarray], attributes: Sequence[str],
                   *, gt_boxes: Sequence[Any] | None = None, titles: Sequence[str] | None = None,
                   quantile: float = 0.95, interactive: bool | None = None):
    """Explore heatmaps: image, attribute (or sentence), threshold quantile and overlay on/off.

    ``heatmap_fn(index, attribute)`` returns image ``index``'s heatmap for an attribute (any size; it is upsampled).
    The static figure of the first image and attribute is always drawn (an executed notebook keeps it); when a live
    kernel with ipywidgets is present (or ``interactive=True``) an ``ipywidgets.interactive`` viewer is returned too,
    else ``None``. Returns ``(figure, viewer)``.
    """
    import matplotlib.pyplot as plt

    if not images:
        raise ValueError("heatmap_viewer: no images given")
    if not attributes:
        raise ValueError("heatmap_viewer: no attributes given")

    def draw(index: int, attribute: str, q: float, overlay: bool):
        fig, ax = plt.subplots(figsize=(3.2, 4.8))
        heat = upsample(heatmap_fn(index, attribute), _gray(images[index]).shape)
        boxes, scores = heatmap_to_boxes(heat, q, 3)
        gt = gt_boxes[index] if gt_boxes is not None else None
        label = titles[index] if titles is not None else f"image {index}"
        show_heatmap(images[index], heat, boxes=boxes, scores=scores, gt_boxes=gt, quantile=q, overlay=overlay,
                     title=f"{label} · {attribute} · q={q:.2f}", ax=ax)
        fig.tight_layout()
        return fig

    figure = draw(0, attributes[0], quantile, True)
    use_widgets = widgets_available() if interactive is None else interactive
    if not use_widgets:
        return figure, None
    import ipywidgets as widgets

    def show(index: int, attribute: str, q: float, overlay: bool) -> None:
        draw(index, attribute, q, overlay)
        plt.show()

    viewer = widgets.interactive(
        show, index=widgets.IntSlider(value=0, min=0, max=len(images) - 1, description="image"),
        attribute=widgets.Dropdown(options=list(attributes), value=attributes[0], description="attribute"),
        q=widgets.FloatSlider(value=quantile, min=0.5, max=0.995, step=0.005, description="quantile"),
        overlay=widgets.Checkbox(value=True, description="overlay"))
    return figure, viewer
