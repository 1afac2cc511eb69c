"""Breast anatomy of the synthetic cohort: one breast model, rendered as CC and MLO views.

A :class:`BreastModel` holds everything about one breast that both views share (size, shape, density, thickness, skin,
pectoral muscle, texture seed). :func:`view_geometry` lays it out on a vendor's pixel grid for one view and returns the
masks, the distance to the skin and the mapping from 3-D breast coordinates to pixels; :func:`render_tissue` draws the
fibroglandular pattern, skin, nipple and pectoral muscle as *presentation intensity* (air 0, fat about 0.3, dense
tissue about 0.75, calcium up to 1).

Conventions (as on real images): the chest wall is the left image edge for a left breast and the right edge for a right
breast (nipple pointing to the image centre); CC images show lateral up; MLO images show superior up, with the pectoral
muscle as a bright wedge in the upper chest-wall corner and the axillary tail reaching the top edge.

3-D breast coordinates (mm) with the nipple at the origin: ``back`` toward the chest wall, ``lat`` positive lateral,
``sup`` positive superior. CC shows (back, lat); MLO shows back and a height mixing sup and medial/lateral by the gantry
angle (medial findings rise, lateral ones fall: "muffins rise, lead falls"), so a lesion keeps its distance from the
nipple in both views.

Texture: fibroglandular tissue is a thresholded 1/f^β field (β ≈ 3, stretched toward the nipple and tilted about 5° on
CC and 22° on MLO), concentrated behind the nipple and kept out of a subcutaneous fat rim; the threshold is set per breast
so that the dense-area fraction falls in the BI-RADS 4th-edition quartile band of its density category (design choice;
docs/cohort.md §1–3, §10.2–10.4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

FAT = 0.30
GLAND = 0.74
SKIN = 0.50
DENSITIES = ("A", "B", "C", "D")
#: Dense-area fraction band of each BI-RADS density category (4th-edition quartiles, narrowed so classes separate).
DENSE_FRACTION_BANDS: dict[str, tuple[float, float]] = {
    "A": (0.04, 0.16), "B": (0.24, 0.42), "C": (0.50, 0.68), "D": (0.76, 0.90),
}


@dataclass
class BreastModel:
    """Everything about one breast that its CC and MLO views share (lengths in mm)."""

    laterality: str
    density: str
    dense_fraction: float
    pnl_mm: float             # nipple to chest wall on CC (posterior nipple line)
    half_width_mm: float      # CC half extent (lateral-medial)
    superellipse: float
    wobble: tuple[float, float, float]
    mlo_pnl_mm: float
    mlo_up_mm: float
    mlo_down_mm: float
    axilla_mm: float          # breast width at the top edge of the MLO (axillary tail)
    pect_top_mm: float
    pect_tip_frac: float      # tip row of the pectoral muscle relative to the nipple row, in units of mlo_down
    pect_curve: float
    cc_pect_mm: float         # depth of a CC pectoral sliver (0 = none)
    thickness_mm: float
    skin_mm: float
    nipple_mm: float
    gantry_deg: float
    nipple_row_cc: float      # fraction of image height
    nipple_row_mlo: float
    texture_seed: int


def sample_breast(rng: np.random.Generator, laterality: str, density: str, shared: dict | None = None) -> BreastModel:
    """Sample one breast; ``shared`` (from the other breast of the patient) keeps size and density similar."""
    if density not in DENSITIES:
        raise ValueError(f"density must be one of {DENSITIES}, got {density!r}")
    lo, hi = DENSE_FRACTION_BANDS[density]
    if shared is None:
        shared = {"pnl": rng.uniform(60, 115), "hw": rng.uniform(65, 110), "thick": rng.uniform(40, 70)}
    pnl = float(np.clip(shared["pnl"] * rng.uniform(0.95, 1.05), 55, 120))
    hw = float(np.clip(shared["hw"] * rng.uniform(0.95, 1.05), 60, 115))
    denser = DENSITIES.index(density)
    axilla = float(rng.uniform(0.55, 0.8) * pnl)
    return BreastModel(
        laterality=laterality, density=density, dense_fraction=float(rng.uniform(lo, hi)),
        pnl_mm=pnl, half_width_mm=hw, superellipse=float(rng.uniform(1.9, 2.6)),
        wobble=(float(rng.uniform(-0.04, 0.04)), float(rng.uniform(-0.03, 0.03)), float(rng.uniform(0, 2 * math.pi))),
        mlo_pnl_mm=float(pnl + rng.uniform(-6, 10)), mlo_up_mm=float(hw * rng.uniform(0.95, 1.2)),
        mlo_down_mm=float(hw * rng.uniform(0.85, 1.05)), axilla_mm=axilla,
        pect_top_mm=float(axilla * rng.uniform(0.55, 0.9)), pect_tip_frac=float(rng.uniform(-0.45, 0.25)),
        pect_curve=float(rng.uniform(0.8, 1.35)), cc_pect_mm=float(rng.uniform(4, 9) if rng.random() < 0.3 else 0.0),
        thickness_mm=float(np.clip(shared["thick"] - 5 * denser + rng.normal(0, 2), 30, 80)),
        skin_mm=float(rng.uniform(0.9, 2.3)), nipple_mm=float(rng.uniform(4, 7)),
        gantry_deg=float(rng.uniform(40, 60)), nipple_row_cc=float(rng.uniform(0.46, 0.54)),
        nipple_row_mlo=float(rng.uniform(0.55, 0.62)), texture_seed=int(rng.integers(0, 2**31 - 1)),
    )


@dataclass
class ViewGeometry:
    """One view of one breast laid out on a pixel grid."""

    view: str
    laterality: str
    rows: int
    cols: int
    spacing: float            # mm per pixel
    breast: np.ndarray        # bool, skin and nipple included
    pectoral: np.ndarray      # bool
    dist_mm: np.ndarray       # float32 distance to the skin line in mm (chest wall and MLO top edge are not skin)
    nipple_rc: tuple[float, float]
    pnl_mm: float
    gantry_deg: float

    def project(self, back: float, lat: float, sup: float) -> tuple[float, float]:
        """Pixel (row, col) of the 3-D point (mm from the nipple: back, lateral, superior) in this view."""
        u = self.pnl_mm - back
        if self.view == "CC":
            height = lat                       # lateral is shown up on CC
        else:
            g = math.radians(self.gantry_deg)
            height = sup * math.cos(g) - lat * math.sin(g)  # medial rises, lateral falls
        row = self.nipple_rc[0] - height / self.spacing
        col = u / self.spacing if self.laterality == "L" else self.cols - 1 - u / self.spacing
        return float(row), float(col)

    def inside(self, row: float, col: float, margin_mm: float = 0.0) -> bool:
        """True when (row, col) lies in the breast, off the pectoral muscle, at least ``margin_mm`` from the skin."""
        r, c = int(round(row)), int(round(col))
        if not (0 <= r < self.rows and 0 <= c < self.cols):
            return False
        return bool(self.breast[r, c] and not self.pectoral[r, c] and self.dist_mm[r, c] >= margin_mm)


def _coords(rows: int, cols: int, spacing: float, laterality: str, nipple_row: float):
    """u (mm from chest wall) per column and v (mm below the nipple row) per row, as broadcastable arrays."""
    c = np.arange(cols, dtype=np.float32)
    u = (c if laterality == "L" else (cols - 1 - c)) * spacing
    v = (np.arange(rows, dtype=np.float32) - nipple_row) * spacing
    return u[None, :], v[:, None]


def view_geometry(model: BreastModel, view: str, rows: int, cols: int, spacing: float) -> ViewGeometry:
    """Outline, pectoral muscle and skin distance of ``model`` in ``view`` ("CC" or "MLO") on a rows × cols grid."""
    if view not in ("CC", "MLO"):
        raise ValueError(f"view must be CC or MLO, got {view!r}")
    # Keep the breast on the detector: shrink it if the sampled size does not fit this vendor's field.
    fit = min(1.0, 0.44 * rows * spacing / model.half_width_mm, 0.8 * cols * spacing / model.pnl_mm)
    p = model.superellipse
    if view == "CC":
        nipple_row = model.nipple_row_cc * rows
        u, v = _coords(rows, cols, spacing, model.laterality, nipple_row)
        pnl, hw = model.pnl_mm * fit, model.half_width_mm * fit
        a, b, phase = model.wobble
        hw_v = hw * (1 + a * np.sin(3 * v / hw + phase) + b * np.sign(v))
        breast = (u >= 0) & ((u / pnl) ** p + (np.abs(v) / hw_v) ** p <= 1.0)
        pectoral = np.zeros_like(breast)
        if model.cc_pect_mm > 0:
            vh = 0.35 * hw
            pectoral = breast & (u <= model.cc_pect_mm * fit * np.clip(1 - (v / vh) ** 2, 0, None))
    else:
        nipple_row = model.nipple_row_mlo * rows
        u, v = _coords(rows, cols, spacing, model.laterality, nipple_row)
        pnl = model.mlo_pnl_mm * fit
        up, down = model.mlo_up_mm * fit, model.mlo_down_mm * fit
        lower = (v >= 0) & ((u / pnl) ** p + (np.abs(v) / down) ** p <= 1.0)
        upper = (v < 0) & ((u / pnl) ** p + (np.abs(v) / up) ** p <= 1.0)
        top_mm = nipple_row * spacing
        axilla_w = model.axilla_mm * fit + (0.8 * pnl - model.axilla_mm * fit) * np.clip(1 + v / top_mm, 0, 1)
        axilla = (v < 0) & (u <= axilla_w)
        breast = (u >= 0) & (lower | upper | axilla)
        row_mm = (np.arange(rows, dtype=np.float32)[:, None]) * spacing
        tip_mm = top_mm + model.pect_tip_frac * down
        frac = np.clip(1 - row_mm / max(tip_mm, 1.0), 0, 1) ** model.pect_curve
        pectoral = breast & (u <= model.pect_top_mm * fit * frac)
    # Nipple in profile: a small bump at the apex.
    nip_r = model.nipple_mm / spacing
    nipple_col = pnl / spacing if model.laterality == "L" else cols - 1 - pnl / spacing
    canvas = breast.astype(np.uint8)
    cv2.circle(canvas, (int(round(nipple_col)), int(round(nipple_row))), max(1, int(round(nip_r * 0.7))), 1, -1)
    breast = canvas.astype(bool)
    dist = _skin_distance(breast, model.laterality, view) * spacing
    return ViewGeometry(view=view, laterality=model.laterality, rows=rows, cols=cols, spacing=spacing,
                        breast=breast, pectoral=pectoral, dist_mm=dist, nipple_rc=(float(nipple_row), float(nipple_col)),
                        pnl_mm=float(pnl), gantry_deg=model.gantry_deg)


def _skin_distance(breast: np.ndarray, laterality: str, view: str) -> np.ndarray:
    """Distance (px) to the skin line; the chest-wall edge (and the MLO top edge) continue into the body."""
    mask = breast.astype(np.uint8)
    pad = 1
    padded = cv2.copyMakeBorder(mask, pad if view == "MLO" else 0, 0,
                                pad if laterality == "L" else 0, pad if laterality == "R" else 0,
                                cv2.BORDER_REPLICATE)
    # cv2 treats pixels beyond the image border as tissue; replicated edge rows keep the chest wall "inside".
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, 5)
    top = pad if view == "MLO" else 0
    left = pad if laterality == "L" else 0
    return dist[top:top + mask.shape[0], left:left + mask.shape[1]].astype(np.float32)


def powerlaw_noise(rng: np.random.Generator, shape: tuple[int, int], beta: float, stretch: float = 1.0,
                   angle_deg: float = 0.0, cutoff: float = 0.0) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian field with spectrum 1/f^β, elongated by ``stretch`` along ``angle_deg``.

    ``cutoff`` (cycles per pixel) flattens the spectrum below it so that one giant blob cannot dominate.
    """
    h, w = shape
    ky = np.fft.fftfreq(h).astype(np.float32)[:, None]
    kx = np.fft.rfftfreq(w).astype(np.float32)[None, :]
    a = math.radians(angle_deg)
    kp = kx * math.cos(a) + ky * math.sin(a)
    kq = -kx * math.sin(a) + ky * math.cos(a)
    k2 = (kp * stretch) ** 2 + kq ** 2 + cutoff ** 2
    k2[0, 0] = np.inf
    amp = k2 ** (-beta / 4.0)
    spectrum = amp * (rng.standard_normal(amp.shape, dtype=np.float32)
                      + 1j * rng.standard_normal(amp.shape, dtype=np.float32))
    field = np.fft.irfft2(spectrum, s=(h, w)).astype(np.float32)
    field -= field.mean()
    std = float(field.std())
    return field / std if std > 0 else field


