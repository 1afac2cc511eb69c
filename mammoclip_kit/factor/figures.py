"""Figures of Mammo-FActOR: one heatmap over its image with boxes, and an explorer of images × attributes × thresholds.

:func:`heatmap_viewer` draws a static figure always (an executed notebook keeps it) and returns an ``ipywidgets``
viewer only inside a live kernel with ipywidgets (:func:`widgets_available`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mammoclip_kit.factor.localization import heatmap_to_boxes, upsample


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
