"""Findings of the synthetic cohort: sampling in 3-D breast coordinates and rendering per view.

Every lesion is placed once per breast at a 3-D position (``back`` mm behind the nipple, ``lat`` lateral, ``sup``
superior; see :mod:`._phantom`) and re-projected into the CC and MLO views, so both views show it at the same
distance from the nipple and at a plausible height. From the position come the report's clock face, quadrant, depth
third and nipple distance.

Kinds (``finding`` = the VinDr-Mammo category where one exists):

- ``Mass``: round / oval / irregular body, margins circumscribed, microlobulated, indistinct, obscured or spiculated.
  It adds glandular-equivalent density on top of the tissue plus a small extra contrast (``conspicuity``), so a mass
  stands out strongly in fat and weakly, but visibly, in dense tissue.
- ``Suspicious Calcification``: 6–30 bright specks (amorphous, coarse heterogeneous, fine pleomorphic, fine linear
  branching) grouped, linear or segmental over 4–15 mm.
- ``Architectural Distortion``: straight spicules radiating from a point with no central mass, plus a local pull of the
  surrounding tissue toward that point.
- ``Focal Asymmetry``: a glandular island with concave borders and interspersed fat, seen on both views.
- Benign incidental findings (no VinDr category; reported, not annotated): ``Benign Calcification`` (round/rim,
  vascular tram-track), ``Intramammary Lymph Node`` (small oval with a fatty hilum).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from mammoclip_kit.cohort.phantom import GLAND, ViewGeometry

#: VinDr-Mammo categories the cohort draws (the other VinDr names never occur here).
VINDR_FINDINGS: tuple[str, ...] = ("Mass", "Suspicious Calcification", "Architectural Distortion", "Focal Asymmetry")
BENIGN_FINDINGS: tuple[str, ...] = ("Benign Calcification", "Intramammary Lymph Node")
#: Short prevalence keys (``--prevalence mass=0.3,calcification=0.2``) → finding names.
PREVALENCE_KEYS: dict[str, str] = {
    "mass": "Mass", "calcification": "Suspicious Calcification", "distortion": "Architectural Distortion",
    "asymmetry": "Focal Asymmetry", "benign": "Benign",
}

MASS_SHAPES = ("round", "oval", "irregular")
MASS_MARGINS = ("circumscribed", "microlobulated", "indistinct", "obscured", "spiculated")
CALC_MORPHOLOGIES = ("amorphous", "coarse heterogeneous", "fine pleomorphic", "fine linear branching")
CALC_DISTRIBUTIONS = ("grouped", "linear", "segmental")
#: Probability of malignancy by mass margin / calcification morphology (teaching values, ordered like BI-RADS).
_MASS_MALIGNANCY = {"circumscribed": 0.05, "microlobulated": 0.35, "indistinct": 0.45, "obscured": 0.25,
                    "spiculated": 0.9}
_CALC_MALIGNANCY = {"amorphous": 0.2, "coarse heterogeneous": 0.15, "fine pleomorphic": 0.5,
                    "fine linear branching": 0.75}


@dataclass
class Lesion:
    """One finding of one breast, in 3-D breast coordinates (mm), shared by the breast's views."""

    lesion_id: int
    finding: str
    back: float
    lat: float
    sup: float
    size_mm: float
    shape: str = ""           # mass shape, calcification morphology, benign kind
    margin: str = ""          # mass margin, calcification distribution
    malignant: bool = False
    birads: int = 2
    seed: int = 0
    # Report vocabulary, derived from the position by :func:`describe_location`.
    clock: int = 12
    quadrant: str = ""
    depth: str = ""
    nipple_cm: int = 0
    attrs: dict = field(default_factory=dict)

    @property
    def vindr(self) -> bool:
        """True when the finding is a VinDr-Mammo category (annotated with a box)."""
        return self.finding in VINDR_FINDINGS

    def as_dict(self) -> dict:
        out = asdict(self)
        out.pop("attrs")
        return out