def _smoothstep(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    t = np.clip((x - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    return t * t * (3 - 2 * t)


@dataclass
class Tissue:
    """Rendered anatomy of one view (before lesions, blur and noise)."""

    intensity: np.ndarray     # float32 presentation intensity
    gland: np.ndarray         # float32 fibroglandular fraction in [0, 1] (full resolution)
    dense_fraction: float     # measured dense-area fraction of the breast (pectoral excluded)
    periphery: np.ndarray     # float32 thickness factor in [0, 1] (0 at the skin)


def render_tissue(model: BreastModel, geom: ViewGeometry, view_index: int, periphery_weight: float) -> Tissue:
    """Draw fat, fibroglandular tissue, Cooper's ligaments, skin, nipple and pectoral muscle for one view."""
    rows, cols, s = geom.rows, geom.cols, geom.spacing
    rng = np.random.default_rng([model.texture_seed, view_index])
    # Texture on a coarse grid (about 1 mm per cell), upsampled: anatomy has no fine detail worth the FFT cost.
    factor = max(1, int(round(1.0 / s)))
    lh, lw = max(16, rows // factor), max(16, cols // factor)
    cell = s * rows / lh
    side = 1 if geom.laterality == "L" else -1
    tilt = (5.0 if geom.view == "CC" else 22.0) * side
    coarse = powerlaw_noise(rng, (lh, lw), beta=rng.uniform(2.8, 3.3), stretch=rng.uniform(2.0, 3.5),
                            angle_deg=tilt, cutoff=cell / 40.0)
    fine = powerlaw_noise(rng, (lh, lw), beta=rng.uniform(1.8, 2.3), stretch=rng.uniform(2.5, 4.0), angle_deg=tilt)
    breast_lo = cv2.resize(geom.breast.astype(np.uint8), (lw, lh), interpolation=cv2.INTER_NEAREST).astype(bool)
    pect_lo = cv2.resize(geom.pectoral.astype(np.uint8), (lw, lh), interpolation=cv2.INTER_NEAREST).astype(bool)
    dist_lo = cv2.resize(geom.dist_mm, (lw, lh), interpolation=cv2.INTER_LINEAR)
    # Envelope: dense tissue sits behind the nipple, away from the subcutaneous and retroglandular fat.
    u, v = _coords(lh, lw, cell, geom.laterality, geom.nipple_rc[0] * lh / rows)
    u_n = u / max(geom.pnl_mm, 1.0)
    envelope = _smoothstep(dist_lo, 3.0, 14.0) * (0.55 + 0.45 * np.exp(-(v / (0.55 * model.half_width_mm)) ** 2))
    envelope = envelope * (0.6 + 0.4 * _smoothstep(u_n, 0.05, 0.35))
    score = coarse + 2.2 * envelope
    region = breast_lo & ~pect_lo
    rim = _smoothstep(dist_lo, 1.5, 6.0)
    modulation = 0.8 + 0.15 * np.clip(fine, -2.5, 2.5)

    def glandular(thr: float) -> np.ndarray:
        g = 1.0 / (1.0 + np.exp(-(score - thr) / 0.3))
        return np.clip(g * rim * modulation, 0.0, 1.0) * breast_lo

    def fraction(g: np.ndarray) -> float:
        return float((g[region] > 0.5).mean()) if region.any() else 0.0

    # Calibrate the threshold so that the *measured* dense-area fraction (after the fat rim and the nodular modulation)
    # lands on the breast's target: bisection on a coarse grid costs a few milliseconds.
    values = score[region] if region.any() else score.ravel()
    lo, hi = float(values.min()) - 3.0, float(values.max()) + 3.0
    thr = float(np.quantile(values, 1.0 - model.dense_fraction))
    for _ in range(14):
        gland = glandular(thr)
        measured = fraction(gland)
        if abs(measured - model.dense_fraction) < 0.01:
            break
        lo, hi = (lo, thr) if measured < model.dense_fraction else (thr, hi)
        thr = 0.5 * (lo + hi)
    gland = glandular(thr)
    dense_fraction = fraction(gland)
    gland_full = cv2.resize(gland.astype(np.float32), (cols, rows), interpolation=cv2.INTER_CUBIC)
    fine_full = cv2.resize(fine, (cols, rows), interpolation=cv2.INTER_LINEAR)
    gland_full = np.clip(gland_full, 0.0, 1.0)

    intensity = FAT + (GLAND - FAT) * gland_full + 0.03 * fine_full
    _draw_ligaments(intensity, geom, rng)
    # Pectoral muscle: bright, smooth, slightly brighter toward the chest wall.
    if geom.pectoral.any():
        pect_int = (0.78 if geom.view == "MLO" else 0.66) + 0.04 * fine_full + 0.05 * _smoothstep(geom.dist_mm, 0.0, 30.0)
        intensity = np.where(geom.pectoral, pect_int, intensity)
    # Thin periphery: less tissue traversed near the skin → darker, partly equalised by the vendor's processing.
    rim = max(12.0, 0.18 * model.pnl_mm)
    periphery = np.sqrt(np.clip(geom.dist_mm / rim, 0.0, 1.0)).astype(np.float32)
    intensity = intensity * (1.0 - periphery_weight * (1.0 - periphery))
    skin = (geom.dist_mm < model.skin_mm / 1.0) & geom.breast
    intensity = np.where(skin, np.maximum(intensity, SKIN * (0.9 + 0.1 * periphery)), intensity)
    intensity = np.where(geom.breast, intensity, 0.0).astype(np.float32)
    return Tissue(intensity=intensity, gland=gland_full, dense_fraction=dense_fraction, periphery=periphery)


def _draw_ligaments(intensity: np.ndarray, geom: ViewGeometry, rng: np.random.Generator) -> None:
    """Thin curvilinear Cooper's ligaments in the subcutaneous fat (arcs roughly parallel to the skin), in place."""
    rows, cols = intensity.shape
    canvas = np.zeros((rows, cols), np.uint8)
    n = int(rng.integers(10, 22))
    nr, nc = geom.nipple_rc
    for _ in range(n):
        radius = rng.uniform(0.35, 0.95) * geom.pnl_mm / geom.spacing
        start = rng.uniform(-80, 80)
        sweep = rng.uniform(10, 35)
        centre_col = nc - (radius if geom.laterality == "L" else -radius) * rng.uniform(0.9, 1.1)
        angle = 0.0 if geom.laterality == "L" else 180.0
        cv2.ellipse(canvas, (int(centre_col), int(nr + rng.uniform(-0.2, 0.2) * radius)),
                    (int(radius), int(radius * rng.uniform(1.0, 1.6))), angle, start, start + sweep, 1, 1,
                    cv2.LINE_8)
    lig = canvas.astype(bool) & geom.breast & (geom.dist_mm > 2.0)
    intensity[lig] += 0.05
