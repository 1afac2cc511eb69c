"""Notebook 07's box figure: scores go in a legend, never as text on the image where overlapping boxes collide."""

import matplotlib
import numpy as np

from mammoclip_kit.eval import detection as det

matplotlib.use("Agg")


def test_scores_of_overlapping_boxes_are_listed_not_written_on_the_image():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    boxes = [[10, 10, 40, 40], [12, 11, 41, 42], [11, 9, 39, 41], [60, 60, 70, 70]]
    det.draw_detections(ax, np.zeros((80, 80)), boxes, [0.9, 0.8, 0.05, 0.7], [[10, 10, 40, 40]],
                        score_threshold=0.1, max_boxes=3)
    assert len(ax.texts) == 0
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["truth", "#1 0.90", "#2 0.80", "#3 0.70"]  # 0.05 is under the threshold
    ax.clear()
    many = [[i, i, i + 10, i + 10] for i in range(8)]
    det.draw_detections(ax, np.zeros((40, 40)), many, np.linspace(0.2, 0.9, 8), score_threshold=0.0, max_boxes=20)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["8 boxes, 0.20–0.90"]
    plt.close(fig)