def describe_location(lesion: Lesion, laterality: str, pnl_mm: float, half_width_mm: float) -> None:
    """Fill clock face, quadrant, depth third and nipple distance from the 3-D position (in place)."""
    # Facing the patient, lateral is 9 o'clock on the right breast and 3 o'clock on the left.
    x_view = -lesion.lat if laterality == "R" else lesion.lat
    angle = math.degrees(math.atan2(x_view, lesion.sup)) % 360.0
    hour = int(round(angle / 30.0)) % 12
    lesion.clock = 12 if hour == 0 else hour
    radial = math.hypot(lesion.lat, lesion.sup)
    if radial < 0.12 * half_width_mm and lesion.back < 0.3 * pnl_mm:
        lesion.quadrant = "retroareolar"
    else:
        lesion.quadrant = ("upper" if lesion.sup >= 0 else "lower") + " " + ("outer" if lesion.lat >= 0 else "inner")
    third = lesion.back / max(pnl_mm, 1.0)
    lesion.depth = "anterior" if third < 1 / 3 else ("middle" if third < 2 / 3 else "posterior")
    lesion.nipple_cm = max(1, int(round(math.hypot(lesion.back, radial) / 10.0)))


def _assessment(finding: str, shape: str, margin: str, malignant: bool, rng: np.random.Generator) -> int:
    """BI-RADS category of one finding, consistent with its appearance and its (hidden) malignancy."""
    if finding in BENIGN_FINDINGS:
        return 2
    strong = (finding == "Mass" and margin == "spiculated") or shape == "fine linear branching"
    if malignant:
        return 5 if strong or rng.random() < 0.3 else 4
    if finding == "Mass" and margin == "circumscribed":
        return 3
    return 4 if strong or rng.random() < 0.5 else 3


def sample_lesion(rng: np.random.Generator, finding: str, lesion_id: int, laterality: str, pnl_mm: float,
                  half_width_mm: float, views: list[ViewGeometry], mass_size: tuple[float, float],
                  calcification_extent: float = 1.0) -> Lesion | None:
    """Sample one finding of ``finding`` kind at a position visible in every view (None if none fits).

    ``calcification_extent`` multiplies the extent of suspicious calcification clusters (5–15 mm when 1, realistic for
    grouped / linear clusters; the classroom cohort widens them toward regional / segmental extents)."""
    if finding == "Benign":
        finding = "Intramammary Lymph Node" if rng.random() < 0.35 else "Benign Calcification"
    shape = margin = ""
    if finding == "Mass":
        lo, hi = mass_size
        size = float(np.clip(np.exp(rng.normal(math.log(14.0), 0.35)), lo, hi))
        shape = str(rng.choice(MASS_SHAPES, p=[0.25, 0.4, 0.35]))
        margin = str(rng.choice(MASS_MARGINS, p=[0.3, 0.12, 0.18, 0.1, 0.3]))
        if shape == "irregular" and margin == "circumscribed":
            margin = "indistinct"
        if margin == "spiculated" and shape != "irregular":
            shape = "irregular"
        malignant = bool(rng.random() < _MASS_MALIGNANCY[margin] + (0.15 if shape == "irregular" else 0.0))
    elif finding == "Suspicious Calcification":
        size = float(rng.uniform(5.0, 15.0)) * calcification_extent
        shape = str(rng.choice(CALC_MORPHOLOGIES, p=[0.3, 0.2, 0.3, 0.2]))
        margin = str(rng.choice(CALC_DISTRIBUTIONS, p=[0.6, 0.2, 0.2]))
        malignant = bool(rng.random() < _CALC_MALIGNANCY[shape])
    elif finding == "Architectural Distortion":
        size = float(rng.uniform(15.0, 35.0))
        malignant = bool(rng.random() < 0.5)
    elif finding == "Focal Asymmetry":
        size = float(rng.uniform(18.0, 35.0))
        malignant = bool(rng.random() < 0.08)
    elif finding == "Intramammary Lymph Node":
        size = float(rng.uniform(5.0, 9.0))
        shape = "lymph node"
        malignant = False
    elif finding == "Benign Calcification":
        shape = str(rng.choice(["round", "vascular"], p=[0.55, 0.45]))
        size = float(rng.uniform(1.2, 2.5) if shape == "round" else rng.uniform(30.0, 60.0))
        malignant = False
    else:
        raise ValueError(f"unknown finding {finding!r}")
    birads = _assessment(finding, shape, margin, malignant, rng)
    margin_mm = max(4.0, 0.6 * size if finding not in ("Benign Calcification",) else 4.0)
    for _ in range(60):
        back = rng.uniform(0.15, 0.85) * pnl_mm
        radial_max = half_width_mm * math.sqrt(max(0.0, 1 - (1 - back / pnl_mm) ** 2)) * 0.75
        if finding == "Intramammary Lymph Node":
            theta = rng.uniform(math.radians(10), math.radians(80))   # upper outer quadrant, where nodes live
        else:
            theta = rng.uniform(0, 2 * math.pi)
        radius = radial_max * math.sqrt(rng.uniform(0, 1))
        lat, sup = radius * math.cos(theta), radius * math.sin(theta)
        if all(g.inside(*g.project(back, lat, sup), margin_mm=margin_mm) for g in views):
            lesion = Lesion(lesion_id=lesion_id, finding=finding, back=float(back), lat=float(lat), sup=float(sup),
                            size_mm=size, shape=shape, margin=margin, malignant=malignant, birads=birads,
                            seed=int(rng.integers(0, 2**31 - 1)))
            describe_location(lesion, laterality, pnl_mm, half_width_mm)
            return lesion
    return None


