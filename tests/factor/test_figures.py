"""Mammo-FActOR figures: the viewer falls back to a static figure without a live kernel."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest

from mammoclip_kit import factor as FA

matplotlib.use("Agg")


def test_viewer_falls_back_to_a_static_figure():
    import matplotlib.pyplot as plt

    image = np.random.default_rng(0).random((40, 24))
    heat = np.zeros((5, 3))
    heat[2, 1] = 1.0
    assert not FA.widgets_available()
    figure, viewer = FA.heatmap_viewer([image], lambda i, a: heat, ["mass"], gt_boxes=[np.array([[8, 16, 16, 24]])])
    assert viewer is None
    ax = figure.axes[0]
    assert len(ax.patches) >= 2 and len(ax.images) == 2  # GT + predicted box; image + overlay
    figure.canvas.draw()
    plt.close("all")
    with pytest.raises(ValueError, match="no images"):
        FA.heatmap_viewer([], lambda i, a: heat, ["mass"])


def test_heatmap_stays_in_the_breast_with_a_perceptual_colour_bar():
    import matplotlib.pyplot as plt

    image = np.zeros((40, 24))
    image[:, :12] = 0.6                      # the breast is the left half; the right half is black background
    heat = np.zeros((40, 24))
    heat[:, 18:] = 5.0                       # the hottest pixels lie in the background
    heat[10:14, 4:8] = 1.0                   # the breast's own peak
    figure, _ = FA.heatmap_viewer([image], lambda i, a: heat, ["mass"], quantile=0.9, interactive=False)
    ax = figure.axes[0]
    overlay = ax.images[1]
    assert overlay.get_cmap().name == "magma" and len(figure.axes) == 2   # the heat map and its colour bar
    data = overlay.get_array()
    assert data.mask[:, 12:].all() and not data.mask[:, :12].any()        # nothing drawn outside the breast
    boxes = [p.get_bbox().bounds for p in ax.patches]
    assert boxes and all(x + w <= 12 for x, _, w, _ in boxes)             # predicted boxes inside the breast
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels and all(label.startswith("#") for label in labels)      # scores in the legend, not on the image
    plt.close("all")


def test_viewer_uses_the_evaluation_mask_and_a_colour_bar():
    import matplotlib.pyplot as plt

    image = np.full((40, 24), 3.0)  # a non-zero background
    image[:, :12] = 200.0
    heat = np.zeros((40, 24))
    heat[5, 20] = 9.0   # a peak outside the breast: never drawn, never boxed
    heat[30, 4] = 1.0   # the peak inside it
    mask = FA.tissue_mask(image)
    figure, _ = FA.heatmap_viewer([image], lambda i, a: heat, ["mass"], masks=[mask], quantile=0.99)
    ax = figure.axes[0]
    overlay = ax.images[1].get_array()
    assert overlay.mask[5, 20] and not overlay.mask[30, 4]
    assert ax.images[1].get_cmap().name == "magma" and len(figure.axes) == 2  # the heatmap and its colour bar
    boxes = [p.get_xy() for p in ax.patches if p.get_linestyle() == "--"]
    assert boxes and all(x < 12 for x, _ in boxes)
    plt.close("all")
