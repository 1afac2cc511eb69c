"""Mammo-FActOR heatmaps and their evaluation: top-k channels, Grad-CAM, boxes, mAP / pointing game, original pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mammoclip_kit import factor as FA

torch.set_num_threads(1)


def test_heatmap_to_boxes_returns_the_blob():
    heat = np.zeros((40, 30))
    heat[10:16, 5:12] = 1.0  # 42 pixels = 3.5 % of the image: above the 95th percentile
    heat[30:32, 20:22] = 0.5
    boxes, scores = FA.heatmap_to_boxes(heat, quantile=0.95)
    np.testing.assert_allclose(boxes[0], [5, 10, 12, 16])
    assert scores[0] == 1.0
    boxes, _ = FA.heatmap_to_boxes(heat, quantile=0.9)
    assert len(boxes) == 2 and list(boxes[1]) == [20, 30, 22, 32]
    assert len(FA.heatmap_to_boxes(np.ones((5, 5)))[0]) == 0
    # a tissue mask that leaves out the strong blob: the quantile is taken inside the mask, the weak blob is found
    image = np.zeros((40, 30))
    image[20:, :] = 100.0
    boxes, _ = FA.heatmap_to_boxes(heat, quantile=0.95, mask=FA.tissue_mask(image))
    assert list(boxes[0]) == [20, 30, 22, 32] and len(boxes) == 1
    with pytest.raises(ValueError, match="mask shape"):
        FA.heatmap_to_boxes(heat, mask=np.ones((3, 3), dtype=bool))


def test_factor_heatmap_and_localize_find_a_known_blob():
    maps = torch.zeros(1, 3, 8, 6)
    maps[0, 1, 2:4, 1:3] = 1.0   # the aligned channel: a 2x2 blob
    maps[0, 2, 6, 5] = 1.0       # an unaligned channel elsewhere
    alignment = torch.tensor([[0.0, 0.9, -0.5]])
    heat = FA.factor_heatmaps(alignment, maps, top_k=2)[0]
    assert heat[2, 1] == pytest.approx(1.0) and heat[6, 5] == 0.0
    full, boxes, _ = FA.localize(heat.numpy(), (80, 60), quantile=0.9)
    assert full.shape == (80, 60)
    # the 2x2 cell blob covers pixels 20..40 (rows) and 10..30 (columns); bilinear blur keeps the box near it
    iou = FA.evaluate_localization([heat.numpy()], [(80, 60)], [np.array([[10, 20, 30, 40]])], quantile=0.9).map25
    assert boxes[0][0] == pytest.approx(10, abs=4) and boxes[0][1] == pytest.approx(20, abs=4)
    assert iou == 1.0


def test_evaluate_localization_hand_made_case_and_original_pixels():
    # image 0: blob on the box (hit), image 1: blob away from its box (miss)
    heat0 = np.zeros((10, 10))
    heat0[1:3, 1:3] = 1.0
    heat1 = np.zeros((10, 10))
    heat1[7:9, 7:9] = 1.0
    gt_png = [np.array([[10.0, 10.0, 30.0, 30.0]]), np.array([[0.0, 0.0, 20.0, 20.0]])]
    result = FA.evaluate_localization([heat0, heat1], [(100, 100)] * 2, gt_png, quantile=0.95)
    assert result.pointing == 0.5
    assert result.map25 == pytest.approx(0.5)  # one TP at the higher score out of two boxes
    assert result.n_boxes == 2 and result.frame == "png"
    # the same case in original pixels: crop origin (100, 50), PNG 100x100 from a 200x400 crop
    row = {"crop_x0": 100, "crop_y0": 50, "crop_x1": 300, "crop_y1": 450, "out_width": 100, "out_height": 100}
    gt_original = [np.array([[120.0, 90.0, 160.0, 170.0]]), np.array([[100.0, 50.0, 140.0, 130.0]])]
    mapped = FA.evaluate_localization([heat0, heat1], [(100, 100)] * 2, gt_png, gt_original=gt_original,
                                      manifest_rows=[row, row], quantile=0.95)
    assert mapped.frame == "original" and mapped.map25 == pytest.approx(0.5)
    box = mapped.predictions[0][0][0]
    png_box = result.predictions[0][0][0]
    np.testing.assert_allclose(box, [png_box[0] * 2 + 100, png_box[1] * 4 + 50, png_box[2] * 2 + 100,
                                     png_box[3] * 4 + 50])


class _Projection(torch.nn.Module):
    """A stand-in model for Grad-CAM: only ``image_projection``, a fixed linear map."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.image_projection = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        with torch.no_grad():
            self.image_projection.weight.copy_(weight)


def test_gradcam_highlights_the_channel_the_prompt_reads():
    maps = torch.full((1, 3, 4, 4), 0.1)
    maps[0, 0, 1, 2] = 2.0
    tiny = _Projection(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    cam = FA.gradcam_heatmaps(tiny, maps, positive=torch.tensor([1.0, 0.0]), negative=torch.tensor([0.0, 1.0]))
    assert cam.shape == (1, 4, 4)
    assert np.unravel_index(int(cam[0].argmax()), (4, 4)) == (1, 2)


def test_gradcam_weights_from_maps_apply_to_dense_maps():
    tiny = _Projection(torch.eye(2))
    maps = torch.ones(1, 2, 2, 2)
    dense = torch.zeros(1, 2, 4, 4)
    dense[0, 0, 3, 1] = 1.0  # the channel the prompt reads peaks here on the finer grid
    dense[0, 1, 0, 0] = 5.0  # the other channel gets a negative weight
    cam = FA.gradcam_heatmaps(tiny, maps, torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), dense=dense)
    assert cam.shape == (1, 4, 4)
    assert np.unravel_index(int(cam[0].argmax()), (4, 4)) == (3, 1) and float(cam[0, 0, 0]) == 0.0
    with pytest.raises(ValueError, match="do not match"):
        FA.gradcam_heatmaps(tiny, maps, torch.tensor([1.0, 0.0]), dense=torch.zeros(2, 2, 4, 4))