# --------------------------------------------------------------------------------------------------- rendering

@dataclass
class Rendered:
    """Where one lesion ended up in one view: box (xmin, ymin, xmax, ymax, original pixels) and mask."""

    box: tuple[float, float, float, float]
    mask: np.ndarray              # bool, patch-sized
    origin: tuple[int, int]       # (row, col) of the patch's top-left corner


def _patch(shape: tuple[int, int], centre: tuple[float, float], half: float):
    rows, cols = shape
    r0, r1 = max(0, int(centre[0] - half)), min(rows, int(centre[0] + half) + 1)
    c0, c1 = max(0, int(centre[1] - half)), min(cols, int(centre[1] + half) + 1)
    return r0, r1, c0, c1


def _box_from_mask(mask: np.ndarray, r0: int, c0: int, pad: float = 1.0) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        raise RuntimeError("lesion mask is empty")
    return (float(c0 + xs.min() - pad), float(r0 + ys.min() - pad), float(c0 + xs.max() + pad),
            float(r0 + ys.max() + pad))


def render_lesion(intensity: np.ndarray, gland: np.ndarray, geom: ViewGeometry, lesion: Lesion, view_index: int,
                  conspicuity: float, calcification_scale: float = 1.0,
                  calcification_contrast: float = 1.0, calcification_count: float = 1.0) -> Rendered:
    """Draw ``lesion`` into ``intensity`` (in place) for one view and return its box and mask.

    ``conspicuity``: extra contrast of masses and distortions; ``calcification_scale`` / ``calcification_contrast`` /
    ``calcification_count``: size / brightness / number multipliers of suspicious calcification specks (0.12 and 1 are
    realistic; the classroom cohort exaggerates them)."""
    rng = np.random.default_rng([lesion.seed, view_index])
    centre = geom.project(lesion.back, lesion.lat, lesion.sup)
    if lesion.finding == "Mass":
        out = _render_mass(intensity, geom, lesion, centre, rng, conspicuity)
    elif lesion.finding in ("Suspicious Calcification", "Benign Calcification") and lesion.shape != "vascular":
        out = _render_calcifications(intensity, geom, lesion, centre, view_index, calcification_scale,
                                     calcification_contrast, calcification_count)
    elif lesion.shape == "vascular":
        out = _render_vascular(intensity, geom, lesion, centre, rng)
    elif lesion.finding == "Architectural Distortion":
        out = _render_distortion(intensity, geom, lesion, centre, rng, conspicuity)
    elif lesion.finding == "Focal Asymmetry":
        out = _render_asymmetry(intensity, gland, geom, lesion, centre, rng)
    elif lesion.finding == "Intramammary Lymph Node":
        out = _render_node(intensity, geom, lesion, centre, rng)
    else:
        raise ValueError(f"cannot render {lesion.finding!r}")
    return out


def _blend_to(patch: np.ndarray, level: float, weight: np.ndarray) -> np.ndarray:
    """Raise ``patch`` toward ``level`` by ``weight`` (never darken it): zero weight leaves the tissue untouched."""
    return patch + np.clip(level - patch, 0.0, None) * weight


