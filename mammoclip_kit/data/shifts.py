"""Scanner-like distribution shifts on 2-D mammogram arrays (robustness study, notebook 08; paper's robustness claim).

Each shift is a named, seeded transform of a grayscale ``H×W`` array with an integer ``severity`` in ``[0, k]``:
severity 0 is the identity. The shifts model what differs between acquisition chains and sites, and each one
*removes* image information as its severity grows — none of them raises lesion contrast (an earlier gamma and a
narrowing window did, which made synthetic masses more conspicuous and raised AUC):

=================  ====================================================================  =============================
shift              models                                                                monotone statistic
=================  ====================================================================  =============================
``bit_depth``      fewer stored bits (a 12-bit detector archived at 6 … 2 bits)          effective bits ↓
``voi_clip``       a VOI window whose upper edge sits below the brightest tissue: the    saturated tissue fraction ↑
                   densest tissue (where masses hide) saturates to white
``monochrome1``    the forgotten MONOCHROME1 inversion (``max − x``); severity 0 or 1   correlation with clean ↓
``quantum_noise``  a lower dose: Poisson noise with fewer photons per pixel             noise SD ↑
``contrast``       a flatter processing curve for dense tissue (``x ** γ``, γ < 1,       PSNR ↓
                   then re-quantised to the stored bit depth)
``downsample``     a coarser detector pitch (area down-sampling, linear up-sampling)    PSNR ↓
``jpeg``           lossy JPEG archive compression at falling quality (OpenCV)           PSNR ↓
=================  ====================================================================  =============================

:func:`image_statistics` measures every statistic of a shifted image against its clean version; each
:class:`ShiftSpec` names the one its severity is monotone on (``statistic``, ``increasing``), and every shift is also
monotone on the PSNR of the model's view (both images min–max scaled, as :func:`~mammoclip_kit.data.transforms.
to_model_input` does). The tests check both on cohort images.

Vendor or site hold-out is not a transform: it is a split, see :mod:`mammoclip_kit.eval.robustness`.

All shifts work in ``[0, 1]`` units: integer images are divided by their dtype's maximum, float images by their own
min–max range, and the result is mapped back to the input's dtype and range (integer outputs are rounded, as a stored
image is), so a shifted PNG goes through :func:`mammoclip_kit.data.transforms.to_model_input` exactly like a clean one.
A purely *linear* contrast change would be invisible to the model (its input is min–max scaled): every intensity shift
here clips, quantises or bends the grey scale.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["SHIFTS", "STATISTICS", "ShiftSpec", "ShiftTransform", "apply_shift", "image_statistics", "list_shifts",
           "shift_seed", "tissue_mask"]

#: The statistics :func:`image_statistics` returns, with their units.
STATISTICS: dict[str, str] = {
    "psnr_db": "PSNR of the model's view (min–max scaled) vs the clean image, dB",
    "noise_sd": "SD of (shifted − clean) over the tissue, fraction of the grey range",
    "effective_bits": "log2 of the number of distinct grey levels in the tissue",
    "saturated_fraction": "fraction of tissue pixels at the image's maximum grey level",
    "correlation": "Pearson correlation with the clean image over the tissue",
}


@dataclass(frozen=True)
class ShiftSpec:
    """One shift family: its name, the parameter at each severity, the function and the statistic it degrades."""

    name: str  # registry key
    levels: tuple[float, ...]  # the shift parameter at severities 0..k (index 0 is the identity)
    stochastic: bool  # True when the output depends on the seed
    unit: str  # what the parameter means, for tables and figure labels
    fn: Callable[[np.ndarray, float, np.random.Generator], np.ndarray]  # (unit image, parameter, rng) -> unit image
    statistic: str  # the key of :func:`image_statistics` that is monotone in severity
    increasing: bool  # True when that statistic grows with severity (noise SD), False when it falls (PSNR)
    models: str = ""  # what differs between scanners, in words

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


def _bit_depth(x: np.ndarray, bits: float, rng: np.random.Generator) -> np.ndarray:
    levels = 2 ** int(bits) - 1
    return np.round(x * levels) / levels


def _voi_clip(x: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    # The window's upper edge moves down to the (1 - fraction) quantile of the tissue: that fraction of the tissue,
    # the densest part, saturates; the window keeps its lower edge and maps onto the full output range.
    if fraction <= 0:
        return x
    tissue = x[tissue_mask(x)]
    tissue = tissue[tissue < tissue.max()] if tissue.size else tissue  # pixels saturated already do not count
    upper = float(np.quantile(tissue, 1.0 - fraction)) if tissue.size else 1.0
    upper = max(upper, 1e-6)
    return np.clip(x / upper, 0.0, 1.0)


def _monochrome1(x: np.ndarray, inverted: float, rng: np.random.Generator) -> np.ndarray:
    return 1.0 - x if inverted else x


def _quantum_noise(x: np.ndarray, photons: float, rng: np.random.Generator) -> np.ndarray:
    # Signal-dependent photon noise at a dose of ``photons`` quanta per pixel at full scale (lower dose: fewer photons).
    if not np.isfinite(photons):
        return x
    return np.clip(rng.poisson(x.astype(np.float64) * photons) / photons, 0.0, 1.0).astype(np.float32)


def _contrast(x: np.ndarray, gamma: float, rng: np.random.Generator) -> np.ndarray:
    # γ < 1 flattens the bright (dense) end of the grey scale: dense tissue and masses lose contrast; the result is
    # re-quantised to the input's bit depth by the caller, so the lost grey levels are gone.
    return np.power(x, gamma) if gamma != 1 else x


def _downsample(x: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    if factor <= 1:
        return x
    height, width = x.shape
    small = cv2.resize(x, (max(1, round(width / factor)), max(1, round(height / factor))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def _jpeg(x: np.ndarray, quality: float, rng: np.random.Generator) -> np.ndarray:
    if quality >= 100:
        return x
    as_uint8 = np.round(np.clip(x, 0, 1) * 255.0).astype(np.uint8)
    ok, encoded = cv2.imencode(".jpg", as_uint8, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError(f"OpenCV could not JPEG-encode an image of shape {x.shape} at quality {quality}")
    return cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED).astype(np.float32) / 255.0


#: Registry of the shift families: name -> spec (severity 0 is always the identity).
SHIFTS: dict[str, ShiftSpec] = {
    "bit_depth": ShiftSpec("bit_depth", (16.0, 6.0, 5.0, 4.0, 3.0, 2.0), False, "stored bits", _bit_depth,
                           "effective_bits", False, "bit depth of the stored image"),
    "voi_clip": ShiftSpec("voi_clip", (0.0, 0.02, 0.05, 0.1, 0.2, 0.35), False, "saturated tissue fraction",
                          _voi_clip, "saturated_fraction", True, "VOI window ending below the densest tissue"),
    "monochrome1": ShiftSpec("monochrome1", (0.0, 1.0), False, "inverted (0/1)", _monochrome1, "correlation", False,
                             "a MONOCHROME1 image read as MONOCHROME2"),
    "quantum_noise": ShiftSpec("quantum_noise", (float("inf"), 2000.0, 800.0, 300.0, 120.0, 50.0), True,
                               "photons per pixel at full scale", _quantum_noise, "noise_sd", True,
                               "a lower dose (quantum noise)"),
    "contrast": ShiftSpec("contrast", (1.0, 0.8, 0.65, 0.5, 0.4, 0.3), False, "tone-curve exponent γ", _contrast,
                          "psnr_db", False, "a flatter processing curve for dense tissue"),
    "downsample": ShiftSpec("downsample", (1.0, 1.5, 2.0, 3.0, 4.0, 6.0), False, "down-sampling factor", _downsample,
                            "psnr_db", False, "a coarser detector pitch"),
    "jpeg": ShiftSpec("jpeg", (100.0, 80.0, 60.0, 40.0, 20.0, 8.0), False, "JPEG quality", _jpeg, "psnr_db", False,
                      "lossy archive compression"),
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


def tissue_mask(unit: np.ndarray, threshold: float = 0.05) -> np.ndarray:
    """Pixels of the breast: above ``threshold`` of the image's grey range (the cohort's background is near 0)."""
    low, high = float(np.min(unit)), float(np.max(unit))
    return unit > low + threshold * (high - low)


def _minmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    low, high = float(x.min()), float(x.max())
    return (x - low) / (high - low) if high > low else np.zeros_like(x)


def image_statistics(clean: np.ndarray, shifted: np.ndarray) -> dict[str, float]:
    """Physical image statistics of ``shifted`` against ``clean`` (same shape), keys of :data:`STATISTICS`.

    The tissue is :func:`tissue_mask` of the clean image. ``psnr_db`` compares the model's view (both images min–max
    scaled; ``inf`` when identical); ``noise_sd`` and ``correlation`` use grey units of the clean image's scale;
    ``effective_bits`` and ``saturated_fraction`` describe ``shifted`` alone inside the tissue.
    """
    if clean.shape != shifted.shape:
        raise ValueError(f"image_statistics: shapes differ, clean {clean.shape} vs shifted {shifted.shape}")
    if np.issubdtype(clean.dtype, np.integer):
        info = np.iinfo(clean.dtype)
        low, span = float(info.min), float(info.max) - float(info.min)
    else:  # float images: the clean image's range
        low, high = float(np.min(clean)), float(np.max(clean))
        span = high - low if high > low else 1.0
    clean_unit = (clean.astype(np.float64) - low) / span
    shifted_unit = (shifted.astype(np.float64) - low) / span
    tissue = tissue_mask(clean_unit)
    if not tissue.any():
        raise ValueError("image_statistics: the clean image has no tissue above the background")
    mse = float(np.mean((_minmax(clean) - _minmax(shifted)) ** 2))
    difference = (shifted_unit - clean_unit)[tissue]
    values = shifted[tissue]
    a, b = clean_unit[tissue].astype(np.float64), shifted_unit[tissue]
    correlation = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")
    return {
        "psnr_db": float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse)),
        "noise_sd": float(np.std(difference)),
        "effective_bits": float(np.log2(max(1, len(np.unique(values))))),
        "saturated_fraction": float(np.mean(values >= shifted.max())),
        "correlation": correlation,
    }


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
        return f"{self.name}@{self.severity}={_get(self.name).parameter(self.severity):g}#seed{self.seed}"

    def __call__(self, image: np.ndarray, key: str | int = 0) -> np.ndarray:
        return apply_shift(image, self.name, self.severity, shift_seed(self.seed, key))
