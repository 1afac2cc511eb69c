"""Hand-computed checks of mammoclip_kit.eval.metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from mammoclip_kit.eval import metrics as M

# ---------------------------------------------------------------------------------------------------------------- AUC


def test_roc_auc_hand_computed():
    # positives 0.35, 0.8; negatives 0.1, 0.4 -> pairs won: (0.35>0.1), (0.8>0.1), (0.8>0.4) = 3 of 4
    assert M.roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    # a tie counts one half
    assert M.roc_auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    assert M.roc_auc(torch.tensor([1, 0, 1]), torch.tensor([0.9, 0.2, 0.1])) == pytest.approx(0.5)


def test_roc_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.normal(size=200) + y, 1)  # many ties
    assert M.roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_roc_auc_single_class_is_nan_with_warning():
    with pytest.warns(UserWarning, match="only class"):
        assert np.isnan(M.roc_auc([1, 1, 1], [0.1, 0.2, 0.3]))


def test_roc_auc_rejects_bad_input():
    with pytest.raises(ValueError, match="binary"):
        M.roc_auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        M.roc_auc([0, 1], [0.1, float("nan")])
    with pytest.raises(ValueError, match="3 values"):
        M.roc_auc([0, 1, 1], [0.1, 0.2])


# ----------------------------------------------------------------------------------------------------- breast level


def _breast_table() -> pd.DataFrame:
    return pd.DataFrame({
        "patient_id": [1, 1, 1, 2, 2, 3],
        "laterality": ["L", "L", "R", "L", "L", "R"],
        "p": [0.2, 0.6, 0.3, 0.1, 0.5, 0.9],
        "cancer": [0, 1, 0, 0, 0, 1],
    })


def test_breast_level_scores_mean_and_max():
    out = M.breast_level_scores(_breast_table(), "p", "cancer")
    assert list(out["breast_id"]) == ["1_L", "1_R", "2_L", "3_R"]
    np.testing.assert_allclose(out["p"], [0.4, 0.3, 0.3, 0.9])
    assert list(out["cancer"]) == [1, 0, 0, 1]
    assert list(out["n_images"]) == [2, 1, 2, 1]
    # positives 0.4, 0.9 vs negatives 0.3, 0.3 -> all 4 pairs won
    assert M.breast_level_auc(_breast_table(), "p", "cancer") == pytest.approx(1.0)
    # image level for comparison: positives 0.6, 0.9 vs 0.2, 0.3, 0.1, 0.5 -> 8/8
    assert M.roc_auc(_breast_table()["cancer"], _breast_table()["p"]) == pytest.approx(1.0)


def test_breast_level_errors_name_the_column_and_row():
    table = _breast_table()
    with pytest.raises(KeyError, match="'score'"):
        M.breast_level_scores(table, "score", "cancer")
    table.loc[4, "p"] = np.nan
    with pytest.raises(ValueError, match="'p' is missing at row 4"):
        M.breast_level_scores(table, "p", "cancer")


# ------------------------------------------------------------------------------------------------------------ density


def test_density_metrics_known_confusion_matrix():
    y_true = [0, 0, 0, 0, 0, 0, 1, 1, 2, 2]
    y_pred = [0, 0, 0, 0, 0, 1, 1, 1, 2, 0]
    out = M.density_metrics(y_true, y_pred)
    assert out["accuracy"] == pytest.approx(0.8)
    assert out["balanced_accuracy"] == pytest.approx((5 / 6 + 1 + 0.5) / 3)
    # F1 per class: c0 P=5/6 R=5/6; c1 P=2/3 R=1 -> 0.8; c2 P=1 R=0.5 -> 2/3
    assert out["macro_f1"] == pytest.approx((5 / 6 + 0.8 + 2 / 3) / 3)


# ---------------------------------------------------------------------------------------------------------- bootstrap


def test_bootstrap_is_deterministic_and_seed_dependent():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 80)
    s = rng.normal(size=80) + y
    a = M.bootstrap_ci(M.roc_auc, y, s, n_boot=200, seed=1)
    b = M.bootstrap_ci(M.roc_auc, y, s, n_boot=200, seed=1)
    c = M.bootstrap_ci(M.roc_auc, y, s, n_boot=200, seed=2)
    assert a == b
    assert (a.low, a.high) != (c.low, c.high)
    assert a.point == pytest.approx(roc_auc_score(y, s))
    assert a.low < a.point < a.high
    assert a.n_boot == 200


def test_bootstrap_coverage_of_a_mean():
    # the 95 % CI of a mean of n N(0, 1) draws is about ±1.96/sqrt(n)
    x = np.random.default_rng(5).normal(size=400)
    ci = M.bootstrap_ci(np.mean, x, n_boot=1000, seed=0)
    assert ci.low < 0 < ci.high
    assert ci.high - ci.low == pytest.approx(2 * 1.96 / 20, rel=0.15)


def test_bootstrap_groups_resample_whole_patients():
    values = np.arange(10)
    groups = ["a"] + ["b"] * 9  # two patients, of 1 and 9 images
    ci_rows = M.bootstrap_ci(len, values, n_boot=50, seed=0)
    assert (ci_rows.low, ci_rows.high) == (10, 10)  # row resampling keeps n
    ci_groups = M.bootstrap_ci(len, values, n_boot=200, seed=0, groups=groups)
    assert ci_groups.low == 2 and ci_groups.high == 18  # {a,a}, {b,b}: whole patients move together


def test_bootstrap_drops_single_class_replicates():
    y = np.array([0] * 9 + [1])
    s = np.linspace(0, 1, 10)
    ci = M.bootstrap_ci(M.roc_auc, y, s, n_boot=100, seed=0)
    assert 0 < ci.n_boot < 100  # resamples without the one positive have no AUC


# ------------------------------------------------------------------------------------------------------ localisation


def test_box_iou_hand_computed():
    iou = M.box_iou([[0, 0, 2, 2], [0, 0, 1, 1]], [[1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6]])
    np.testing.assert_allclose(iou, [[1 / 7, 1.0, 0.0], [0.0, 0.25, 0.0]])
    with pytest.raises(ValueError, match="box 0"):
        M.box_iou([[2, 0, 1, 1]], [[0, 0, 1, 1]])


def test_voc_ap_uses_the_precision_envelope():
    # recall 0, .5, 1 at precision 0, .5, 2/3: the envelope lifts the first half to 2/3
    assert M.voc_ap([0.0, 0.5, 1.0], [0.0, 0.5, 2 / 3]) == pytest.approx(2 / 3)
    # without the envelope it would be .5*.5 + .5*2/3
    assert M.voc_ap([0.0, 0.5, 1.0], [0.0, 0.5, 2 / 3]) != pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)
    # TP FP TP FP FP with 3 GT: 1/3*1 + 1/3*2/3 + 1/3*0 = 5/9
    assert M.voc_ap([1 / 3, 1 / 3, 2 / 3, 2 / 3, 2 / 3], [1, 0.5, 2 / 3, 0.5, 0.4]) == pytest.approx(5 / 9)


def test_average_precision_hand_computed():
    box_a, box_b, box_c = [0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]
    predictions = [
        (np.array([[0, 0, 10, 10], [0, 0, 10, 10]]), np.array([0.9, 0.6])),  # TP, then duplicate -> FP
        (np.array([[20, 20, 30, 30], [40, 40, 45, 45]]), np.array([0.8, 0.5])),  # TP, IoU .25 -> FP
    ]
    ground_truth = [np.array([box_a]), np.array([box_b, box_c])]
    res = M.average_precision_at_iou(predictions, ground_truth, iou_threshold=0.5)
    # global order .9 TP, .8 TP, .6 FP, .5 FP; n_gt = 3
    np.testing.assert_allclose(res.recall, [1 / 3, 2 / 3, 2 / 3, 2 / 3])
    np.testing.assert_allclose(res.precision, [1, 1, 2 / 3, 0.5])
    assert res.ap == pytest.approx(2 / 3)
    assert res.n_gt == 3 and res.n_det == 4
    # at IoU 0.25 the small box matches box_c: recall reaches 1 with precision 3/4
    res25 = M.average_precision_at_iou(predictions, ground_truth, iou_threshold=0.25)
    assert res25.ap == pytest.approx(2 / 3 + 1 / 3 * 0.75)
    # a score threshold drops the .5 detection; a cap of one per image drops .6 and .5
    assert M.average_precision_at_iou(predictions, ground_truth, score_threshold=0.55).n_det == 3
    assert M.average_precision_at_iou(predictions, ground_truth, max_detections=1).n_det == 2


def test_average_precision_matches_argmax_ground_truth_only():
    # both detections' best box is g1; the second is FP although its IoU with g2 is 100/120 >= 0.5
    # (docs/reference-notes.md §8.4)
    predictions = [(np.array([[0, 0, 10, 10], [0, 0, 10, 10]]), np.array([0.9, 0.8]))]
    ground_truth = [np.array([[0, 0, 10, 10], [0, 0, 10, 12]])]
    res = M.average_precision_at_iou(predictions, ground_truth)
    np.testing.assert_allclose(res.precision, [1.0, 0.5])
    assert res.ap == pytest.approx(0.5)


def test_average_precision_without_ground_truth_is_nan():
    with pytest.warns(UserWarning, match="no ground-truth"):
        res = M.average_precision_at_iou([(np.array([[0, 0, 1, 1]]), np.array([0.5]))], [np.zeros((0, 4))])
    assert np.isnan(res.ap)


def test_pointing_game():
    heat = np.zeros((10, 10))
    heat[2, 7] = 1.0  # x = 7, y = 2
    out = M.pointing_game([heat, (0, 0), (5, 5)], [[[6, 1, 8, 3]], [[1, 1, 2, 2]], np.zeros((0, 4))])
    assert out == pytest.approx(0.5)  # hit, miss, skipped


# --------------------------------------------------------------------------------------------------------- retrieval


def test_retrieval_identity_and_permutation():
    images = np.eye(3)
    perfect = M.retrieval_metrics(images, images, ks=(1, 2))
    assert perfect["image_to_text_R@1"] == 1.0 and perfect["text_to_image_mean_rank"] == 1.0
    # texts paired with a permutation that swaps rows 1 and 2: ranks 1, 2, 2 in both directions
    out = M.retrieval_metrics(images, images[[0, 2, 1]], ks=(1, 2))
    for direction in ("image_to_text", "text_to_image"):
        assert out[f"{direction}_R@1"] == pytest.approx(1 / 3)
        assert out[f"{direction}_R@2"] == pytest.approx(1.0)
        assert out[f"{direction}_mean_rank"] == pytest.approx(5 / 3)
        assert out[f"{direction}_median_rank"] == pytest.approx(2.0)


def test_retrieval_merges_duplicated_texts():
    images = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    texts = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # rows 0 and 1 are the same report
    out = M.retrieval_metrics(images, texts, ks=(1,), text_ids=["a", "a", "b"])
    assert out["n_texts"] == 2.0
    assert out["image_to_text_R@1"] == 1.0
    # without merging, image 1 would compete between two identical texts (tie -> rank 1, still) but the gallery has 3
    assert M.retrieval_metrics(images, texts, ks=(1,))["n_texts"] == 3.0
    # text 'a' -> images 0 and 1 are both correct; text 'b' -> image 2
    assert out["text_to_image_R@1"] == 1.0
    with pytest.raises(ValueError, match="paired"):
        M.retrieval_metrics(images, texts[:2])
