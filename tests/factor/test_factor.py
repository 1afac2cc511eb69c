"""Mammo-FActOR: loss, mapper, heatmaps → boxes, localisation metrics, mapping to original pixels, viewer fallback."""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pytest
import torch

from mammoclip_kit import factor as FA

matplotlib.use("Agg")
torch.set_num_threads(1)


def _direct_loss(region: torch.Tensor, text: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    """Spec §6.3 written out with loops and math.exp."""
    b, c, a, _ = region.shape
    r = region / region.norm(dim=-1, keepdim=True)
    t = text / text.norm(dim=-1, keepdim=True)
    s = [[max(float(r[i, k, j] @ t[j]) for k in range(c)) / temperature for j in range(a)] for i in range(b)]
    total, count = 0.0, 0
    for j in range(a):
        if sum(float(labels[i, j]) for i in range(b)) == 0:
            continue
        column = sum(math.exp(s[i][j] * (1 - float(labels[i, j]))) for i in range(b))
        for i in range(b):
            if labels[i, j] == 1:
                total += -math.log(math.exp(s[i][j]) / (math.exp(s[i][j]) + column))
                count += 1
    return total / count


def test_factor_loss_matches_direct_computation():
    g = torch.Generator().manual_seed(0)
    region = torch.randn(4, 5, 2, 6, generator=g)
    text = torch.randn(2, 6, generator=g)
    labels = torch.tensor([[1, 0], [0, 0], [1, 0], [0, 0]], dtype=torch.float32)  # attribute 1 has no positive
    got = float(FA.factor_loss(region, text, labels, temperature=0.5))
    assert got == pytest.approx(_direct_loss(region, text, labels, 0.5), rel=1e-5)
    labels[1, 1] = 1
    got = float(FA.factor_loss(region, text, labels, temperature=0.07))
    assert got == pytest.approx(_direct_loss(region, text, labels, 0.07), rel=1e-5)


def test_factor_loss_without_positives_is_zero_and_rejects_bad_shapes():
    region = torch.randn(2, 3, 1, 4, requires_grad=True)
    loss = FA.factor_loss(region, torch.randn(1, 4), torch.zeros(2, 1))
    assert float(loss.detach()) == 0.0 and loss.requires_grad
    with pytest.raises(ValueError, match="labels must be"):
        FA.factor_loss(region, torch.randn(1, 4), torch.zeros(3, 1))


def test_mapper_keeps_channels_and_heads_apart():
    mapper = FA.AttributeMapper(in_dim=6, embed_dim=4, attributes=("mass", "suspicious_calcification"))
    maps = torch.randn(3, 7, 2, 3)
    out = mapper(maps)
    assert out.shape == (3, 7, 2, 4)
    # channel 5 of image 1 through head 1 equals that head applied to that channel alone (no view-pairing mix-up)
    alone = mapper.heads["suspicious_calcification"](maps[1, 5].flatten() / mapper.scale)
    torch.testing.assert_close(out[1, 5, 1], alone)
    with pytest.raises(ValueError, match="h·w = 6"):
        mapper(torch.randn(1, 7, 3, 3))


def test_training_finds_the_channel_that_carries_the_attribute():
    """Channel 0 lights up only in positive images: after training it must be the best-aligned channel."""
    g = torch.Generator().manual_seed(1)
    n, c = 48, 6
    labels = (torch.arange(n) % 2).float()[:, None]
    maps = torch.rand(n, c, 3, 2, generator=g) * 0.3
    maps[labels[:, 0] == 1, 0, 1, 1] += 3.0
    text = torch.nn.functional.normalize(torch.randn(1, 8, generator=g), dim=-1)
    config = FA.FactorConfig(attributes=("mass",), lr=3e-3, epochs=40, batch_size=8, patience=40)
    mapper, history = FA.train_mapper(maps[:32], labels[:32], text, config, val_maps=maps[32:],
                                      val_labels=labels[32:], seed=0, progress=False)
    assert history.val_loss[history.best_epoch - 1] < history.val_loss[0]
    align = FA.channel_alignment(mapper, maps[32:], text)[:, :, 0]
    positives = labels[32:, 0] == 1
    assert (align[positives].argmax(1) == 0).float().mean() >= 0.9


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


class _PoolTower(torch.nn.Module):
    """A stand-in tower of stride 4: the last map is the mean of each 4 × 4 block of the first input channel."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(x[:, :1], 4)


def test_stitched_features_sample_the_same_map_densely():
    from mammoclip_kit.data.transforms import PAPER_MEAN, PAPER_STD

    x = torch.arange(2 * 3 * 8 * 12, dtype=torch.float32).reshape(2, 3, 8, 12)
    tower = _PoolTower()
    dense = FA.stitched_features(tower, x, stitch=2)
    assert dense.shape == (2, 1, 4, 6)
    assert torch.equal(dense[:, :, ::2, ::2], tower.forward_features(x))  # offset 0 is the ordinary map
    # cell (1, 3) = window shifted down 2 and right 2 from cell (0, 1): rows 2..5, columns 6..9
    assert float(dense[0, 0, 1, 3]) == pytest.approx(float(x[0, 0, 2:6, 6:10].mean()))
    # the last row / column of windows reaches past the image: the vacated border is background
    fill = (0.0 - PAPER_MEAN) / PAPER_STD
    expected = torch.full((4, 4), fill)
    expected[:2, :2] = x[1, 0, 6:8, 10:12]
    assert float(dense[1, 0, 3, 5]) == pytest.approx(float(expected.mean()))
    assert torch.equal(FA.stitched_features(tower, x, stitch=1), tower.forward_features(x))
    with pytest.raises(ValueError, match="not divisible by stitch=3"):
        FA.stitched_features(tower, x, stitch=3)
    with pytest.raises(ValueError, match="stitch must be"):
        FA.stitched_features(tower, x, stitch=0)


def test_feature_maps_stitch_reads_images_and_caches_separately(tmp_path):
    import cv2

    paths = []
    for k in range(2):
        image = np.zeros((16, 8), dtype=np.uint8)
        image[4 * k:4 * k + 4, 2:6] = 255
        paths.append(tmp_path / f"im{k}.png")
        cv2.imwrite(str(paths[-1]), image)
    tower = _PoolTower()
    plain, sizes = FA.feature_maps(tower, paths, cache_dir=tmp_path / "cache", progress=False)
    dense, _ = FA.feature_maps(tower, paths, cache_dir=tmp_path / "cache", progress=False, stitch=4)
    assert plain.shape == (2, 1, 4, 2) and dense.shape == (2, 1, 16, 8) and sizes == [(16, 8), (16, 8)]
    assert torch.equal(dense[:, :, ::4, ::4], plain)
    assert len(list((tmp_path / "cache").glob("factor_maps_*.pt"))) == 2
    again, _ = FA.feature_maps(tower, paths, cache_dir=tmp_path / "cache", progress=False, stitch=4)
    assert torch.equal(again, dense)


def test_box_oracle_sets_the_grid_ceiling():
    boxes = [np.array([[10.0, 20.0, 18.0, 28.0]]), np.array([[40.0, 4.0, 56.0, 12.0]])]
    sizes = [(64, 64), (64, 64)]
    fine = FA.box_oracle_heatmaps(boxes, sizes, (64, 64))
    assert fine[0].shape == (64, 64) and fine[0].sum() == 64 and fine[0][20:28, 10:18].min() == 1.0
    result = FA.evaluate_localization(fine, sizes, boxes, quantile=0.95)
    assert result.map25 == pytest.approx(1.0) and result.map50 == pytest.approx(1.0) and result.pointing == 1.0
    coarse = FA.box_oracle_heatmaps(boxes, sizes, (2, 2))  # one cell is a quarter of the image
    assert coarse[0].tolist() == [[64 / 1024, 0.0], [0.0, 0.0]]
    assert FA.evaluate_localization(coarse, sizes, boxes, quantile=0.95).map50 < 0.5
    with pytest.raises(ValueError, match="2 box lists for 1 image sizes"):
        FA.box_oracle_heatmaps(boxes, sizes[:1], (4, 4))


def test_channel_hit_rates_count_peaks_inside_boxes():
    maps = torch.zeros(2, 3, 4, 4)
    maps[0, 0, 1, 1] = maps[1, 0, 2, 3] = 1.0  # channel 0 peaks in the box of both images
    maps[0, 1, 3, 3] = maps[1, 1, 2, 3] = 1.0  # channel 1 in one of them
    maps[:, 2, 0, 0] = 1.0  # channel 2 always at the corner, which the mask of image 0 excludes
    sizes = [(40, 40), (40, 40)]
    boxes = [np.array([[10.0, 10.0, 20.0, 20.0]]), np.array([[30.0, 20.0, 40.0, 30.0], [0.0, 30.0, 10.0, 40.0]])]
    rates = FA.channel_hit_rates(maps, sizes, boxes)
    assert rates.tolist() == [1.0, 0.5, 0.0]
    mask = np.ones((40, 40), dtype=bool)
    mask[:10, :10] = False
    maps[0, 2, 1, 1] = 0.5  # best cell inside the mask, inside the box
    assert FA.channel_hit_rates(maps, sizes, boxes, masks=[mask, np.ones((40, 40), bool)]).tolist() == [1.0, 0.5, 0.5]
    assert np.isnan(FA.channel_hit_rates(maps, sizes, [np.zeros((0, 4))] * 2)).all()


def test_box_supervised_weights_find_the_channel_that_marks_the_boxes():
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(6, 4, 4, 4, generator=g) * 0.1
    boxes, sizes = [], [(40, 40)] * 6
    for i in range(6):
        row, col = i % 4, (i * 3) % 4
        maps[i, 2, row, col] += 5.0  # channel 2 fires in the box cell, in units of 0.1 × its scale elsewhere
        boxes.append(np.array([[col * 10.0, row * 10.0, col * 10.0 + 10, row * 10.0 + 10]]))  # one cell
    weights = FA.box_supervised_weights(maps, sizes, boxes)
    standardised = weights * maps.permute(1, 0, 2, 3).flatten(1).std(1)  # weights are in activation units
    assert weights.shape == (4,) and int(standardised.abs().argmax()) == 2 and float(weights[2]) > 0
    heat = torch.einsum("nchw,c->nhw", maps, weights)
    assert FA.evaluate_localization(list(heat.numpy()), sizes, boxes, quantile=0.9).pointing == 1.0
    with pytest.raises(ValueError, match="need cells inside and outside"):
        FA.box_supervised_weights(maps, sizes, [np.zeros((0, 4))] * 6)
    # a box smaller than a cell, holding no cell centre, still marks the cell of its own centre
    tiny = [np.array([[b[0, 0] + 1, b[0, 1] + 1, b[0, 0] + 3, b[0, 1] + 3]]) for b in boxes]
    assert float(FA.box_supervised_weights(maps, sizes, tiny)[2]) > 0


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


def test_attribute_sentences_and_config():
    texts = ["There is an oval mass in the left breast. No suspicious mass is seen in the right breast. "
             "Fine pleomorphic calcifications in a linear distribution. Benign vascular calcifications are seen."]
    assert FA.attribute_sentences(texts, "mass") == ["there is an oval mass in the left breast"]
    calc = FA.attribute_sentences(texts, "suspicious_calcification")
    assert calc == ["fine pleomorphic calcifications in a linear distribution"]
    with pytest.raises(ValueError, match="unknown key"):
        FA.FactorConfig.from_settings({"learning_rate": 1})
    with pytest.raises(ValueError, match="quantile"):
        FA.FactorConfig.from_settings({"quantile": 1.5})
    with pytest.raises(ValueError, match="stitch must be a positive integer"):
        FA.FactorConfig.from_settings({"stitch": 0})
    assert FA.FactorConfig.from_settings({"attributes": ["mass"]}).attributes == ("mass",)
