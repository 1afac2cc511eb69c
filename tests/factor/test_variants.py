"""Mammo-FActOR's documented variants and evaluation aids: an earlier stage's map, channel contrast, Grad-CAM on the
same map, the breast mask on a non-zero background, and the patient bootstrap of mAP and the pointing game."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mammoclip_kit import factor as FA

torch.set_num_threads(1)


def test_tissue_mask_ignores_a_non_zero_background():
    image = np.full((6, 4), 3, dtype=np.uint8)  # the cohort's converted PNGs: background 2-5, not 0
    image[2:5, 1:3] = 120
    image[0, 0] = 8  # 5 grey levels above the background: below 5 % of the range (3 + 0.05 · 117 = 8.85)
    mask = FA.tissue_mask(image)
    assert mask.sum() == 6 and mask[2:5, 1:3].all()
    assert not (image > 0).sum() == mask.sum()  # the old rule (> 0) kept the whole frame
    assert not FA.tissue_mask(np.full((3, 3), 7)).any()
    with pytest.raises(ValueError, match="fraction"):
        FA.tissue_mask(image, threshold=1.5)


def test_channel_contrast_keeps_the_channels_that_rise_with_the_finding():
    # channel 0: high on every image (a texture channel); channel 1: high only with the finding; channel 2: lower
    alignment = torch.tensor([[0.9, 0.6, 0.1], [0.9, 0.4, 0.3], [0.9, 0.1, 0.2], [0.9, 0.1, 0.4]])
    labels = np.array([1, 1, 0, 0])
    contrast = FA.channel_contrast(alignment, labels)
    np.testing.assert_allclose(contrast.numpy(), [0.0, 0.4, -0.1], atol=1e-6)
    np.testing.assert_allclose(FA.channel_contrast(alignment, np.ones(4)).numpy(), [0.9, 0.3, 0.25], atol=1e-6)
    assert torch.equal(FA.channel_contrast(alignment, np.zeros(4)), torch.zeros(3))
    with pytest.raises(ValueError, match="alignment must be"):
        FA.channel_contrast(alignment, np.ones(3))
    # one weighting for every image: the heatmap is channel 1's map (the only positive weight)
    maps = torch.zeros(2, 3, 4, 4)
    maps[:, 0] = 1.0
    maps[0, 1, 1, 2] = 2.0
    maps[1, 1, 3, 0] = 2.0
    heat = FA.factor_heatmaps(contrast, maps, top_k=3)
    assert heat.shape == (2, 4, 4)
    assert float(heat[0, 1, 2]) == pytest.approx(2.0) and float(heat[1, 3, 0]) == pytest.approx(2.0)
    assert float(heat[0, 0, 0]) == 0.0


def test_peak_contrast_is_welchs_t_of_the_channel_peaks():
    # channel 0: one bright cell on the images with the finding; channel 1: a uniform shift of the whole map on them
    # (same peak rise, but spread over every cell); channel 2: brighter on the images without it
    maps = torch.zeros(4, 3, 2, 2)
    maps[0, 0, 0, 1], maps[1, 0, 1, 1] = 3.0, 5.0
    maps[:2, 1] = 1.0
    maps[2:, 2, 0, 0] = torch.tensor([2.0, 4.0])
    labels = np.array([1, 1, 0, 0])
    t = FA.peak_contrast(maps, labels)
    # channel 0: peaks (3, 5) vs (0, 0): mean 4, Welch SE sqrt(2/2 + 0/2) = 1 → t = 4
    # channel 1: peaks (1, 1) vs (0, 0): zero variance → difference / 1e-6
    # channel 2: peaks (0, 0) vs (2, 4): −3 / 1 = −3
    assert float(t[0]) == pytest.approx(4.0) and float(t[2]) == pytest.approx(-3.0)
    assert float(t[1]) > 1e5
    # a mask that hides channel 0's bright cell of image 1 lowers that image's peak: (3, 0) vs (0, 0) → t = 1
    masks = torch.ones(4, 2, 2, dtype=torch.bool)
    masks[1, 1, 1] = False
    assert float(FA.peak_contrast(maps, labels, masks)[0]) == pytest.approx(1.0)
    assert torch.equal(FA.peak_contrast(maps, np.ones(4)), torch.zeros(3))
    with pytest.raises(ValueError, match="maps must be"):
        FA.peak_contrast(maps, np.ones(3))


def _lite0():
    from mammoclip_kit.models.towers import TimmImageTower

    torch.manual_seed(0)
    return TimmImageTower("tf_efficientnet_lite0").eval()


def test_an_earlier_stage_map_and_gradcam_through_the_rest_of_the_tower():
    tower = _lite0()
    x = torch.randn(1, 3, 64, 32)
    assert FA.tap_for_stride(tower, 8) == 2 and FA.tap_for_stride(tower, 16) == 3
    with torch.no_grad():
        fine = FA.tower_map(tower, x, 8)
        assert fine.shape == (1, 40, 8, 4)
        assert torch.equal(FA.tower_map(tower, x), tower.forward_features(x))
        # the head continues from the stride-8 map to the tower's pooled features
        head = FA.gradcam_head(tower, 8)
        torch.testing.assert_close(head(fine), tower(x), rtol=1e-4, atol=1e-5)
    assert FA.gradcam_head(tower, None) is None
    with pytest.raises(ValueError, match="stride 64"):
        FA.tap_for_stride(tower, 64)


def test_feature_maps_at_a_stride_are_cached_apart(tmp_path):
    import cv2

    tower = _lite0()
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), (np.arange(64 * 32) % 251).reshape(64, 32).astype(np.uint8))
    last, sizes = FA.feature_maps(tower, [path], cache_dir=tmp_path, progress=False)
    fine, _ = FA.feature_maps(tower, [path], cache_dir=tmp_path, progress=False, stride=8)
    assert sizes == [(64, 32)] and last.shape == (1, 1280, 2, 1) and fine.shape == (1, 40, 8, 4)
    assert len(list(tmp_path.glob("factor_maps_*.pt"))) == 2


def _result(hits_on: list[bool]) -> FA.LocalizationResult:
    """Four 10×10 images with one box each; a blob on the box where ``hits_on[i]``, else in the far corner."""
    heats, boxes = [], []
    for hit in hits_on:
        heat = np.zeros((10, 10))
        if hit:
            heat[1:3, 1:3] = 1.0
        else:
            heat[7:9, 7:9] = 1.0
        heats.append(heat)
        boxes.append(np.array([[10.0, 10.0, 30.0, 30.0]]))
    return FA.evaluate_localization(heats, [(100, 100)] * len(heats), boxes, quantile=0.95)


def test_localization_bootstrap_points_intervals_and_paired_differences():
    good, poor = _result([True, True, True, False]), _result([False, True, False, False])
    assert list(good.hits) == [1, 1, 1, 0] and good.pointing == 0.75 and len(good.truth) == 4
    boot = FA.localization_bootstrap({"good": good, "poor": poor}, ["p1", "p1", "p2", "p3"], n_boot=200, seed=0)
    assert boot.n_images == 4 and boot.n_patients == 3
    assert boot.point["good"]["map"] == pytest.approx(good.map25) and good.map25 == pytest.approx(0.75)
    assert boot.point["poor"]["pointing"] == pytest.approx(0.25)
    value, low, high = boot.interval("good", "pointing")
    assert value == 0.75 and 0.0 <= low <= value <= high <= 1.0
    diff, low, high = boot.difference("good", "poor", "pointing")
    assert diff == pytest.approx(0.5) and low >= 0.0  # good hits wherever poor does: never below it on a resample
    table = boot.table()
    assert list(table["method"]) == ["good", "poor"] and "map_low" in table
    with pytest.raises(ValueError, match="patients given"):
        FA.localization_bootstrap({"good": good}, ["p1", "p2"])


def test_config_checks_the_variant_settings():
    assert FA.FactorConfig(stride=8, channel_weights="contrast").stride == 8
    with pytest.raises(ValueError, match="stride"):
        FA.FactorConfig(stride=12)
    with pytest.raises(ValueError, match="channel_weights"):
        FA.FactorConfig(channel_weights="boxes")


def test_tissue_mask_margin_leaves_out_the_skin_line():
    image = np.zeros((12, 10), dtype=np.uint8)
    image[2:10, 0:8] = 200  # the breast touches the left border of the image
    assert FA.tissue_mask(image).sum() == 64
    eroded = FA.tissue_mask(image, margin=2)
    assert eroded.sum() == 4 * 4 and eroded[4:8, 2:6].all()  # 2 px off every side, the image border included
    with pytest.raises(ValueError, match="margin"):
        FA.tissue_mask(image, margin=-1)
