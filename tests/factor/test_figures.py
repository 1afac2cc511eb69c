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
