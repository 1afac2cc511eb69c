"""Robustness shifts: identity at severity 0, deterministic for a seed, monotone in severity, dtype preserved."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mammoclip_kit.data.shifts import SHIFTS, ShiftTransform, apply_shift, list_shifts, shift_seed


def _phantom(dtype=np.uint16, height: int = 96, width: int = 64) -> np.ndarray:
    """A breast-like test image: smooth random texture inside an ellipse, dark background, full grey range used."""
    rng = np.random.default_rng(3)
    texture = cv2.GaussianBlur(rng.random((height, width)).astype(np.float32), (0, 0), 3)
    texture = (texture - texture.min()) / (texture.max() - texture.min())
    yy, xx = np.mgrid[0:height, 0:width]
    inside = ((yy - height / 2) / (0.45 * height)) ** 2 + (xx / (0.9 * width)) ** 2 < 1
    unit = np.where(inside, 0.25 + 0.7 * texture, 0.02)
    top = np.iinfo(dtype).max if np.issubdtype(dtype, np.integer) else 1.0
    return (unit * top).astype(dtype)


def _mse(a: np.ndarray, b: np.ndarray) -> float:
    scale = float(np.iinfo(a.dtype).max) if np.issubdtype(a.dtype, np.integer) else 1.0
    return float(np.mean(((a.astype(np.float64) - b.astype(np.float64)) / scale) ** 2))


@pytest.mark.parametrize("name", list_shifts())
def test_shift_identity_dtype_and_determinism(name: str) -> None:
    image = _phantom()
    assert np.array_equal(apply_shift(image, name, 0, seed=1), image)
    top = SHIFTS[name].max_severity
    first = apply_shift(image, name, top, seed=7)
    again = apply_shift(image, name, top, seed=7)
    assert first.dtype == image.dtype and first.shape == image.shape
    assert np.array_equal(first, again)
    if SHIFTS[name].stochastic:
        assert not np.array_equal(first, apply_shift(image, name, top, seed=8))


@pytest.mark.parametrize("name", list_shifts())
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_shift_monotone_in_severity(name: str, dtype) -> None:
    image = _phantom(dtype)
    errors = [_mse(apply_shift(image, name, s, seed=0), image) for s in range(SHIFTS[name].max_severity + 1)]
    assert errors[0] == 0.0
    assert all(b > a for a, b in zip(errors, errors[1:], strict=False)), (name, errors)


def test_hand_computed_values() -> None:
    image = np.array([[0, 64, 128, 255]], dtype=np.uint8)
    # MONOCHROME1 forgotten: 255 - x
    assert apply_shift(image, "monochrome1", 1).tolist() == [[255, 191, 127, 0]]
    # gamma 2.0 at severity 3: round(255 * (x/255)**2)
    expected = np.round(255 * (image / 255.0) ** 2).astype(np.uint8)
    assert np.array_equal(apply_shift(image, "gamma", 3), expected)
    # window narrowing 0.2: low = 0.6 - 0.4 = 0.2, width 0.8 -> (x - 0.2) / 0.8 clipped
    unit = image / 255.0
    expected = np.round(np.clip((unit - 0.2) / 0.8, 0, 1) * 255).astype(np.uint8)
    assert np.array_equal(apply_shift(image, "window", 2), expected)


def test_float_images_keep_their_range() -> None:
    image = _phantom(np.float32) * 1000.0 + 50.0
    shifted = apply_shift(image, "monochrome1", 1)
    assert np.isclose(shifted.min(), image.min()) and np.isclose(shifted.max(), image.max())


def test_bad_arguments_are_named() -> None:
    image = _phantom()
    with pytest.raises(ValueError, match="unknown shift 'blur'"):
        apply_shift(image, "blur", 1)
    with pytest.raises(ValueError, match="severity 9 outside"):
        apply_shift(image, "jpeg", 9)
    with pytest.raises(ValueError, match="2-D"):
        apply_shift(np.zeros((4, 4, 3), np.uint8), "jpeg", 1)
    with pytest.raises(ValueError, match="severity 2 outside"):
        ShiftTransform("monochrome1", 2)


def test_transform_seeds_per_image_key() -> None:
    image = _phantom()
    transform = ShiftTransform("gaussian_noise", 3, seed=5)
    assert np.array_equal(transform(image, "img-a"), transform(image, "img-a"))
    assert not np.array_equal(transform(image, "img-a"), transform(image, "img-b"))
    assert shift_seed(5, "img-a") == shift_seed(5, "img-a") != shift_seed(6, "img-a")
    assert transform.key == "gaussian_noise@3#seed5"
