"""Pretraining datasets (data.datasets) and the image augmentation (data.transforms): sampling with 1, 2, 3 files per
view, texts, determinism, resize, errors."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from mammoclip_kit.data.datasets import (
    ImageLabelDataset,
    ImageTextDataset,
    MixedDataset,
    PairCollate,
    sample_texts,
)
from mammoclip_kit.data.transforms import ImageAugmentConfig, augment

H, W = 20, 12


def _png(root: Path, rel: str, value: int, size: tuple[int, int] = (H, W)) -> str:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.zeros(size, np.uint8)
    image[2:-2, 2:-2] = value  # a frame of zeros keeps min-max scaling informative
    cv2.imwrite(str(path), image)
    return rel


def _rows(root: Path, n_files: int) -> pd.DataFrame:
    cc = [_png(root, f"png/p1/cc{i}.png", 10 + i) for i in range(n_files)]
    mlo = [_png(root, f"png/p1/mlo{i}.png", 100 + i) for i in range(n_files)]
    return pd.DataFrame([{"patient_id": "p1", "laterality": "L", "views": ["CC", "MLO"], "CC": cc, "MLO": mlo,
                          "text": ["finding a", "impression b"], "text_augment": ["aug a", "aug b"], "fold": 1}])


def _ident(image: torch.Tensor) -> float:
    return round(float(image[0, H // 2, W // 2]), 4)


@pytest.mark.parametrize("n_files", [1, 2, 3])
def test_two_distinct_views_in_random_order(tmp_path: Path, n_files: int) -> None:
    ds = ImageTextDataset(_rows(tmp_path, n_files), tmp_path, (H, W), train=True, seed=0)
    orders, used = Counter(), set()
    for epoch in range(60):
        ds.set_epoch(epoch)
        files = ds[0]["files"]
        views = tuple("CC" if "/cc" in f else "MLO" for f in files)
        assert views in {("CC", "MLO"), ("MLO", "CC")}
        orders[views] += 1
        used.update(files)
    assert orders[("CC", "MLO")] > 10 and orders[("MLO", "CC")] > 10
    assert len(used) == 2 * n_files  # every file of every view gets drawn


@pytest.mark.parametrize("n_files", [1, 2, 3])
def test_single_view_files(tmp_path: Path, n_files: int) -> None:
    rows = _rows(tmp_path, n_files).assign(views=[["CC"]], MLO=[[]])
    train = ImageTextDataset(rows, tmp_path, (H, W), train=True, seed=1)
    for epoch in range(10):
        train.set_epoch(epoch)
        files = train[0]["files"]
        assert all("/cc" in f for f in files)
        assert (files[0] != files[1]) == (n_files > 1)  # distinct files if possible, else one re-augmented
    valid = ImageTextDataset(rows, tmp_path, (H, W), train=False, seed=1)
    sample = valid[0]
    assert sample["files"][0] == sample["files"][1]
    assert torch.equal(sample["image"], sample["image2"])  # validation: no augmentation


def test_texts_follow_spec(tmp_path: Path) -> None:
    ds = ImageTextDataset(_rows(tmp_path, 1), tmp_path, (H, W), train=True, seed=0)
    seen = Counter()
    for epoch in range(200):
        ds.set_epoch(epoch)
        s = ds[0]
        seen.update([s["text"], s["text2"]])
    assert set(seen) == {"finding a", "impression b", "aug a", "aug b"}
    assert all(60 < c < 140 for c in seen.values())  # 400 draws, 1/4 each
    rng = np.random.default_rng(0)
    for _ in range(20):  # one text: always (orig, aug) or (aug, orig)
        assert set(sample_texts(["only"], ["only aug"], rng)) == {"only", "only aug"}
    assert sample_texts(["x", "y"], [], rng)[0] in {"x", "y"}  # no augmented text: originals


def test_determinism_and_resize(tmp_path: Path) -> None:
    rows = _rows(tmp_path, 2)
    _png(tmp_path, "png/p1/cc0.png", 10, size=(40, 24))  # a PNG of another size is resized
    a = ImageTextDataset(rows, tmp_path, (H, W), train=True, seed=3)
    b = ImageTextDataset(rows, tmp_path, (H, W), train=True, seed=3, cache_images=True)
    a.set_epoch(2), b.set_epoch(2)
    sa, sb = a[0], b[0]
    assert sa["image"].shape == (3, H, W) and sa["image"].dtype == torch.float32
    assert torch.equal(sa["image"], sb["image"]) and sa["text"] == sb["text"]
    b.set_epoch(3)
    assert [b[0]["files"], b[0]["text"]] == [b[0]["files"], b[0]["text"]]
    valid = ImageTextDataset(rows, tmp_path, (H, W), train=False, seed=3)
    first = valid[0]
    valid.set_epoch(7)
    assert torch.equal(first["image"], valid[0]["image"]) and first["text"] == valid[0]["text"]


def test_augment_random_per_call_and_normalised() -> None:
    image = np.zeros((64, 40), np.uint8)
    image[10:50, 8:30] = 200
    rng = np.random.default_rng(0)
    always = ImageAugmentConfig(hflip_p=0, vflip_p=0, affine_p=1, elastic_p=1)
    outs = [augment(image, rng, always) for _ in range(3)]
    assert all(o.shape == image.shape for o in outs)
    assert not np.array_equal(outs[0], outs[1]) and not np.array_equal(outs[1], outs[2])
    flip = augment(image, np.random.default_rng(0), ImageAugmentConfig(hflip_p=1, vflip_p=0, affine_p=0, elastic_p=0))
    assert np.array_equal(flip, image[:, ::-1])


def test_label_dataset_and_mix(tmp_path: Path) -> None:
    rows = _rows(tmp_path, 1).drop(columns=["text", "text_augment"]).assign(
        CC_findings=[["Mass"]], MLO_findings=[["No Finding"]], split="training")

    def label_to_text(findings, laterality, rng):
        return f"{'left' if laterality == 'L' else 'right'}: {', '.join(findings)} {'r' if rng is not None else 'd'}"

    ds = ImageLabelDataset(rows, tmp_path, (H, W), train=True, label_to_text=label_to_text)
    for epoch in range(8):
        ds.set_epoch(epoch)
        s = ds[0]
        first_view = "CC" if "/cc" in s["files"][0] else "MLO"
        expected = "left: Mass r" if first_view == "CC" else "left: No Finding r"
        assert s["text"] == expected and s["text2"] != s["text"]
    text_ds = ImageTextDataset(_rows(tmp_path, 1), tmp_path, (H, W), train=True)
    mixed = MixedDataset([text_ds, ds])
    mixed.set_epoch(5)
    assert len(mixed) == 2 and ds.epoch == 5 and text_ds.epoch == 5

    def tok(texts):
        return {"input_ids": torch.tensor([[len(t)] for t in texts])}

    batch = PairCollate(tok)([mixed[0], mixed[1]])
    assert batch["image"].shape == (2, 3, H, W) and batch["tokens2"]["input_ids"].shape == (2, 1)
    assert batch["source"] == ["reports", "vindr"]


def test_bad_rows_name_row_and_column(tmp_path: Path) -> None:
    rows = _rows(tmp_path, 1)
    with pytest.raises(ValueError, match="row 0, column 'text': no non-empty text"):
        ImageTextDataset(rows.assign(text=[[" "]]), tmp_path, (H, W), train=True)
    with pytest.raises(ValueError, match="row 0, column 'CC': expected a list"):
        ImageTextDataset(rows.assign(CC="cc0.png"), tmp_path, (H, W), train=True)
    with pytest.raises(FileNotFoundError, match="nope.png"):
        ImageTextDataset(rows.assign(CC=[["nope.png"]], views=[["CC"]]), tmp_path, (H, W), train=False)[0]
