"""Robustness shifts: identity at severity 0, deterministic for a seed, dtype preserved, and each severity monotone on
the physical statistic its spec names and on the model-view PSNR — on a phantom and on the kit's own cohort images."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mammoclip_kit.data.shifts import (
    SHIFTS,
    STATISTICS,
    ShiftTransform,
    apply_shift,
    image_statistics,
    list_shifts,
    shift_seed,
)


def _phantom(dtype=np.uint16, height: int = 96, width: int = 64) -> np.ndarray:
    """A breast-like test image: smooth random texture inside an ellipse, dark background, full grey range used."""
    rng = np.random.default_rng(3)
    texture = cv2.GaussianBlur(rng.random((height, width)).astype(np.float32), (0, 0), 3)
    texture = (texture - texture.min()) / (texture.max() - texture.min())
    yy, xx = np.mgrid[0:height, 0:width]
    inside = ((yy - height / 2) / (0.45 * height)) ** 2 + (xx / (0.9 * width)) ** 2 < 1
    unit = np.where(inside, 0.25 + 0.75 * texture, 0.02)
    top = np.iinfo(dtype).max if np.issubdtype(dtype, np.integer) else 1.0
    return (unit * top).astype(dtype)


def _monotone(values: list[float], increasing: bool) -> bool:
    """Non-decreasing (or non-increasing) and the last level strictly past the first."""
    steps = np.diff(values) if increasing else -np.diff(values)
    return bool(np.all(steps >= -1e-9) and (values[-1] - values[0]) * (1 if increasing else -1) > 0)


def _curves(image: np.ndarray, name: str, seed: int = 0) -> tuple[list[float], list[float]]:
    """(the spec's statistic, PSNR) at severities 1..k."""
    spec = SHIFTS[name]
    stats = [image_statistics(image, apply_shift(image, name, s, seed=seed)) for s in range(1, spec.max_severity + 1)]
    return [st[spec.statistic] for st in stats], [st["psnr_db"] for st in stats]


@pytest.mark.parametrize("name", list_shifts())
def test_shift_identity_dtype_and_determinism(name: str) -> None:
    image = _phantom()
    assert np.array_equal(apply_shift(image, name, 0, seed=1), image)
    top = SHIFTS[name].max_severity
    first = apply_shift(image, name, top, seed=7)
    again = apply_shift(image, name, top, seed=7)
    assert first.dtype == image.dtype and first.shape == image.shape
    assert np.array_equal(first, again)
    assert not np.array_equal(first, image)
    if SHIFTS[name].stochastic:
        assert not np.array_equal(first, apply_shift(image, name, top, seed=8))


def test_every_spec_names_a_known_statistic() -> None:
    for spec in SHIFTS.values():
        assert spec.statistic in STATISTICS, spec.name
        assert spec.models, spec.name


@pytest.mark.parametrize("name", list_shifts())
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_shift_monotone_on_its_statistic_on_a_phantom(name: str, dtype) -> None:
    image = _phantom(dtype)
    statistic, psnr = _curves(image, name)
    spec = SHIFTS[name]
    if spec.max_severity > 1:
        assert _monotone(statistic, spec.increasing), (name, spec.statistic, statistic)
        assert _monotone(psnr, increasing=False), (name, psnr)
    assert psnr[-1] < 35.0, (name, psnr)  # the strongest level visibly degrades the image


def test_hand_computed_values() -> None:
    image = np.array([[0, 64, 128, 255]], dtype=np.uint8)
    # MONOCHROME1 forgotten: 255 - x
    assert apply_shift(image, "monochrome1", 1).tolist() == [[255, 191, 127, 0]]
    # 2 stored bits: round(x / 255 * 3) / 3 * 255
    expected = np.round(np.round(image / 255.0 * 3) / 3 * 255).astype(np.uint8)
    assert np.array_equal(apply_shift(image, "bit_depth", 5), expected)
    # tone curve x ** 0.5 (severity 3), re-quantised to 8 bits
    expected = np.round(255 * (image / 255.0) ** 0.5).astype(np.uint8)
    assert np.array_equal(apply_shift(image, "contrast", 3), expected)


def test_voi_clip_saturates_the_named_fraction_of_tissue() -> None:
    image = _phantom(np.uint16)
    before = image_statistics(image, image)["saturated_fraction"]
    for severity in range(1, SHIFTS["voi_clip"].max_severity + 1):
        fraction = SHIFTS["voi_clip"].parameter(severity)
        after = image_statistics(image, apply_shift(image, "voi_clip", severity))["saturated_fraction"]
        assert after == pytest.approx(before + fraction, abs=0.01), severity


def test_quantum_noise_grows_as_the_dose_falls() -> None:
    flat = np.full((64, 64), 30000, np.uint16)
    flat[:4] = 0  # background so that the tissue mask is the rest
    sds = [image_statistics(flat, apply_shift(flat, "quantum_noise", s, seed=2))["noise_sd"] for s in (1, 3, 5)]
    # Poisson: SD of x·N / N is sqrt(x / N); x = 30000 / 65535
    expected = [np.sqrt((30000 / 65535) / SHIFTS["quantum_noise"].parameter(s)) for s in (1, 3, 5)]
    np.testing.assert_allclose(sds, expected, rtol=0.1)


def test_float_images_keep_their_range() -> None:
    image = _phantom(np.float32) * 1000.0 + 50.0
    shifted = apply_shift(image, "monochrome1", 1)
    assert np.isclose(shifted.min(), image.min()) and np.isclose(shifted.max(), image.max())


def test_statistics_of_identical_images() -> None:
    image = _phantom(np.uint8)
    stats = image_statistics(image, image)
    assert stats["psnr_db"] == float("inf") and stats["noise_sd"] == 0.0 and stats["correlation"] == pytest.approx(1)
    with pytest.raises(ValueError, match="shapes differ"):
        image_statistics(image, image[:10])


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


def test_transform_is_keyed_per_image_and_names_its_parameter() -> None:
    image = _phantom()
    transform = ShiftTransform("quantum_noise", 2, seed=5)
    assert np.array_equal(transform(image, "a"), apply_shift(image, "quantum_noise", 2, shift_seed(5, "a")))
    assert not np.array_equal(transform(image, "a"), transform(image, "b"))
    assert transform.key == "quantum_noise@2=800#seed5"  # a changed level gives another feature-cache key
    assert shift_seed(0, "x") == shift_seed(0, "x") != shift_seed(1, "x")


# ----------------------------------------------------------------------------------------------------------------------
# On the kit's own cohort: the images the notebooks shift (VinDr part, PNG-like arrays from the voi preprocessing)

@pytest.fixture(scope="module")
def cohort_images(tmp_path_factory) -> list[np.ndarray]:
    from mammoclip_kit.cohort.generate import make_cohort
    from mammoclip_kit.data.dicom import read_dicom
    from mammoclip_kit.data.preprocess import PreprocessConfig, process_image

    root = tmp_path_factory.mktemp("shift_cohort")
    make_cohort(root, preset="smoke", seed=0, workers=1, progress=False,
                n_patients={"vindr": 2, "rsna": 0, "reports": 0})
    files = sorted(root.glob("vindr/images/*/*.dicom"))
    assert files
    config = PreprocessConfig(mode="voi", height=160, width=96)
    return [process_image(read_dicom(path), config).image for path in files]


@pytest.mark.parametrize("name", list_shifts())
def test_shift_monotone_on_cohort_images(cohort_images, name: str) -> None:
    spec = SHIFTS[name]
    for index, image in enumerate(cohort_images):
        statistic, psnr = _curves(image, name, seed=index)
        if spec.max_severity > 1:
            assert _monotone(statistic, spec.increasing), (name, index, spec.statistic, statistic)
            assert _monotone(psnr, increasing=False), (name, index, psnr)
        else:
            assert statistic[-1] < 0, (name, index, statistic)  # the inversion anti-correlates
