"""Detection data: the paper's image selection, box-consistent augmentation and the dataset
(docs/reference-notes.md §8.4).

The paper trains one detector per finding on the VinDr images that contain at least one box of that finding, with
flips and a random affine transform (rotate ±20°, translate ±10 %, scale 0.8–1.2, shear ±20°) plus an elastic warp.
:class:`BoxAugment` reproduces flips and the affine part with OpenCV and moves the boxes with the image; the elastic warp
is left out (it barely moves boxes and is the slowest step on a CPU).

Boxes under an affine map: a lesion is roughly an ellipse, so the new box is the bounding box of the *inscribed ellipse*
after the map (``half-width' = sqrt((A00·a)² + (A01·b)²)``, likewise for the height). The corner rule used by imgaug
encloses the rotated rectangle instead and inflates a round lesion's box by up to √2 at 45°.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from mammoclip_kit.data.transforms import load_image, resize_to, to_model_input

BOX_COLUMNS: tuple[str, ...] = ("png_xmin", "png_ymin", "png_xmax", "png_ymax")


def finding_key(name: str) -> str:
    """Normalise a finding name (``Suspicious Calcification`` ≡ ``Suspicious_Calcification``)."""
    return str(name).strip().replace(" ", "_").lower()


@dataclass
class BoxAugment:
    """The paper's geometric training augmentation; every field is a probability or a range (0 disables it)."""

    hflip: float = 0.5
    vflip: float = 0.5
    affine_p: float = 1.0
    rotate: float = 20.0
    translate: float = 0.1
    scale: tuple[float, float] = (0.8, 1.2)
    shear: float = 20.0
    min_visible: float = 0.5

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["scale"] = list(self.scale)
        return data

    def matrix(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        """A random 2×3 affine matrix (flips included) about the image centre, in pixel coordinates."""
        cx, cy = width / 2.0, height / 2.0
        m = np.eye(3)
        if rng.random() < self.hflip:
            m = np.array([[-1.0, 0, width], [0, 1, 0], [0, 0, 1]]) @ m
        if rng.random() < self.vflip:
            m = np.array([[1.0, 0, 0], [0, -1, height], [0, 0, 1]]) @ m
        if rng.random() < self.affine_p:
            angle = math.radians(rng.uniform(-self.rotate, self.rotate))
            shear = math.radians(rng.uniform(-self.shear, self.shear))
            scale = rng.uniform(*self.scale)
            tx = rng.uniform(-self.translate, self.translate) * width
            ty = rng.uniform(-self.translate, self.translate) * height
            to_origin = np.array([[1.0, 0, -cx], [0, 1, -cy], [0, 0, 1]])
            rot = np.array([[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]])
            shr = np.array([[1.0, math.tan(shear), 0], [0, 1, 0], [0, 0, 1]])
            scl = np.diag([scale, scale, 1.0])
            back = np.array([[1.0, 0, cx + tx], [0, 1, cy + ty], [0, 0, 1]])
            m = back @ rot @ shr @ scl @ to_origin @ m
        return m[:2]

    def __call__(self, image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator,
                 tries: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Warp ``image`` and move ``boxes`` (N×4, x0 y0 x1 y1) with it; keeps boxes mostly inside the image.

        A draw that pushes any box below ``min_visible`` of its area out of the image is rejected and redrawn; after
        ``tries`` rejections the input is returned unchanged.
        """
        import cv2

        h, w = image.shape[:2]
        for _ in range(tries):
            m = self.matrix(rng, h, w)
            moved = transform_boxes(boxes, m)
            clipped = clip_boxes(moved, h, w)
            area = _area(moved)
            if len(boxes) and np.any(_area(clipped) < self.min_visible * np.maximum(area, 1e-6)):
                continue
            warped = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                    borderValue=0)
            return warped, clipped
        return image, boxes


def _area(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def transform_boxes(boxes: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Boxes (N×4) after the 2×3 affine ``matrix``: bounding boxes of their inscribed ellipses (module docstring)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    a = matrix[:, :2]
    centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
    half = np.stack([(boxes[:, 2] - boxes[:, 0]) / 2, (boxes[:, 3] - boxes[:, 1]) / 2], axis=1)
    new_c = centres @ a.T + matrix[:, 2]
    hw = np.sqrt((a[0, 0] * half[:, 0]) ** 2 + (a[0, 1] * half[:, 1]) ** 2)
    hh = np.sqrt((a[1, 0] * half[:, 0]) ** 2 + (a[1, 1] * half[:, 1]) ** 2)
    return np.stack([new_c[:, 0] - hw, new_c[:, 1] - hh, new_c[:, 0] + hw, new_c[:, 1] + hh], axis=1)


def clip_boxes(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Clip boxes to the image ``[0, width] × [0, height]``."""
    out = np.asarray(boxes, dtype=np.float64).copy().reshape(-1, 4)
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, width)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, height)
    return out