def _mottle(shape: tuple[int, int], rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Smooth zero-mean, unit-variance noise (internal texture of a lesion)."""
    noise = rng.standard_normal(shape).astype(np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), sigma)
    return (noise - noise.mean()) / max(float(noise.std()), 1e-6)


def _polar(shape: tuple[int, int], centre_local: tuple[float, float]):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    dy, dx = yy - centre_local[0], xx - centre_local[1]
    return np.hypot(dy, dx), np.arctan2(dy, dx), dy, dx


def _render_mass(intensity, geom, lesion, centre, rng, conspicuity) -> Rendered:
    s = geom.spacing
    radius = lesion.size_mm / 2.0 / s * rng.uniform(0.92, 1.08)
    spiculated = lesion.margin == "spiculated"
    half = radius * (3.2 if spiculated else 1.8) + 4
    r0, r1, c0, c1 = _patch(intensity.shape, centre, half)
    dist, theta, dy, dx = _polar((r1 - r0, c1 - c0), (centre[0] - r0, centre[1] - c0))
    # Shape: ellipse (oval), harmonics (irregular, microlobulated), view-dependent orientation.
    base_rng = np.random.default_rng(lesion.seed)
    ecc = {"round": 1.0, "oval": base_rng.uniform(1.3, 1.7), "irregular": base_rng.uniform(1.0, 1.4)}[lesion.shape]
    orient = base_rng.uniform(0, math.pi) + rng.normal(0, 0.25)
    rad = radius / np.sqrt((np.cos(theta - orient) / math.sqrt(ecc)) ** 2 + (np.sin(theta - orient) * math.sqrt(ecc)) ** 2)
    if lesion.shape == "irregular":
        for k in range(2, 6):
            rad = rad * (1 + base_rng.uniform(0.05, 0.14) / (k - 1) * np.cos(k * theta + base_rng.uniform(0, 6.3)
                                                                               + rng.normal(0, 0.3)))
    if lesion.margin == "microlobulated":
        k = int(base_rng.integers(8, 14))
        rad = rad * (1 + 0.06 * np.cos(k * theta + base_rng.uniform(0, 6.3)))
    edge = {"circumscribed": 0.35, "microlobulated": 0.4, "obscured": 1.2, "indistinct": 2.5, "spiculated": 1.0}
    width = max(0.4, edge[lesion.margin] / s)
    body = 1.0 / (1.0 + np.exp(np.clip(-(rad - dist) / (width * 0.45), -50, 50)))
    dome = np.sqrt(np.clip(1 - (dist / np.maximum(rad, 1e-3)) ** 2, 0, 1))
    profile = (body * (0.7 + 0.3 * dome)).astype(np.float32)
    if spiculated:
        profile = np.maximum(profile, _spicules(profile.shape, (centre[0] - r0, centre[1] - c0), radius, rng) * 0.85)
    patch = intensity[r0:r1, c0:c1]
    breast = geom.breast[r0:r1, c0:c1]
    extra = conspicuity * (1.0 if lesion.malignant or lesion.margin != "circumscribed" else 0.85)
    # Blend toward glandular density by the profile (a mass is glandular-equivalent tissue), then add its extra
    # attenuation: in fat the whole step shows, in dense tissue mainly the extra part.
    mottle = _mottle(profile.shape, rng, max(1.0, radius / 4))
    new = _blend_to(patch, GLAND * 0.97, profile) + extra * profile * (0.9 + 0.1 * mottle)
    intensity[r0:r1, c0:c1] = np.where(breast, new, patch)
    mask = (body > 0.5) & breast
    return Rendered(box=_box_from_mask(mask, r0, c0), mask=(profile > 0.3) & breast, origin=(r0, c0))


def _spicules(shape, centre_local, radius, rng) -> np.ndarray:
    """Tapered, slightly curved spicules radiating from a mass body (values in [0, 1])."""
    canvas = np.zeros(shape, np.float32)
    n = int(rng.integers(12, 30))
    for _ in range(n):
        angle = rng.uniform(0, 2 * math.pi)
        length = radius * rng.uniform(0.6, 1.9)
        bend = rng.normal(0, 0.15)
        y, x = centre_local[0] + math.sin(angle) * radius * 0.8, centre_local[1] + math.cos(angle) * radius * 0.8
        steps = 6
        for k in range(steps):
            a = angle + bend * k / steps
            ny, nx = y + math.sin(a) * length / steps, x + math.cos(a) * length / steps
            weight = 1.0 - k / steps
            cv2.line(canvas, (int(round(x)), int(round(y))), (int(round(nx)), int(round(ny))), float(weight),
                     1 if weight < 0.6 or radius < 15 else 2, cv2.LINE_AA)
            y, x = ny, nx
    return np.clip(canvas, 0, 1)


def calcification_particles(lesion: Lesion, scale: float = 1.0, contrast: float = 1.0, count: float = 1.0) -> list[
        tuple[float, float, float, float, float, float]]:
    """3-D particles of a calcification finding: (back, lat, sup, size_mm, brightness, elongation_mm).

    Drawn from the lesion's seed only, so both views project the *same* particles. ``scale`` multiplies the size and
    length of *suspicious* specks (not benign ones): 1 is realistic (0.1–1 mm); the classroom cohort exaggerates them
    so that they survive the 320 × 192 PNG, about 1 mm per pixel (docs/cohort.md). ``contrast`` multiplies the
    brightness and ``count`` the number (10–30 when 1) of suspicious specks the same way (1 = realistic).
    """
    rng = np.random.default_rng(lesion.seed)
    particles = []
    if lesion.finding == "Benign Calcification":  # a few large, smooth, round calcifications scattered near the site
        for _ in range(int(rng.integers(1, 4))):
            off = rng.normal(0, 6.0, 3)
            particles.append((lesion.back + off[0], lesion.lat + off[1], lesion.sup + off[2],
                              float(rng.uniform(1.0, lesion.size_mm)), float(rng.uniform(0.35, 0.5)), 0.0))
        return particles
    n = max(1, int(round(int(rng.integers(10, 30)) * count)))
    spread = lesion.size_mm / 2.0
    morph = lesion.shape
    direction = np.array([-1.0, rng.normal(0, 0.3), rng.normal(0, 0.3)])  # toward the nipple
    direction /= np.linalg.norm(direction)
    for _ in range(n):
        if lesion.margin in ("linear", "segmental"):
            t = rng.uniform(-1, 1) * spread
            width = spread * (0.15 if lesion.margin == "linear" else 0.2 + 0.3 * (t / spread + 1) / 2)
            pos = direction * t + rng.normal(0, width, 3)
        else:
            pos = rng.normal(0, spread / 2.0, 3)
        size = {"amorphous": rng.uniform(0.1, 0.25), "coarse heterogeneous": rng.uniform(0.5, 1.0),
                "fine pleomorphic": rng.uniform(0.15, 0.5), "fine linear branching": rng.uniform(0.15, 0.3)}[morph]
        bright = {"amorphous": rng.uniform(0.36, 0.46), "coarse heterogeneous": rng.uniform(0.4, 0.55),
                  "fine pleomorphic": rng.uniform(0.28, 0.5), "fine linear branching": rng.uniform(0.32, 0.5)}[morph]
        elong = float(rng.uniform(0.6, 2.5)) if morph == "fine linear branching" else 0.0
        particles.append((lesion.back + pos[0], lesion.lat + pos[1], lesion.sup + pos[2], float(size) * scale,
                          float(bright) * contrast, elong * scale))
    return particles


def _render_calcifications(intensity, geom, lesion, centre, view_index, scale: float = 1.0,
                           contrast: float = 1.0, count: float = 1.0) -> Rendered:
    s = geom.spacing
    particles = calcification_particles(lesion, scale, contrast, count)
    half = (lesion.size_mm * 1.6 + 6.0) / s + 4
    r0, r1, c0, c1 = _patch(intensity.shape, centre, half)
    canvas = np.zeros((r1 - r0, c1 - c0), np.float32)
    yy, xx = np.mgrid[0:r1 - r0, 0:c1 - c0].astype(np.float32)
    pts = []
    for back, lat, sup, size, bright, elong in particles:
        r, c = geom.project(back, lat, sup)
        r, c = r - r0, c - c0
        if not (0 <= r < canvas.shape[0] and 0 <= c < canvas.shape[1]):
            continue
        sigma = max(0.55, size / s / 2.355)
        if elong > 0:
            # A short linear cast: a thin line aimed roughly at the nipple.
            nr, nc = geom.nipple_rc[0] - r0, geom.nipple_rc[1] - c0
            vec = np.array([nr - r, nc - c], np.float32)
            vec /= max(float(np.linalg.norm(vec)), 1e-3)
            length = elong / s
            p0 = (int(round(c - vec[1] * length / 2)), int(round(r - vec[0] * length / 2)))
            p1 = (int(round(c + vec[1] * length / 2)), int(round(r + vec[0] * length / 2)))
            cv2.line(canvas, p0, p1, float(bright), 1, cv2.LINE_AA)
        else:
            w = int(math.ceil(3 * sigma)) + 1
            y0, y1 = max(0, int(r) - w), min(canvas.shape[0], int(r) + w + 1)
            x0, x1 = max(0, int(c) - w), min(canvas.shape[1], int(c) + w + 1)
            blob = np.exp(-((yy[y0:y1, x0:x1] - r) ** 2 + (xx[y0:y1, x0:x1] - c) ** 2) / (2 * sigma * sigma))
            if lesion.finding == "Benign Calcification":  # rim: brighter edge, lucent centre
                blob = blob * (0.6 + 0.4 * (1 - np.exp(-((yy[y0:y1, x0:x1] - r) ** 2 + (xx[y0:y1, x0:x1] - c) ** 2)
                                                          / (0.5 * sigma * sigma))))
                blob = np.where(blob > 0.2, np.minimum(1.0, blob * 1.4), blob)
            canvas[y0:y1, x0:x1] = np.maximum(canvas[y0:y1, x0:x1], bright * blob)
        pts.append((r, c))
    if not pts:
        # The cluster projected outside the patch (cannot happen for placed lesions); draw one speck at the centre.
        rc = (int(centre[0] - r0), int(centre[1] - c0))
        canvas[rc] = 0.4
    breast = geom.breast[r0:r1, c0:c1]
    canvas *= breast
    intensity[r0:r1, c0:c1] += canvas
    mask = canvas > 0.08
    if not mask.any():
        mask = canvas >= canvas.max()
    pad = max(1.0, 0.5 / s)
    return Rendered(box=_box_from_mask(mask, r0, c0, pad=pad), mask=mask, origin=(r0, c0))


def _render_vascular(intensity, geom, lesion, centre, rng) -> Rendered:
    """Tram-track vascular calcification: two thin parallel lines along a gently curved vessel."""
    s = geom.spacing
    length = lesion.size_mm / s
    half = length / 2 + 6
    r0, r1, c0, c1 = _patch(intensity.shape, centre, half)
    canvas = np.zeros((r1 - r0, c1 - c0), np.float32)
    base = np.random.default_rng(lesion.seed)
    angle = base.uniform(0, math.pi) + rng.normal(0, 0.1)
    curve = base.normal(0, 0.2)
    gap = max(1.5, 1.2 / s)
    cy, cx = centre[0] - r0, centre[1] - c0
    for side in (-1, 1):
        pts = []
        for t in np.linspace(-0.5, 0.5, 16):
            a = angle + curve * t * 2
            y = cy + math.sin(a) * t * length + side * gap / 2 * math.cos(angle)
            x = cx + math.cos(a) * t * length - side * gap / 2 * math.sin(angle)
            pts.append([int(round(x)), int(round(y))])
        cv2.polylines(canvas, [np.array(pts, np.int32)], False, 0.18, 1, cv2.LINE_AA)
    canvas *= geom.breast[r0:r1, c0:c1]
    intensity[r0:r1, c0:c1] += canvas
    mask = canvas > 0.05
    if not mask.any():
        mask = canvas >= canvas.max()
    return Rendered(box=_box_from_mask(mask, r0, c0), mask=mask, origin=(r0, c0))


def _render_distortion(intensity, geom, lesion, centre, rng, conspicuity) -> Rendered:
    """Radiating straight spicules without a central mass, plus a local contraction of the tissue."""
    s = geom.spacing
    reach = lesion.size_mm / 2.0 / s
    half = reach + 4
    r0, r1, c0, c1 = _patch(intensity.shape, centre, half)
    cy, cx = centre[0] - r0, centre[1] - c0
    patch = intensity[r0:r1, c0:c1].copy()
    dist, _, dy, dx = _polar(patch.shape, (cy, cx))
    pull = 0.35 * np.exp(-dist / max(reach * 0.35, 1.0))
    map_y = (cy + dy * (1 + pull)).astype(np.float32)
    map_x = (cx + dx * (1 + pull)).astype(np.float32)
    warped = cv2.remap(patch, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    canvas = np.zeros(patch.shape, np.float32)
    n = int(rng.integers(10, 22))
    for _ in range(n):
        a = rng.uniform(0, 2 * math.pi)
        length = reach * rng.uniform(0.5, 1.0)
        start = rng.uniform(0.0, 0.15) * reach
        p0 = (int(round(cx + math.cos(a) * start)), int(round(cy + math.sin(a) * start)))
        p1 = (int(round(cx + math.cos(a) * length)), int(round(cy + math.sin(a) * length)))
        cv2.line(canvas, p0, p1, 1.0, 1 if reach < 40 else 2, cv2.LINE_AA)
    fade = np.exp(-dist / max(reach * 0.6, 1.0))
    canvas = np.clip(canvas, 0, 1) * (0.35 + 0.65 * fade)
    breast = geom.breast[r0:r1, c0:c1]
    amp = 0.10 + 0.6 * conspicuity
    intensity[r0:r1, c0:c1] = np.where(breast, warped + amp * canvas, patch)
    core = (dist <= reach * 0.6) & breast
    return Rendered(box=_box_from_mask(core, r0, c0), mask=(canvas > 0.1) & breast, origin=(r0, c0))


def _render_asymmetry(intensity, gland, geom, lesion, centre, rng) -> Rendered:
    """A glandular island with concave, lobulated borders and interspersed fat."""
    s = geom.spacing
    radius = lesion.size_mm / 2.0 / s
    half = radius * 1.4 + 4
    r0, r1, c0, c1 = _patch(intensity.shape, centre, half)
    dist, theta, _, _ = _polar((r1 - r0, c1 - c0), (centre[0] - r0, centre[1] - c0))
    base = np.random.default_rng(lesion.seed)
    rad = radius * (1 + sum(base.uniform(0.05, 0.15) * np.cos(k * theta + base.uniform(0, 6.3)) for k in (2, 3, 5)))
    blob = 1.0 / (1.0 + np.exp(-(rad - dist) / max(1.0, radius * 0.12)))
    speck = rng.standard_normal(blob.shape).astype(np.float32)
    speck = cv2.GaussianBlur(speck, (0, 0), max(1.0, radius * 0.12))
    speck = (speck - speck.mean()) / max(float(speck.std()), 1e-6)
    fill = np.clip(0.8 + 0.25 * speck, 0.3, 1.0) * blob
    patch = intensity[r0:r1, c0:c1]
    breast = geom.breast[r0:r1, c0:c1]
    new = _blend_to(patch, GLAND, fill) + 0.03 * blob
    intensity[r0:r1, c0:c1] = np.where(breast, new, patch)
    gland[r0:r1, c0:c1] = np.maximum(gland[r0:r1, c0:c1], fill * breast)
    mask = (blob > 0.5) & breast
    return Rendered(box=_box_from_mask(mask, r0, c0), mask=mask, origin=(r0, c0))


def _render_node(intensity, geom, lesion, centre, rng) -> Rendered:
    """Intramammary lymph node: a small circumscribed oval with a lucent (fatty) hilum notch."""
    s = geom.spacing
    radius = lesion.size_mm / 2.0 / s
    half = radius * 1.6 + 4
    r0, r1, c0, c1 = _patch(intensity.shape, centre, half)
    dist, theta, dy, dx = _polar((r1 - r0, c1 - c0), (centre[0] - r0, centre[1] - c0))
    orient = np.random.default_rng(lesion.seed).uniform(0, math.pi) + rng.normal(0, 0.2)
    rad = radius / np.sqrt((np.cos(theta - orient) / 1.3) ** 2 + (np.sin(theta - orient) * 1.3) ** 2)
    body = 1.0 / (1.0 + np.exp(-(rad - dist) / 0.5))
    hilum = np.exp(-((dist - rad * 0.55) ** 2) / (2 * (0.25 * rad + 0.5) ** 2)) * (np.cos(theta - orient) > 0.6)
    profile = np.clip(body - 0.6 * hilum * body, 0, 1)
    patch = intensity[r0:r1, c0:c1]
    breast = geom.breast[r0:r1, c0:c1]
    new = _blend_to(patch, GLAND, profile) + 0.05 * profile
    intensity[r0:r1, c0:c1] = np.where(breast, new, patch)
    mask = (body > 0.5) & breast
    return Rendered(box=_box_from_mask(mask, r0, c0), mask=mask, origin=(r0, c0))
