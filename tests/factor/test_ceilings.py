"""Mammo-FActOR ceilings: box oracle, channel hit rates, box-supervised weights and the table of methods × grids."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from mammoclip_kit import factor as FA

torch.set_num_threads(1)


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


def _two_grids():
    """Two 40 × 40 images with one box each, on a 4 × 4 tower grid and an 8 × 8 finer grid of the same channels.

    Tower grid: channel 0 peaks in the box cell of both images, channel 1 in one of them, channel 2 at the corner.
    Finer grid: channels 0 and 1 swap roles.
    """
    sizes = [(40, 40), (40, 40)]
    boxes = [np.array([[10.0, 10.0, 20.0, 20.0]]), np.array([[20.0, 30.0, 30.0, 40.0]])]
    tower = torch.zeros(2, 3, 4, 4)
    tower[0, 0, 1, 1] = tower[1, 0, 3, 2] = 1.0
    tower[0, 1, 1, 1] = tower[1, 1, 0, 3] = 1.0
    tower[:, 2, 0, 0] = 1.0
    fine = tower[:, [1, 0, 2]].repeat_interleave(2, 2).repeat_interleave(2, 3)
    return sizes, boxes, tower, fine


def test_localisation_table_rows_are_keyed_by_grid_and_method():
    sizes, boxes, tower, fine = _two_grids()
    grids = {"tower": FA.FeatureGrid(tower, {"factor": tower[:, 2], "gradcam": tower[:, 0]}, tower, "4×4 (tower)"),
             "stitched": FA.FeatureGrid(fine, {"gradcam": fine[:, 1], "factor": fine[:, 2]}, fine)}
    table = FA.localisation_table(grids, sizes, boxes, fit_sizes=sizes, fit_boxes=boxes,
                                  labels={"factor": "FActOR (top 1)"}, quantile=0.95)
    assert list(table.columns) == list(FA.TABLE_COLUMNS)
    assert list(zip(table["grid"], table["method"], strict=True)) == [
        ("tower", "box_oracle"), ("tower", "best_channel"), ("tower", "box_supervised"), ("tower", "factor"),
        ("tower", "gradcam"), ("stitched", "box_oracle"), ("stitched", "best_channel"),
        ("stitched", "box_supervised"), ("stitched", "gradcam"), ("stitched", "factor")]
    rows = table.set_index(["grid", "method"])
    assert rows.loc[("tower", "box_oracle"), "grid_label"] == "4×4 (tower)"
    assert rows.loc[("stitched", "box_oracle"), "grid_label"] == "8×8"
    assert rows.loc[("tower", "factor"), "heatmap"] == "FActOR (top 1)" and rows.loc[("tower", "gradcam"),
                                                                                       "heatmap"] == "gradcam"
    # the best channel is found per grid: channel 0 on the tower grid, channel 1 on the finer one
    assert rows.loc[("tower", "best_channel"), "channel"] == 0 and rows.loc[("stitched", "best_channel"), "channel"] == 1
    assert rows.loc[("tower", "best_channel"), "hit rate"] == 1.0
    assert "best single channel 1" in rows.loc[("stitched", "best_channel"), "heatmap"]
    assert np.isnan(rows.loc[("tower", "box_oracle"), "hit rate"]) and pd.isna(rows.loc[("tower", "factor"), "channel"])
    for grid in grids:
        # ceilings and the channel that marks the boxes point at both boxes; the corner channel at neither
        for method in ("box_oracle", "best_channel", "box_supervised", "gradcam"):
            assert rows.loc[(grid, method), "pointing game"] == 1.0, (grid, method)
        assert rows.loc[(grid, "factor"), "pointing game"] == 0.0
        assert rows.loc[(grid, "factor"), "mAP@0.25"] == 0.0
    assert rows.loc[("stitched", "box_oracle"), "mAP@0.25"] == 1.0
    metrics = FA.ceiling_metrics(table)
    assert set(metrics) == {f"{name}_{grid}" for grid in grids for name in (
        "oracle_map25", "oracle_pointing", "best_channel_pointing", "supervised_map25", "supervised_pointing")}
    assert metrics["best_channel_pointing_tower"] == 1.0 and metrics["oracle_map25_stitched"] == 1.0
    assert metrics["oracle_map25_tower"] == rows.loc[("tower", "box_oracle"), "mAP@0.25"]


def test_localisation_table_without_fit_maps_and_its_errors():
    sizes, boxes, tower, _ = _two_grids()
    table = FA.localisation_table({"tower": FA.FeatureGrid(tower)}, sizes, boxes)
    assert table["method"].tolist() == ["box_oracle", "best_channel"]
    assert set(FA.ceiling_metrics(table)) == {"oracle_map25_tower", "oracle_pointing_tower",
                                              "best_channel_pointing_tower"}
    with pytest.raises(ValueError, match="fit_sizes / fit_boxes are missing"):
        FA.localisation_table({"tower": FA.FeatureGrid(tower, fit_maps=tower)}, sizes, boxes)
    with pytest.raises(ValueError, match="is a ceiling"):
        FA.localisation_table({"tower": FA.FeatureGrid(tower, {"box_oracle": tower[:, 0]})}, sizes, boxes)
    with pytest.raises(ValueError, match="1 heatmaps for 2 images"):
        FA.localisation_table({"tower": FA.FeatureGrid(tower, {"factor": tower[:1, 0]})}, sizes, boxes)
    with pytest.raises(ValueError, match="needs maps"):
        FA.localisation_table({"tower": FA.FeatureGrid(tower[:1])}, sizes, boxes)
    with pytest.raises(ValueError, match="no grids"):
        FA.localisation_table({}, sizes, boxes)


def test_chance_and_alignment_agreement():
    mask = np.ones((40, 40), dtype=bool)
    half = mask.copy()
    half[:20] = False
    boxes = [np.array([[0.0, 0.0, 10.0, 10.0]]), np.array([[0.0, 20.0, 10.0, 30.0], [10.0, 20.0, 20.0, 30.0]])]
    assert FA.chance_pointing(boxes, [mask, half]) == pytest.approx((100 / 1600 + 200 / 800) / 2)
    agreement = FA.alignment_agreement(torch.tensor([0.9, 0.1, 0.5]), np.array([0.0, 1.0, 0.5]), [0])
    assert agreement == {"factor_top_channels_pointing": 0.0, "alignment_vs_hits_spearman": pytest.approx(-1.0)}
    assert FA.alignment_agreement([0.1, 0.2, 0.3], [0.0, 0.5, 1.0], [1, 2])["factor_top_channels_pointing"] == 0.75
    with pytest.raises(ValueError, match="one length"):
        FA.alignment_agreement([0.1, 0.2], [0.0, 0.5, 1.0], [0])
