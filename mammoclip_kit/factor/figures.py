"""Figures of Mammo-FActOR: one heatmap over its image with boxes, and an explorer of images × attributes × thresholds.

:func:`heatmap_viewer` draws a static figure always (an executed notebook keeps it) and returns an ``ipywidgets``
viewer only inside a live kernel with ipywidgets (:func:`widgets_available`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mammoclip_kit.env import widgets_available
from mammoclip_kit.factor.localization import heatmap_to_boxes, upsample


def _gray(image: Any) -> np.ndarray:
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 3:
        array = array[0] if array.shape[0] in (1, 3) else array[..., 0]
    low, high = float(array.min()), float(array.max())
    return (array - low) / (high - low) if high > low else np.zeros_like(array)


def show_heatmap(image: Any, heatmap: Any, *, boxes: Any = None, scores: Any = None, gt_boxes: Any = None,
                 quantile: float | None = 0.95, overlay: bool = True, alpha: float = 0.5, title: str | None = None,
                 ax: Any = None, max_boxes: int = 3, mask: Any = None, colorbar: bool = True):
    """Static figure: the image, the heatmap (upsampled to the image when smaller) as an overlay, the threshold
    contour, predicted boxes (orange, dashed; their scores in the legend, so labels never overlap) and ground-truth
    boxes (green). All boxes in image pixels. Returns the axes.

    The heatmap uses a perceptual colour map (``magma``) with a colour bar. ``mask`` (boolean, image-sized; default
    :func:`~mammoclip_kit.factor.localization.tissue_mask` of the image) limits the overlay and the threshold contour to
    the breast, as the evaluation does: nothing is drawn in the black background.
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    from mammoclip_kit.factor.localization import tissue_mask

    gray = _gray(image)
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.shape != gray.shape:
        heat = upsample(heat, gray.shape)
    region = tissue_mask(np.asarray(image) if np.asarray(image).ndim == 2 else gray) if mask is None else \
        np.asarray(mask, dtype=bool)
    if region.shape != gray.shape or not region.any():
        region = np.ones_like(gray, dtype=bool)
    if ax is None:
        _, ax = plt.subplots(figsize=(3.2, 4.6))
    ax.imshow(gray, cmap="gray", vmin=0, vmax=1)
    inside = heat[region]
    low, high = float(inside.min()), float(inside.max())
    if overlay:
        shown = ax.imshow(np.ma.masked_where(~region, heat), cmap="magma", alpha=alpha, vmin=low, vmax=high)
        if colorbar:
            ax.figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.02, label="heatmap (breast only)")
    if quantile is not None and high > low:
        ax.contour(region & (heat >= np.quantile(inside, quantile)), levels=[0.5], colors="white", linewidths=0.8)
    handles = []
    truth = np.asarray(gt_boxes if gt_boxes is not None else np.zeros((0, 4)), dtype=float).reshape(-1, 4)
    for box in truth:
        ax.add_patch(Rectangle((box[0], box[1]), box[2] - box[0], box[3] - box[1], fill=False, ec="lime", lw=1.5))
    if len(truth):
        handles.append(Line2D([], [], color="lime", lw=1.5, label="ground truth"))
    pred = np.asarray(boxes if boxes is not None else np.zeros((0, 4)), dtype=float).reshape(-1, 4)
    for j, box in enumerate(pred[:max_boxes]):
        ax.add_patch(Rectangle((box[0], box[1]), box[2] - box[0], box[3] - box[1], fill=False, ec="orange", lw=1.2,
                               ls="--"))
        ax.text(box[0] + 1, box[1] + 1, f"#{j + 1}", color="orange", fontsize=7, va="top")
        score = f" {float(scores[j]):.2f}" if scores is not None and j < len(scores) else ""
        handles.append(Line2D([], [], color="orange", lw=1.2, ls="--", label=f"#{j + 1}{score}"))
    if handles:
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.01), fontsize=7, ncol=2,
                  frameon=False)
    ax.set_title(title or "", fontsize=8)
    ax.axis("off")
    return ax


def _breast(image: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    """The breast mask of a 2-D image (None for anything else: the whole frame is used)."""
    from mammoclip_kit.factor.localization import tissue_mask

    array = np.asarray(image)
    if array.ndim != 2 or array.shape != tuple(shape):
        return None
    mask = tissue_mask(array)
    return mask if mask.any() else None


def heatmap_viewer(images: Sequence[Any], heatmap_fn: Callable[[int, str], np.ndarray], attributes: Sequence[str],
                   *, gt_boxes: Sequence[Any] | None = None, titles: Sequence[str] | None = None,
                   quantile: float = 0.95, interactive: bool | None = None, masks: Sequence[Any] | None = None):
    """Explore heatmaps: image, attribute (or sentence), threshold quantile and overlay on/off.

    ``heatmap_fn(index, attribute)`` returns image ``index``'s heatmap for an attribute (any size; it is upsampled).
    The static figure of the first image and attribute is always drawn (an executed notebook keeps it); when a live
    kernel with ipywidgets is present (or ``interactive=True``) an ``ipywidgets.interactive`` viewer is returned too,
    else ``None``. ``masks[i]`` (boolean, image-sized) is image ``i``'s breast as the evaluation used it (default:
    :func:`~mammoclip_kit.factor.localization.tissue_mask` of the image); the overlay, threshold and boxes stay in it.
    Returns ``(figure, viewer)``.
    """
    import matplotlib.pyplot as plt

    if not images:
        raise ValueError("heatmap_viewer: no images given")
    if not attributes:
        raise ValueError("heatmap_viewer: no attributes given")

    def draw(index: int, attribute: str, q: float, overlay: bool):
        fig, ax = plt.subplots(figsize=(3.6, 5.2))
        heat = upsample(heatmap_fn(index, attribute), _gray(images[index]).shape)
        mask = np.asarray(masks[index], dtype=bool) if masks is not None else _breast(images[index], heat.shape)
        if mask is not None and (mask.shape != heat.shape or not mask.any()):
            mask = None
        boxes, scores = heatmap_to_boxes(heat, q, 3, mask=mask)
        gt = gt_boxes[index] if gt_boxes is not None else None
        label = titles[index] if titles is not None else f"image {index}"
        show_heatmap(images[index], heat, boxes=boxes, scores=scores, gt_boxes=gt, quantile=q, overlay=overlay,
                     title=f"{label} · {attribute} · q={q:.2f}", ax=ax, mask=mask)
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