def select_finding_images(images: pd.DataFrame, boxes: pd.DataFrame, finding: str,
                          splits: Sequence[str] | None = None,
                          strict: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The paper's protocol: keep only the images with ≥ 1 box of ``finding`` (and their boxes of that finding).

    ``images`` is ``vindr_images.csv`` (``image_id``, ``patient_id``, ``split``, ``png_path``), ``boxes`` is
    ``vindr_boxes.csv`` (``image_id``, ``finding``, ``png_xmin..png_ymax``). Raises naming the table, row and column
    when a box is malformed or (with ``strict``, for the full tables) points at an image missing from ``images``.
    """
    for col in ("image_id", "patient_id", "split", "png_path"):
        if col not in images.columns:
            raise ValueError(f"vindr_images table: missing column {col!r}")
    for col in ("image_id", "finding", *BOX_COLUMNS):
        if col not in boxes.columns:
            raise ValueError(f"vindr_boxes table: missing column {col!r}")
    picked = boxes[boxes["finding"].map(finding_key) == finding_key(finding)].copy()
    coords = picked[list(BOX_COLUMNS)].apply(pd.to_numeric, errors="coerce")
    bad = coords.isna().any(axis=1) | (coords["png_xmax"] <= coords["png_xmin"]) | (
        coords["png_ymax"] <= coords["png_ymin"])
    if bad.any():
        row = picked.index[bad.to_numpy()][0]
        raise ValueError(f"vindr_boxes row {row} (image_id {picked.loc[row, 'image_id']}): invalid box "
                         f"{picked.loc[row, list(BOX_COLUMNS)].tolist()} (need numbers with xmax > xmin, ymax > ymin)")
    picked[list(BOX_COLUMNS)] = coords.astype(float)
    images = images.copy()
    images["image_id"] = images["image_id"].astype(str)
    picked["image_id"] = picked["image_id"].astype(str)
    unknown = sorted(set(picked["image_id"]) - set(images["image_id"]))
    if unknown and strict:
        raise ValueError(f"vindr_boxes: image_id {unknown[0]!r} (and {len(unknown) - 1} more) not in vindr_images")
    keep = images[images["image_id"].isin(set(picked["image_id"]))]
    if splits is not None:
        keep = keep[keep["split"].isin(list(splits))]
    keep = keep.reset_index(drop=True)
    return keep, picked[picked["image_id"].isin(set(keep["image_id"]))].reset_index(drop=True)


class DetectionDataset(Dataset):
    """Images containing one finding and their boxes, as ``(image 3×H×W, target, image_id)``.

    ``target`` is torchvision's dict ``{"boxes": float N×4 (x0, y0, x1, y1 in input pixels), "labels": int64 N}`` with
    label 0 for the finding. Images are read from ``root / png_path``, resized to ``image_size`` (boxes scaled with
    them), augmented when ``augment`` is given, then passed through the kit's one inference transform
    (:func:`~mammoclip_kit.data.transforms.to_model_input`). Augmentation is seeded by ``(seed, epoch, index)``, so a
    run repeats exactly whatever the number of loader workers; call :meth:`set_epoch` each epoch.
    """

    def __init__(self, images: pd.DataFrame, boxes: pd.DataFrame, root: str | Path, finding: str,
                 image_size: Sequence[int] | None = None, augment: BoxAugment | None = None, seed: int = 0) -> None:
        self.images, self.boxes = select_finding_images(images, boxes, finding, strict=False)
        self.root = Path(root)
        self.finding = finding
        self.image_size = tuple(int(s) for s in image_size) if image_size is not None else None
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0
        grouped = self.boxes.groupby("image_id")[list(BOX_COLUMNS)]
        self._boxes = {image_id: g.to_numpy(dtype=np.float64) for image_id, g in grouped}
        # decoded, resized images: a detector reads each one every epoch (about 60 KB each at 320 x 192)
        self._loaded: dict[int, tuple[np.ndarray, np.ndarray, str]] = {}

    def __len__(self) -> int:
        return len(self.images)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def ground_truth(self) -> pd.DataFrame:
        """All boxes of the dataset in input pixels (after resizing): ``image_id, xmin, ymin, xmax, ymax``."""
        rows = []
        for image_id, path in zip(self.images["image_id"], self.images["png_path"], strict=True):
            scale = self._scale(image_id, path)
            for box in self._boxes[image_id] * scale:
                rows.append({"image_id": image_id, "xmin": box[0], "ymin": box[1], "xmax": box[2], "ymax": box[3]})
        return pd.DataFrame(rows, columns=["image_id", "xmin", "ymin", "xmax", "ymax"])

    def _scale(self, image_id: str, path: str) -> np.ndarray:
        if self.image_size is None:
            return np.ones(4)
        if not hasattr(self, "_sizes"):
            self._sizes: dict[str, tuple[int, int]] = {}
        if image_id not in self._sizes:
            self._sizes[image_id] = load_image(self.root / path).shape[:2]
        h, w = self._sizes[image_id]
        th, tw = self.image_size
        return np.array([tw / w, th / h, tw / w, th / h])

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        """The resized image (before augmentation and normalisation), its boxes and its id (copies: the dataset keeps
        the decoded image for the next epoch)."""
        if index not in self._loaded:
            self._loaded[index] = self._read(index)
        image, boxes, image_id = self._loaded[index]
        return image.copy(), boxes.copy(), image_id

    def _read(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        row = self.images.iloc[index]
        image_id = str(row["image_id"])
        image = load_image(self.root / row["png_path"])
        boxes = self._boxes[image_id].copy()
        if self.image_size is not None:
            h, w = image.shape[:2]
            th, tw = self.image_size
            boxes = boxes * np.array([tw / w, th / h, tw / w, th / h])
            image = resize_to(image, th, tw)
        return image, boxes, image_id

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor], str]:
        image, boxes, image_id = self.load(index)
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            image, boxes = self.augment(image, boxes, rng)
        target = {"boxes": torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                  "labels": torch.zeros(len(boxes), dtype=torch.int64)}
        return to_model_input(image), target, image_id


def collate_detection(batch: list[tuple[torch.Tensor, dict[str, torch.Tensor], str]]):
    """Lists, as torchvision detection models take them: ``(images, targets, image_ids)``."""
    images, targets, ids = zip(*batch, strict=True)
    return list(images), list(targets), list(ids)
