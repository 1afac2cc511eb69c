"""Controlled distribution shifts on 2-D mammogram arrays (robustness study, issue 8; paper §"robustness").

Each shift is a named, seeded transform of a grayscale ``H×W`` array with an integer ``severity`` in ``[0, k]``:
severity 0 is the identity, and larger severities move the image further from the clean one. The shifts mimic what
changes between sites and acquisition chains:

=================  ===============================================================================================
``gamma``          a power-law tone curve ``x**γ`` (a different display/processing LUT); γ grows with severity
``contrast``       an S-shaped (logistic) tone curve of growing steepness (vendor "look" / stronger processing)
``gaussian_noise`` additive Gaussian noise (electronic noise), σ in units of the full grey range
``poisson_noise``  quantum (photon) noise at a falling photon count: ``Poisson(x·N)/N``
``downsample``     down-sampling by a factor then linear up-sampling (a coarser detector or an over-eager resize)
``jpeg``           lossy JPEG compression at falling quality (OpenCV), on an 8-bit copy
``window``         a narrower, shifted VOI window (wrong WindowCenter / WindowWidth), clipped and re-stretched
``monochrome1``    the forgotten MONOCHROME1 inversion (``max − x``); severity is 0 or 1
=================  ===============================================================================================

Vendor or site hold-out is not a transform: it is a split, see :mod:`mammoclip_kit.eval.robustness`.

All shifts work in ``[0, 1]`` units: integer images are divided by their dtype's maximum, float images by their own
min–max range, and the result is mapped back to the input's dtype and range, so a shifted PNG goes through
:func:`mammoclip_kit.data.transforms.to_model_input` exactly like a clean one. Note that the model input is min–max
scaled, so a purely *linear* contrast change would be invisible to the model: every intensity shift here is non-linear.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["SHIFTS", "ShiftSpec", "ShiftTransform", "apply_shift", "list_shifts", "shift_seed"]


@dataclass(frozen=True)
class ShiftSpec:
    """One shift family: its name, the parameter used at each severity and the function that applies it."""

    name: str  # registry key
    levels: tuple[float, ...]  # the shift parameter at severities 0..k (index 0 is the identity)
    stochastic: bool  # True when the output depends on the seed
    unit: str  # what the parameter means, for tables and figure labels
    fn: Callable[[np.ndarray, float, np.random.Generator], np.ndarray]  # (unit image, parameter, rng) -> unit image

    @property
    def max_severity(self) -> int:
        return len(self.levels) - 1

    def parameter(self, severity: int) -> float:
        """The shift parameter at ``severity`` (raises ``ValueError`` outside ``[0, max_severity]``)."""
        if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)):
            raise ValueError(f"shift {self.name!r}: severity must be an integer, got {severity!r}")
        if not 0 <= int(severity) <= self.max_severity:
            raise ValueError(f"shift {self.name!r}: severity {severity} outside [0, {self.max_severity}]")
        return self.levels[int(severity)]


def _gamma(x: np.ndarray, gamma: float, rng: np.random.Generator) -> np.ndarray:
    return np.power(x, gamma)


def _contrast(x: np.ndarray, steepness: float, rng: np.random.Generator) -> np.ndarray:
    # Logistic S-curve around mid-grey, renormalised so that 0 -> 0 and 1 -> 1; steepness 0 is the identity.
    if steepness <= 0:
        return x
    curve = 1.0 / (1.0 + np.exp(-steepness * (x - 0.5)))
    low, high = 1.0 / (1.0 + np.exp(steepness * 0.5)), 1.0 / (1.0 + np.exp(-steepness * 0.5))
    return (curve - low) / (high - low)


def _gaussian_noise(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    if sigma <= 0:
        return x
    return np.clip(x + rng.normal(0.0, sigma, size=x.shape).astype(np.float32), 0.0, 1.0)


def _poisson_noise(x: np.ndarray, photons: float, rng: np.random.Generator) -> np.ndarray:
    if not np.isfinite(photons):
        return x
    return np.clip(rng.poisson(x.astype(np.float64) * photons) / photons, 0.0, 1.0).astype(np.float32)


def _downsample(x: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    if factor <= 1:
        return x
    height, width = x.shape
    small = cv2.resize(x, (max(1, round(width / factor)), max(1, round(height / factor))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def _jpeg(x: np.ndarray, quality: float, rng: np.random.Generator) -> np.ndarray:
    if quality >= 100:
        return x
    as_uint8 = np.round(x * 255.0).astype(np.uint8)
    ok, encoded = cv2.imencode(".jpg", as_uint8, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError(f"OpenCV could not JPEG-encode an image of shape {x.shape} at quality {quality}")
    return cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED).astype(np.float32) / 255.0


def _window(x: np.ndarray, narrowing: float, rng: np.random.Generator) -> np.ndarray:
    # Window width shrinks to (1 - narrowing) of the range and its centre moves up by narrowing / 2: the dark fatty
    # periphery clips to black and bright dense tissue to white, as with a wrong WindowCenter / WindowWidth.
    if narrowing <= 0:
        return x
    width = 1.0 - narrowing
    centre = 0.5 + narrowing / 2.0
    low = centre - width / 2.0
    return np.clip((x - low) / width, 0.0, 1.0)


def _monochrome1(x: np.ndarray, inverted: float, rng: np.random.Generator) -> np.ndarray:
    return 1.0 - x if inverted else x


#: Registry of the shift families: name -> spec (severity 0 is always the identity).
SHIFTS: dict[str, ShiftSpec] = {
    "gamma": ShiftSpec("gamma", (1.0, 1.25, 1.5, 2.0, 2.5, 3.0), False, "gamma exponent", _gamma),
    "contrast": ShiftSpec("contrast", (0.0, 4.0, 6.0, 8.0, 10.0, 12.0), False, "S-curve steepness", _contrast),
    "gaussian_noise": ShiftSpec("gaussian_noise", (0.0, 0.01, 0.02, 0.04, 0.08, 0.16), True,
                                "noise sigma (fraction of range)", _gaussian_noise),
    "poisson_noise": ShiftSpec("poisson_noise", (float("inf"), 2000.0, 500.0, 125.0, 32.0, 8.0), True,
                               "photons at full scale", _poisson_noise),
    "downsample": ShiftSpec("downsample", (1.0, 2.0, 3.0, 4.0, 6.0, 8.0), False, "down-sampling factor", _downsample),
    "jpeg": ShiftSpec("jpeg", (100.0, 75.0, 50.0, 25.0, 10.0, 3.0), False, "JPEG quality", _jpeg),
    "window": ShiftSpec("window", (0.0, 0.1, 0.2, 0.3, 0.45, 0.6), False, "window narrowing (fraction of range)",
                        _window),
    "monochrome1": ShiftSpec("monochrome1", (0.0, 1.0), False, "inverted (0/1)", _monochrome1),
}


def list_shifts() -> list[str]:
    """Names of the registered shifts."""
    return list(SHIFTS)


def _get(name: str) -> ShiftSpec:
    if name not in SHIFTS:
        raise ValueError(f"unknown shift {name!r}: expected one of {', '.join(SHIFTS)}")
    return SHIFTS[name]


def shift_seed(seed: int, key: str | int) -> int:
    """A per-image seed derived from a run seed and an image key (stable across processes, unlike ``hash``)."""
    digest = hashlib.sha1(f"{int(seed)}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _to_unit(image: np.ndarray) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """Image -> float32 in [0, 1] and the function that maps a unit image back to the input's dtype and range."""
    dtype = image.dtype
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        low, span = float(info.min), float(info.max) - float(info.min)

        def back(unit: np.ndarray) -> np.ndarray:
            return np.clip(np.round(unit * span + low), info.min, info.max).astype(dtype)
    elif np.issubdtype(dtype, np.floating):
        low, high = float(np.min(image)), float(np.max(image))
        span = high - low if high > low else 1.0

        def back(unit: np.ndarray) -> np.ndarray:
            return (unit * span + low).astype(dtype)
    else:
        raise ValueError(f"shift: unsupported image dtype {dtype}")
    return ((image.astype(np.float32) - low) / span).astype(np.float32), back


