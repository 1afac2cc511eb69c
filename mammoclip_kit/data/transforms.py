"""Image loading and the one inference transform used everywhere (docs/reference-notes.md §6.3).

The released models expect: the preprocessed grayscale PNG repeated to 3 channels, converted to float, min–max scaled
over the whole image, then standardised with the paper's mean and std. :func:`to_model_input` is that recipe; every
dataset, the inference API and the notebooks go through it so that training and evaluation never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

#: Mean and std of the min–max scaled training images (docs/reference-notes.md §1.4, ``base.mean`` /
#: ``base.std``).
PAPER_MEAN = 0.3089279
PAPER_STD = 0.25053555408335154
#: The paper's model input, height × width.
PAPER_SIZE = (1520, 912)


def load_image(path: str | Path) -> np.ndarray:
    """Read a grayscale PNG/JPEG (8- or 16-bit) as a 2-D array, keeping its bit depth.

    Raises ``FileNotFoundError`` / ``ValueError`` naming the file when it is missing or unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"{path}: not a readable image (OpenCV could not decode it)")
    if image.ndim == 3:
        # An RGB(A) export of a grayscale image: keep one channel, as PIL's RGB conversion would repeat it.
        image = cv2.cvtColor(image[..., :3], cv2.COLOR_BGR2GRAY)
    return image


def minmax_scale(image: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] over the whole image; a constant image becomes all zeros (the reference would give NaN)."""
    image = image.astype(np.float32)
    low, high = float(image.min()), float(image.max())
    if high <= low:
        return np.zeros_like(image, dtype=np.float32)
    return (image - low) / (high - low)


def to_model_input(image: np.ndarray, mean: float = PAPER_MEAN, std: float = PAPER_STD) -> torch.Tensor:
    """Grayscale ``H×W`` (any dtype) → float tensor ``3×H×W``: min–max, then ``(x − mean) / std``, 3 channels.

    Matches the reference inference recipe exactly for 8-bit PNGs (min–max over the RGB repeat equals min–max over the
    gray image).
    """
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {tuple(image.shape)}")
    scaled = (minmax_scale(image) - mean) / std
    return torch.from_numpy(np.ascontiguousarray(scaled)).unsqueeze(0).expand(3, -1, -1).contiguous()


def resize_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Area-interpolated resize to ``height × width`` (no-op when the size already matches)."""
    if image.shape[:2] == (height, width):
        return image
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


# ---------------------------------------------------------------------------------------------------------------------
# Training augmentation (docs/reference-notes.md §7.6, with random parameters per call instead of the
# reference's frozen values)
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class ImageAugmentConfig:
    """The paper's training augmentation; each step fires with its own probability and draws fresh parameters.

    ``elastic_alpha`` / ``elastic_sigma`` are in pixels of a 1520-pixel-high image and scale with the image height, so
    a 320×192 classroom image is deformed like the paper's 1520×912 one.
    """

    hflip_p: float = 0.5                          # horizontal flip
    vflip_p: float = 0.5                          # vertical flip
    affine_p: float = 0.5                         # rotate + translate + scale + shear, one warp
    rotate: float = 20.0                          # degrees, uniform in ±rotate
    translate: float = 0.1                        # fraction of width/height, uniform in ±translate per axis
    scale: tuple[float, float] = (0.8, 1.2)       # per-axis scale range (keep_ratio=False, as the reference)
    shear: float = 20.0                           # degrees, uniform in ±shear per axis
    elastic_p: float = 0.5                        # elastic deformation
    elastic_alpha: float = 10.0                   # displacement magnitude (pixels at 1520 rows)
    elastic_sigma: float = 15.0                   # smoothing of the displacement field (pixels at 1520 rows)


def affine_matrix(height: int, width: int, angle: float, tx: float, ty: float, sx: float, sy: float,
                  shear_x: float, shear_y: float) -> np.ndarray:
    """2×3 matrix: about the image centre, scale → shear → rotate, then translate by (tx·W, ty·H)."""
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    a = np.deg2rad(angle)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    shear = np.array([[1.0, np.tan(np.deg2rad(shear_x))], [np.tan(np.deg2rad(shear_y)), 1.0]])
    linear = rot @ shear @ np.diag([sx, sy])
    centre = np.array([cx, cy])
    offset = centre - linear @ centre + np.array([tx * width, ty * height])
    return np.hstack([linear, offset[:, None]]).astype(np.float64)


def random_affine(image: np.ndarray, rng: np.random.Generator, config: ImageAugmentConfig | None = None) -> np.ndarray:
    """One affine warp with parameters drawn from ``config``'s ranges (zero fill, bilinear)."""
    config = config or ImageAugmentConfig()
    h, w = image.shape[:2]
    m = affine_matrix(
        h, w,
        angle=rng.uniform(-config.rotate, config.rotate),
        tx=rng.uniform(-config.translate, config.translate), ty=rng.uniform(-config.translate, config.translate),
        sx=rng.uniform(*config.scale), sy=rng.uniform(*config.scale),
        shear_x=rng.uniform(-config.shear, config.shear), shear_y=rng.uniform(-config.shear, config.shear))
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def random_elastic(image: np.ndarray, rng: np.random.Generator, config: ImageAugmentConfig | None = None) -> np.ndarray:
    """Elastic deformation: uniform(−1, 1) displacement fields, Gaussian-smoothed, × alpha (reflect border)."""
    config = config or ImageAugmentConfig()
    h, w = image.shape[:2]
    factor = h / PAPER_SIZE[0]
    alpha, sigma = config.elastic_alpha * factor, max(config.elastic_sigma * factor, 0.5)
    fields = []
    for _ in range(2):
        noise = rng.uniform(-1.0, 1.0, size=(h, w)).astype(np.float32)
        fields.append(cv2.GaussianBlur(noise, (0, 0), sigmaX=sigma, sigmaY=sigma) * alpha)
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(image, grid_x + fields[0], grid_y + fields[1], interpolation=cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REFLECT_101)


def augment(image: np.ndarray, rng: np.random.Generator, config: ImageAugmentConfig | None = None) -> np.ndarray:
    """The paper's training augmentation on a grayscale ``H×W`` image: flips, affine, elastic (each with its p).

    Every random choice comes from ``rng``, so a dataset that seeds ``rng`` per (seed, epoch, index) is reproducible
    with any number of loader workers and across a resume.
    """
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {tuple(image.shape)}")
    config = config or ImageAugmentConfig()
    out = image
    if rng.random() < config.hflip_p:
        out = out[:, ::-1]
    if rng.random() < config.vflip_p:
        out = out[::-1, :]
    out = np.ascontiguousarray(out)
    if rng.random() < config.affine_p:
        out = random_affine(out, rng, config)
    if rng.random() < config.elastic_p:
        out = random_elastic(out, rng, config)
    return out

