"""Mammo-FActOR data: report sentences that state an attribute, labels and boxes per image."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from mammoclip_kit import factor as FA


def test_attribute_sentences_keep_stated_findings_only():
    texts = ["There is an oval mass in the left breast. No suspicious mass is seen in the right breast. "
             "Fine pleomorphic calcifications in a linear distribution. Benign vascular calcifications are seen."]
    assert FA.attribute_sentences(texts, "mass") == ["there is an oval mass in the left breast"]
    calc = FA.attribute_sentences(texts, "suspicious_calcification")
    assert calc == ["fine pleomorphic calcifications in a linear distribution"]
    assert FA.attribute_sentences(texts * 3 + [None], "mass", max_sentences=1) == [
        "there is an oval mass in the left breast"]
    with pytest.raises(ValueError, match="unknown attribute"):
        FA.attribute_sentences(texts, "architectural_distortion")


def test_image_labels_and_boxes_per_image():
    frame = pd.DataFrame({"image_id": ["a", "b", "c"], "Mass": [1, 0, np.nan],
                          "Suspicious_Calcification": [0, 1, 1]})
    labels = FA.image_labels(frame, ["suspicious_calcification", "mass"])
    np.testing.assert_array_equal(labels, [[0, 1], [1, 0], [1, 0]])
    with pytest.raises(ValueError, match="missing finding column"):
        FA.image_labels(frame.drop(columns="Mass"), ["mass"])
    boxes = pd.DataFrame({"image_id": ["a", "a", "c"], "finding": ["Mass", "Suspicious Calcification", "Mass"],
                          "png_xmin": [1, 2, 3], "png_ymin": [4, 5, 6], "png_xmax": [7, 8, 9],
                          "png_ymax": [10, 11, 12], "xmin": [10, 20, 30], "ymin": [40, 50, 60],
                          "xmax": [70, 80, 90], "ymax": [100, 110, 120]})
    png = FA.boxes_for(frame, boxes, "mass")
    assert [b.tolist() for b in png] == [[[1, 4, 7, 10]], [], [[3, 6, 9, 12]]]
    assert FA.boxes_for(frame, boxes, "mass", "original")[2].tolist() == [[30, 60, 90, 120]]
    with pytest.raises(ValueError, match="frame_kind"):
        FA.boxes_for(frame, boxes, "mass", "dicom")


def test_stack_attributes_orders_and_names_missing():
    emb = {"mass": torch.tensor([1.0, 0.0]), "suspicious_calcification": torch.tensor([0.0, 1.0])}
    assert FA.stack_attributes(emb, ["suspicious_calcification", "mass"]).tolist() == [[0.0, 1.0], [1.0, 0.0]]
    with pytest.raises(KeyError, match="other"):
        FA.stack_attributes(emb, ["other"])