def apply_shift(image: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """Apply shift ``name`` at ``severity`` to a grayscale image; same seed, same output.

    Args:
        image: ``H×W`` array (uint8, uint16 or float).
        name: a key of :data:`SHIFTS`.
        severity: integer in ``[0, SHIFTS[name].max_severity]``; 0 returns an unchanged copy.
        seed: seed of the noise shifts (ignored by the deterministic ones).

    Returns:
        The shifted image with the input's shape and dtype.
    """
    spec = _get(name)
    parameter = spec.parameter(severity)
    if image.ndim != 2:
        raise ValueError(f"shift {name!r}: expected a 2-D grayscale image, got shape {tuple(image.shape)}")
    if severity == 0:
        return image.copy()
    unit, back = _to_unit(image)
    shifted = spec.fn(unit, parameter, np.random.default_rng(seed))
    return back(np.asarray(shifted, dtype=np.float32))


@dataclass(frozen=True)
class ShiftTransform:
    """A shift bound to a severity and a seed, usable as a per-image transform (``transform(image, key)``).

    The noise of each image is seeded by ``(seed, key)``, so an image gets the same noise whatever the batch order.
    """

    name: str
    severity: int
    seed: int = 0

    def __post_init__(self) -> None:
        _get(self.name).parameter(self.severity)  # validates name and severity early

    @property
    def key(self) -> str:
        """A stable string naming this transform (used in feature-cache keys)."""
        return f"{self.name}@{self.severity}#seed{self.seed}"

    def __call__(self, image: np.ndarray, key: str | int = 0) -> np.ndarray:
        return apply_shift(image, self.name, self.severity, shift_seed(self.seed, key))
