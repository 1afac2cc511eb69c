"""DICOM → model-ready PNG: the paper-exact mode, a header-aware "voi" mode, a manifest and coordinate maps
(docs/reference-notes.md §6.1).

Two modes, one output contract (``out_dir/<patient_id>/<image_id>.png`` + one manifest row per image):

``paper``
    The published algorithm, step by step (docs/reference-notes.md §6.1): trim 5 pixels from every border,
    invert MONOCHROME1 (``max − x``), min–max scale the *stored* values to uint8 without any window (a rescale
    slope/intercept would not change the result), crop the breast with the reference's ROI heuristic
    (threshold at 40, longest run of non-constant columns in the central 80 % row band, then the same for
    rows), area-resize to 912 wide × 1520 tall and write an 8-bit PNG. Use it to compare with the paper or to
    feed the released checkpoints.
``voi``
    What a viewer shows: modality LUT (rescale), the header's VOI LUT or window (LINEAR / LINEAR_EXACT / SIGMOID;
    percentiles when the header has none), MONOCHROME1 inverted, then an Otsu + largest-connected-component breast
    mask that removes burnt-in markers outside the breast, a crop grown to the output's 5:3 aspect (no distortion),
    area resize and an 8- or 16-bit PNG.

The manifest stores the crop box in original pixel coordinates and the output size, so :func:`original_to_png` and
:func:`png_to_original` map boxes (and heatmaps' boxes) both ways. This module is one image at a time; folders of
images (the resumable multi-process batch, ``errors.csv``, the folder record and the notebooks' ``ensure_pngs``) are
:mod:`mammoclip_kit.data.batch`. Nothing from the DICOM header that identifies a person is written anywhere (see
:data:`mammoclip_kit.data.dicom.PHI_KEYWORDS`).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np

from mammoclip_kit import env
from mammoclip_kit.config import StageConfig
from mammoclip_kit.data.dicom import DicomError, DicomImage, read_dicom

__all__ = [
    "IMAGE_SOURCES",
    "MANIFEST_COLUMNS",
    "MODES",
    "PREPROCESSING_RECORD",
    "PreprocessConfig",
    "PreprocessError",
    "Processed",
    "benchmark",
    "breast_mask",
    "convert_dicom",
    "longest_run_indices",
    "make_phantom",
    "original_to_png",
    "paper_roi",
    "paper_scale",
    "plot_modes",
    "plot_paper_steps",
    "plot_voi_steps",
    "png_to_original",
    "preprocess_file",
    "process_image",
    "read_preprocessing_record",
    "source_ids",
    "write_preprocessing_record",
]

MODES: tuple[str, ...] = ("paper", "voi")
#: Reference constants (docs/reference-notes.md §6.1): border trim, ROI threshold, half-height of the central
#: band.
PAPER_BORDER = 5
PAPER_THRESHOLD = 40
PAPER_BAND = 0.4
#: Smallest image either mode accepts (rows and columns).
MIN_SIDE = 16

#: Where each dataset keeps its DICOMs under a data root (DESIGN.md "Data contracts").
IMAGE_SOURCES: dict[str, str] = {
    "vindr": "vindr/images/*/*.dicom",
    "rsna": "rsna/train_images/*/*.dcm",
    "reports": "reports/images/*/*.dcm",
}

MANIFEST_COLUMNS: tuple[str, ...] = (
    "image_id", "patient_id", "source", "output", "orig_height", "orig_width", "crop_x0", "crop_y0", "crop_x1",
    "crop_y1", "out_height", "out_width", "scale_x", "scale_y", "mode", "bits", "photometric", "bits_stored",
    "transfer_syntax", "manufacturer", "laterality", "view", "voi", "roi_contiguous", "settings", "source_bytes",
    "source_mtime_ns", "burned_in_annotation",
)

class PreprocessError(ValueError):
    """An image that decodes but cannot be preprocessed (too small, constant, no breast found)."""


@dataclass(frozen=True)
class PreprocessConfig(StageConfig):
    """Settings of one DICOM → PNG conversion (the profile's ``preprocess`` section maps onto these fields).

    ``workers`` only decides how the batch runs (the ``num_workers`` parameter overrides it); every other field
    decides the pixels and is part of :attr:`conversion` (what ``settings.json`` records).
    """

    SECTION: ClassVar[str] = "preprocess"
    PARAMETERS: ClassVar[dict[str, str]] = {"num_workers": "workers"}

    mode: str = "voi"               # "paper" (reference-exact) | "voi" (header-aware, better default)
    height: int = 1520              # output rows (the paper's 1520)
    width: int | None = 912         # output columns; None = round(height · 3/5), the paper's 5:3
    bits: int = 8                   # PNG bit depth: 8, or 16 (voi only)
    keep_aspect: bool = True        # voi: grow the breast box to the output aspect before resizing (no distortion)
    margin: float = 0.01            # voi: margin added around the breast box, as a fraction of each image side
    window_index: int = 0           # voi: which header window / VOI LUT to use
    prefer_lut: bool = True         # voi: a VOI LUT Sequence wins over Window Center/Width when both exist
    workers: int = 1                # processes of a batch (preprocess_many / ensure_pngs); not part of the output

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"preprocess mode {self.mode!r} is not one of {', '.join(MODES)}")
        if self.width is None:
            object.__setattr__(self, "width", int(round(self.height * 3 / 5)))
        if int(self.height) < MIN_SIDE or int(self.width) < MIN_SIDE:
            raise ValueError(f"output size {self.height}×{self.width} is too small (each side ≥ {MIN_SIDE})")
        object.__setattr__(self, "height", int(self.height))
        object.__setattr__(self, "width", int(self.width))
        if self.bits not in (8, 16):
            raise ValueError(f"bits must be 8 or 16, got {self.bits!r}")
        if self.mode == "paper" and self.bits != 8:
            raise ValueError("paper mode writes 8-bit PNGs like the reference; use --mode voi for 16-bit output")
        if not 0 <= self.margin < 0.5:
            raise ValueError(f"margin must be in [0, 0.5), got {self.margin}")

    @property
    def key(self) -> str:
        """A short string that identifies these settings (stored per manifest row; resume compares it)."""
        if self.mode == "paper":
            return f"paper-{self.height}x{self.width}-8bit"
        aspect = "aspect" if self.keep_aspect else "stretch"
        lut = "lut" if self.prefer_lut else "win"
        return f"voi-{self.height}x{self.width}-{self.bits}bit-{aspect}-m{self.margin:g}-w{self.window_index}-{lut}"

    @property
    def conversion(self) -> dict[str, Any]:
        """The fields that decide the output pixels (all but ``workers``), as passed to
        :func:`mammoclip_kit.data.batch.preprocess_many`."""
        values = asdict(self)
        values.pop("workers")
        return values


@dataclass
class Processed:
    """One preprocessed image: the PNG pixels, the crop box in original coordinates and (optionally) each step."""

    image: np.ndarray                          # (out_height, out_width) uint8 or uint16
    crop: tuple[int, int, int, int]            # x0, y0, x1, y1 in original pixels (may extend past the image in voi)
    orig_shape: tuple[int, int]                # original (rows, columns)
    voi: str                                   # which VOI was applied ("none (paper mode)", "window 0 …", "auto …")
    roi_contiguous: bool = True                # paper mode: False when tied runs made a non-rectangular selection
    steps: dict[str, Any] = field(default_factory=dict)  # intermediate images / masks when asked for


# ----------------------------------------------------------------------------------------------------------------------
# Paper mode (docs/reference-notes.md §6.1)


def _paper_values(x: np.ndarray, photometric: str) -> np.ndarray:
    """The reference's float64 arithmetic of steps 2–3 on ``x`` (inversion, min subtraction, / max, × 255, floor)."""
    if photometric == "MONOCHROME1":
        x = x.max() - x
    x = x - x.min()
    peak = x.max()
    if peak <= 0:
        raise PreprocessError("constant image after the border trim: min–max scaling is undefined "
                              "(the reference would write NaN)")
    return (x / peak * 255.0).astype(np.uint8)


def paper_scale(pixels: np.ndarray, photometric: str, border: int = PAPER_BORDER) -> np.ndarray:
    """Steps 1–3 of the reference: trim ``border`` px, invert MONOCHROME1 as ``max − x``, min–max to uint8 (floor).

    Integer images go through a lookup table holding, for every stored value between the minimum and the maximum, the
    result of exactly the same float64 operations: the output is identical and ~10× faster on full-size mammograms.
    """
    x = pixels[border:-border, border:-border] if border else pixels
    if np.issubdtype(x.dtype, np.integer):
        low, high = int(x.min()), int(x.max())
        if high - low < 1 << 17:
            domain = np.arange(low, high + 1, dtype=np.float64)
            # min/max of the domain equal those of the image, so the table reproduces the per-pixel arithmetic.
            table = _paper_values(domain, photometric)
            return table[(x.astype(np.int64) - low) if low else x]
    return _paper_values(np.asarray(x, dtype=np.float64), photometric)


def longest_run_indices(flags: np.ndarray) -> np.ndarray:
    """Indices of the longest run(s) of consecutive True values; tied runs are all kept (as the reference does)."""
    flags = np.asarray(flags, dtype=bool)
    if not flags.any():
        return np.zeros(0, dtype=np.int64)
    padded = np.concatenate([[False], flags, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    starts, stops = edges[0::2], edges[1::2]
    lengths = stops - starts
    best = lengths.max()
    return np.concatenate([np.arange(s, e) for s, e, n in zip(starts, stops, lengths, strict=True) if n == best])


def _nonconstant(image: np.ndarray, axis: int) -> np.ndarray:
    """Per column (axis=0) or row (axis=1): True where values vary (std ≠ 0 ⇔ max ≠ min)."""
    return image.max(axis=axis) != image.min(axis=axis)


def paper_roi(image8: np.ndarray, threshold: int = PAPER_THRESHOLD, band: float = PAPER_BAND,
              ) -> tuple[np.ndarray, np.ndarray]:
    """The reference breast ROI heuristic on the uint8 image: ``(row_indices, column_indices)`` to keep.

    A copy with pixels ≤ ``threshold`` set to 0 is searched: columns that vary inside the central row band
    ``[h//2 − int(band·h), h//2 + int(band·h))``, longest run(s); then rows that vary inside the central column band of
    the column-cropped copy, longest run(s).
    """
    work = image8.copy()
    work[work <= threshold] = 0
    h = work.shape[0]
    rows_band = work[max(h // 2 - int(band * h), 0): h // 2 + int(band * h)]
    cols = longest_run_indices(_nonconstant(rows_band, axis=0))
    if cols.size == 0:
        raise PreprocessError(f"breast ROI not found: no column varies after thresholding at {threshold} "
                              "(the image is blank or uniformly dark)")
    work = work[:, cols]
    w = work.shape[1]
    cols_band = work[:, max(w // 2 - int(band * w), 0): w // 2 + int(band * w)]
    rows = longest_run_indices(_nonconstant(cols_band, axis=1))
    if rows.size == 0:
        raise PreprocessError(f"breast ROI not found: no row varies after thresholding at {threshold}")
    return rows, cols


def _process_paper(image: DicomImage, cfg: PreprocessConfig, keep_steps: bool) -> Processed:
    scaled = paper_scale(image.pixels, image.photometric)
    rows, cols = paper_roi(scaled)
    contiguous = bool(cols[-1] - cols[0] + 1 == cols.size and rows[-1] - rows[0] + 1 == rows.size)
    # Tied runs select non-adjacent rows/columns (kept as the reference does); usually it is one rectangle.
    roi = scaled[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] if contiguous else scaled[np.ix_(rows, cols)]
    out = cv2.resize(roi, (cfg.width, cfg.height), interpolation=cv2.INTER_AREA)
    b = PAPER_BORDER
    crop = (int(cols[0]) + b, int(rows[0]) + b, int(cols[-1]) + 1 + b, int(rows[-1]) + 1 + b)
    steps: dict[str, Any] = {}
    if keep_steps:
        threshold = scaled.copy()
        threshold[threshold <= PAPER_THRESHOLD] = 0
        steps = {"uint8": scaled, "thresholded": threshold, "rows": rows, "cols": cols, "roi": roi}
    return Processed(out, crop, image.shape, "none (paper mode: stored values, min–max)", contiguous, steps)


# ----------------------------------------------------------------------------------------------------------------------
# VOI mode


def _small_masks(values: np.ndarray, max_side: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Breast and marker masks (uint8) of ``values`` downsampled so that its longer side is at most ``max_side``.

    Otsu's threshold ``T`` separates air from dense tissue but cuts the darker, thinner periphery of the breast, so
    the breast is the largest component above a lower threshold, a quarter of the way from the mean air level to
    ``T`` (after a 3×3 opening against noise), with its holes filled. Markers are components brighter than ``T``
    outside the breast (burnt-in text, labels). Also returns the median air level (in ``values`` units).
    """
    h, w = values.shape
    factor = max(h, w) / max_side if max(h, w) > max_side else 1.0
    small = values.astype(np.float32, copy=False)
    if factor != 1.0:
        small = cv2.resize(small, (max(1, round(w / factor)), max(1, round(h / factor))), interpolation=cv2.INTER_AREA)
    low, high = float(small.min()), float(small.max())
    if high <= low:
        raise PreprocessError("constant image: no breast can be separated from the background")
    u8 = np.rint((small - low) * (255.0 / (high - low))).astype(np.uint8)
    otsu, bright = cv2.threshold(u8, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    air = u8[bright == 0]
    air_mean = float(air.mean()) if air.size else 0.0
    lower = air_mean + 0.25 * (otsu - air_mean)
    fg = (u8 > lower).astype(np.uint8)
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    if n < 2:
        raise PreprocessError("breast not found: no foreground component above the air level")
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    breast = (labels == largest).astype(np.uint8)
    # Fill holes: background reachable from the border stays background; everything else belongs to the breast.
    flood = np.pad(1 - breast, 1, constant_values=1)
    cv2.floodFill(flood, None, (0, 0), 2)
    breast = (flood[1:-1, 1:-1] != 2).astype(np.uint8)
    near_breast = cv2.dilate(breast, np.ones((5, 5), np.uint8))
    markers = (bright & (1 - near_breast)).astype(np.uint8)
    if markers.any():
        markers = cv2.dilate(markers, np.ones((3, 3), np.uint8)) & (1 - breast)  # the markers' anti-aliased rims
    outside = (near_breast == 0) & (markers == 0)
    air_level = float(np.median(small[outside])) if outside.any() else low
    return breast, markers, air_level


def breast_mask(values: np.ndarray, max_side: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Otsu + largest connected component on a bright-is-dense image.

    Returns boolean ``(breast, markers)`` at full resolution: ``breast`` is the largest component with its holes
    filled, ``markers`` the other above-threshold components outside it (burnt-in text, labels). Computed on a copy
    downsampled so that its longer side is ``max_side`` pixels.
    """
    breast, markers, _ = _small_masks(values, max_side)
    h, w = values.shape
    if breast.shape != (h, w):
        breast = cv2.resize(breast, (w, h), interpolation=cv2.INTER_NEAREST)
        markers = cv2.resize(markers, (w, h), interpolation=cv2.INTER_NEAREST)
    return breast.astype(bool), markers.astype(bool) & ~breast.astype(bool)


def _grow_to_aspect(box: tuple[int, int, int, int], ratio: float, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """Grow ``box`` (x0, y0, x1, y1) to height/width = ``ratio``, staying inside ``shape`` when it fits."""
    x0, y0, x1, y1 = box
    h, w = y1 - y0, x1 - x0
    rows, cols = shape
    if h / w < ratio:   # too wide: add rows
        new_h = int(round(w * ratio))
        y0, y1 = _place(y0, y1, new_h, rows)
    else:               # too tall: add columns
        new_w = int(round(h / ratio))
        x0, x1 = _place(x0, x1, new_w, cols)
    return x0, y0, x1, y1


def _place(a0: int, a1: int, size: int, limit: int) -> tuple[int, int]:
    """An interval of length ``size`` centred on [a0, a1), shifted inside [0, limit) if it fits, else centred on it."""
    start = (a0 + a1 - size) // 2
    if size <= limit:
        start = min(max(start, 0), limit - size)
    else:
        start = (limit - size) // 2
    return start, start + size


def _crop_padded(image: np.ndarray, box: tuple[int, int, int, int], fill: float = 0) -> np.ndarray:
    """``image[y0:y1, x0:x1]`` where the box may extend past the image (padded with ``fill``)."""
    x0, y0, x1, y1 = box
    h, w = image.shape
    inner = image[max(y0, 0):min(y1, h), max(x0, 0):min(x1, w)]
    top, bottom, left, right = max(-y0, 0), max(y1 - h, 0), max(-x0, 0), max(x1 - w, 0)
    if not (top or bottom or left or right):
        return inner
    return cv2.copyMakeBorder(inner, top, bottom, left, right, cv2.BORDER_CONSTANT, value=float(fill))


def _voi_label(image: DicomImage, cfg: PreprocessConfig) -> str:
    source = image.voi_source(cfg.prefer_lut)
    if source == "window":
        c, w = image.meta["window_center"][cfg.window_index], image.meta["window_width"][cfg.window_index]
        return f"window {cfg.window_index}: center {c:g}, width {w:g}, {image.meta.get('voi_lut_function') or 'LINEAR'}"
    if source == "voi_lut":
        return f"VOI LUT {cfg.window_index}"
    return "auto: 0.5–99.5 percentile window of the crop (no VOI in the header)"


def _process_voi(image: DicomImage, cfg: PreprocessConfig, keep_steps: bool) -> Processed:
    values = image.modality()
    # The mask is found on the modality values turned bright = dense; they separate air from tissue better than a
    # window that may clip fat to black.
    top = float(values.max())
    bright = (top - values) if image.is_monochrome1 else values
    breast_s, markers_s, air = _small_masks(bright, max_side=512)
    if image.is_monochrome1:
        air = top - air
    rows, cols = image.shape
    hs, ws = breast_s.shape
    ys = np.flatnonzero(breast_s.any(axis=1))
    xs = np.flatnonzero(breast_s.any(axis=0))
    my, mx = int(round(cfg.margin * rows)), int(round(cfg.margin * cols))
    box = (max(int(np.floor(xs[0] * cols / ws)) - mx, 0), max(int(np.floor(ys[0] * rows / hs)) - my, 0),
           min(int(np.ceil((xs[-1] + 1) * cols / ws)) + mx, cols), min(int(np.ceil((ys[-1] + 1) * rows / hs)) + my, rows))
    markers = None
    if markers_s.any():  # burnt-in text outside the breast becomes air (the median air level)
        markers = cv2.resize(markers_s, (cols, rows), interpolation=cv2.INTER_NEAREST).astype(bool)
        markers &= ~cv2.resize(breast_s, (cols, rows), interpolation=cv2.INTER_NEAREST).astype(bool)
        values[markers] = air
    if cfg.keep_aspect:
        box = _grow_to_aspect(box, cfg.height / cfg.width, (rows, cols))
    roi = _crop_padded(values, box, fill=air)
    # Resize first, then window: the VOI is a point operation, and viewers apply it after zooming out, too.
    resized = cv2.resize(roi, (cfg.width, cfg.height), interpolation=cv2.INTER_AREA)
    shown = image.display(index=cfg.window_index, prefer_lut=cfg.prefer_lut, values=resized)
    peak = 255.0 if cfg.bits == 8 else 65535.0
    out = np.rint(np.clip(shown, 0.0, 1.0) * peak).astype(np.uint8 if cfg.bits == 8 else np.uint16)
    steps: dict[str, Any] = {}
    if keep_steps:
        full = image.display(index=cfg.window_index, prefer_lut=cfg.prefer_lut)
        breast_full = cv2.resize(breast_s, (cols, rows), interpolation=cv2.INTER_NEAREST).astype(bool)
        no_markers = np.zeros((rows, cols), bool) if markers is None else markers
        steps = {"display": full, "breast": breast_full, "markers": no_markers,
                 "cleaned": np.where(no_markers, 0.0, full).astype(np.float32), "box": box}
    return Processed(out, tuple(int(v) for v in box), image.shape, _voi_label(image, cfg), True, steps)


# ----------------------------------------------------------------------------------------------------------------------
# One image


def process_image(image: DicomImage, cfg: PreprocessConfig | None = None, *, keep_steps: bool = False) -> Processed:
    """Preprocess one decoded DICOM with ``cfg`` (default: voi mode at 1520×912).

    Raises :class:`PreprocessError` for images that are too small, constant or show no breast.
    """
    cfg = cfg or PreprocessConfig()
    rows, cols = image.shape
    if rows < MIN_SIDE or cols < MIN_SIDE:
        raise PreprocessError(f"image is {rows}×{cols} pixels: too small for a mammogram (each side ≥ {MIN_SIDE})")
    low, high = image.pixels.min(), image.pixels.max()
    if low == high:
        raise PreprocessError(f"constant image: every pixel is {low}, nothing to window or crop")
    if cfg.mode == "paper":
        return _process_paper(image, cfg, keep_steps)
    return _process_voi(image, cfg, keep_steps)


def source_ids(src: Path) -> tuple[str, str]:
    """(patient_id, image_id) of a DICOM path: the parent folder's name and the file stem."""
    return src.parent.name, src.stem


def _write_png(dst: Path, image: np.ndarray) -> None:
    """Encode and write atomically (temporary file + rename); the PNG carries no text metadata."""
    ok, buffer = cv2.imencode(".png", image)
    if not ok:
        raise PreprocessError(f"{dst}: OpenCV could not encode the PNG")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    tmp.write_bytes(buffer.tobytes())
    os.replace(tmp, dst)


def _row(src: Path, dst: Path, image: DicomImage, result: Processed, cfg: PreprocessConfig) -> dict[str, Any]:
    patient_id, image_id = source_ids(src)
    stat = src.stat()
    x0, y0, x1, y1 = result.crop
    out_h, out_w = result.image.shape
    meta = image.meta
    return {
        "image_id": image_id, "patient_id": patient_id, "source": str(src), "output": str(dst),
        "orig_height": result.orig_shape[0], "orig_width": result.orig_shape[1],
        "crop_x0": x0, "crop_y0": y0, "crop_x1": x1, "crop_y1": y1, "out_height": out_h, "out_width": out_w,
        "scale_x": out_w / (x1 - x0), "scale_y": out_h / (y1 - y0), "mode": cfg.mode, "bits": cfg.bits,
        "photometric": meta["photometric"], "bits_stored": meta["bits_stored"],
        "transfer_syntax": meta["transfer_syntax"], "manufacturer": meta["manufacturer"],
        "laterality": meta["laterality"], "view": meta["view"], "voi": result.voi,
        "roi_contiguous": result.roi_contiguous, "settings": cfg.key,
        # Resume redoes an image whose source changed (e.g. a regenerated cohort), not only a missing PNG.
        "source_bytes": stat.st_size, "source_mtime_ns": stat.st_mtime_ns,
        "burned_in_annotation": str(meta.get("burned_in_annotation", "") or "").upper(),
    }


def preprocess_file(src: str | os.PathLike, dst: str | os.PathLike, mode: str = "voi", height: int = 1520,
                    width: int | None = 912, bits: int = 8, **options: Any) -> dict[str, Any]:
    """Convert one DICOM to a PNG at ``dst`` and return its manifest row (paths as given).

    ``options`` are further :class:`PreprocessConfig` fields (``keep_aspect``, ``margin``, ``window_index``,
    ``prefer_lut``). Raises :class:`~mammoclip_kit.data.dicom.DicomError` / :class:`PreprocessError` naming the file.
    """
    cfg = PreprocessConfig(mode=mode, height=height, width=width, bits=bits, **options)
    return convert_dicom(Path(src), Path(dst), cfg)


def convert_dicom(src: Path, dst: Path, cfg: PreprocessConfig) -> dict[str, Any]:
    """Read ``src``, preprocess it with ``cfg``, write the PNG at ``dst`` (atomically) and return its manifest row.

    Raises :class:`~mammoclip_kit.data.dicom.DicomError` / :class:`PreprocessError` naming ``src``.
    """
    image = read_dicom(src)
    try:
        result = process_image(image, cfg)
    except PreprocessError as exc:
        raise PreprocessError(f"{src}: {exc}") from None
    _write_png(dst, result.image)
    return _row(src, dst, image, result, cfg)


# ----------------------------------------------------------------------------------------------------------------------
# Coordinate maps


def _box_params(row: Mapping[str, Any]) -> tuple[float, float, float, float]:
    x0, y0 = float(row["crop_x0"]), float(row["crop_y0"])
    sx = float(row["out_width"]) / (float(row["crop_x1"]) - x0)
    sy = float(row["out_height"]) / (float(row["crop_y1"]) - y0)
    return x0, y0, sx, sy


def original_to_png(boxes: np.ndarray, row: Mapping[str, Any], clip: bool = False) -> np.ndarray:
    """Map (N, 4) xyxy boxes from original DICOM pixels to PNG pixels of a manifest ``row``.

    ``png = (orig − crop_origin) · out_size / crop_size`` on each axis (continuous pixel-edge coordinates).
    ``clip=True`` clips to the PNG (parts of a box outside the crop are cut).
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x0, y0, sx, sy = _box_params(row)
    out = np.stack([(b[:, 0] - x0) * sx, (b[:, 1] - y0) * sy, (b[:, 2] - x0) * sx, (b[:, 3] - y0) * sy], axis=1)
    if clip:
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, float(row["out_width"]))
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, float(row["out_height"]))
    return out


def png_to_original(boxes: np.ndarray, row: Mapping[str, Any]) -> np.ndarray:
    """Map (N, 4) xyxy boxes from PNG pixels back to original DICOM pixels (inverse of :func:`original_to_png`)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x0, y0, sx, sy = _box_params(row)
    return np.stack([b[:, 0] / sx + x0, b[:, 1] / sy + y0, b[:, 2] / sx + x0, b[:, 3] / sy + y0], axis=1)


# ----------------------------------------------------------------------------------------------------------------------
# The preprocessing a checkpoint's images went through

#: File in a checkpoint folder naming the DICOM → PNG setting its training images were made with
#: (``{"mode", "height", "width", "bits"}``). ``python -m mammoclip_kit.predict`` converts DICOMs with its mode.
PREPROCESSING_RECORD = "preprocessing.json"


def write_preprocessing_record(folder: str | os.PathLike, cfg: PreprocessConfig) -> Path:
    """Record in a checkpoint ``folder`` the (mode, size, bits) of the PNGs its model was trained on."""
    from mammoclip_kit.artifacts import atomic_write_json

    return atomic_write_json(Path(folder) / PREPROCESSING_RECORD,
                             {"mode": cfg.mode, "height": int(cfg.height), "width": int(cfg.width),
                              "bits": int(cfg.bits)})


def read_preprocessing_record(checkpoint: str | os.PathLike) -> dict[str, Any] | None:
    """The preprocessing a checkpoint records (:data:`PREPROCESSING_RECORD` in a kit folder), or None when it records
    none (a released ``.tar``, a converted release, a folder written before the kit recorded it).

    Raises ``ValueError`` naming the file when the record is unreadable or names an unknown mode.
    """
    path = Path(checkpoint).expanduser() / PREPROCESSING_RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not valid JSON ({' '.join(str(error).split())})") from None
    if not isinstance(record, dict) or record.get("mode") not in MODES:
        raise ValueError(f"{path}: expected {{\"mode\": one of {', '.join(MODES)}, ...}}, got {record!r}")
    return record


# ----------------------------------------------------------------------------------------------------------------------
# Test images and the benchmark


def make_phantom(rows: int = 640, cols: int = 384, *, seed: int = 0, laterality: str = "L", bits: int = 12,
                 marker: bool = True, air: float = 0.05) -> np.ndarray:
    """A simple mammogram-like uint16 image (bright = dense) for tests and benchmarks.

    A half-ellipse breast against the chest wall (left edge for ``"L"``), smooth random texture, a darker periphery,
    air at ``air`` of the range plus noise, and optionally a bright burnt-in marker block in the opposite top corner.
    Not the teaching cohort (see :mod:`mammoclip_kit.cohort.generate`): just enough structure for the ROI code.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    cy, ry, rx = rows * 0.5, rows * 0.42, cols * 0.78
    x_from_wall = xx if laterality == "L" else (cols - 1 - xx)
    r = np.sqrt(((yy - cy) / ry) ** 2 + (x_from_wall / rx) ** 2)
    breast = r < 1.0
    small = rng.standard_normal((max(rows // 32, 2), max(cols // 32, 2))).astype(np.float32)
    texture = cv2.resize(small, (cols, rows), interpolation=cv2.INTER_CUBIC)
    tissue = 0.55 + 0.12 * texture - 0.25 * np.clip(r - 0.7, 0, None) / 0.3
    image = np.where(breast, np.clip(tissue, 0.2, 0.95), air)
    image = image + rng.normal(0, 0.01, image.shape)
    if marker:
        h, w = max(rows // 20, 2), max(cols // 8, 2)
        x0 = cols - w - cols // 40 if laterality == "L" else cols // 40
        y0 = rows // 40
        image[y0:y0 + h, x0:x0 + w] = 0.98
    peak = 2 ** bits - 1
    return np.rint(np.clip(image, 0, 1) * peak).astype(np.uint16)


def benchmark(argv: Sequence[str] | None = None) -> dict[str, float]:
    """``python -m mammoclip_kit.bench preprocess``: images/s per core of DICOM → PNG, paper and voi modes.

    Runs in one process (one core) over ``--n`` DICOMs: those of ``--source`` (a folder of ``<patient>/<image>``
    DICOMs), else the classroom cohort's VinDr part when it exists, else synthetic phantoms written to a temporary
    folder at ``--phantom-size``. Each image is read, decoded, preprocessed and PNG-encoded to a temporary folder.
    """
    import tempfile

    from mammoclip_kit.data.batch import find_sources
    from mammoclip_kit.data.dicom import write_dicom

    parser = argparse.ArgumentParser(prog="python -m mammoclip_kit.bench preprocess", description=benchmark.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=[*MODES, "both"], default="both")
    parser.add_argument("--n", type=int, default=8, help="images per mode")
    parser.add_argument("--source", type=Path, default=None, help="folder of DICOMs (default: cohort, else phantoms)")
    parser.add_argument("--height", type=int, default=1520)
    parser.add_argument("--width", type=int, default=912)
    parser.add_argument("--bits", type=int, default=8, help="voi mode bit depth")
    parser.add_argument("--phantom-size", default="3328x2560", help="rows x columns of synthetic phantoms")
    parser.add_argument("--phantoms", action="store_true", help="use synthetic phantoms even when the cohort exists")
    args = parser.parse_args(list(argv or []))
    cv2.setNumThreads(1)

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        cohort = env.default_data_root() / "cohort" / "classroom" / "vindr" / "images"
        if args.source is not None:
            sources, origin = find_sources(args.source)[: args.n], str(args.source)
        elif not args.phantoms and cohort.is_dir() and any(cohort.glob("*/*.dicom")):
            sources, origin = sorted(cohort.glob("*/*.dicom"))[: args.n], "classroom cohort (vindr)"
        else:
            rows, cols = (int(v) for v in args.phantom_size.lower().split("x"))
            sources = [write_dicom(tmp_path / "src" / f"p{i}" / f"img{i}.dcm",
                                   make_phantom(rows, cols, seed=i, laterality="LR"[i % 2]), bits_stored=12,
                                   window=[(2000, 3000)]) for i in range(args.n)]
            origin = f"synthetic phantoms {rows}×{cols}, 12-bit, uncompressed"
        if not sources:
            raise SystemExit(f"no DICOMs found in {args.source}")
        modes = list(MODES) if args.mode == "both" else [args.mode]
        print(f"DICOM → PNG benchmark: {len(sources)} images from {origin}, output {args.height}×{args.width}, "
              "1 process (images/s per core)")
        rates: dict[str, float] = {}
        for mode in modes:
            cfg = PreprocessConfig(mode=mode, height=args.height, width=args.width,
                                bits=8 if mode == "paper" else args.bits)
            convert_dicom(Path(sources[0]), tmp_path / "warmup.png", cfg)  # imports and first-call costs
            failed = 0
            t0, c0 = time.perf_counter(), time.process_time()
            for i, src in enumerate(sources):
                try:
                    convert_dicom(Path(src), tmp_path / mode / f"{i}.png", cfg)
                except (DicomError, PreprocessError) as exc:
                    failed += 1
                    print(f"  skipped: {exc}")
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
            done = len(sources) - failed
            rates[mode] = done / seconds if seconds > 0 else float("nan")
            # CPU time shows what an idle core would do when the machine is shared (wall time then includes waiting).
            print(f"  {mode:<6} {done} images in {seconds:.2f} s = {rates[mode]:.2f} images/s per core "
                  f"({1000 * seconds / max(done, 1):.0f} ms/image; {done / max(cpu, 1e-9):.2f} images per CPU-second)")
    return rates


# ----------------------------------------------------------------------------------------------------------------------
# Figures (notebook 02)


def plot_paper_steps(image: DicomImage, height: int = 1520, width: int = 912, size: float = 3.0):
    """The reference pipeline drawn step by step: stored pixels → uint8 → threshold + central bands → kept
    columns and rows → ROI → resized PNG."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    result = process_image(image, PreprocessConfig(mode="paper", height=height, width=width), keep_steps=True)
    s = result.steps
    rows, cols = s["rows"], s["cols"]
    fig, axes = plt.subplots(1, 5, figsize=(size * 5, size * 1.6))
    axes[0].imshow(image.pixels, cmap="gray")
    axes[0].set_title(f"1. stored values\n{image.photometric}, {image.meta['bits_stored']} bits", fontsize=9)
    axes[1].imshow(s["uint8"], cmap="gray", vmin=0, vmax=255)
    axes[1].set_title("2. trim 5 px, invert MONO1,\nmin–max → uint8", fontsize=9)
    h = s["thresholded"].shape[0]
    axes[2].imshow(s["thresholded"] > 0, cmap="gray")
    axes[2].axhspan(h // 2 - int(PAPER_BAND * h), h // 2 + int(PAPER_BAND * h), color="tab:orange", alpha=0.25)
    axes[2].axvline(cols[0], color="tab:red")
    axes[2].axvline(cols[-1], color="tab:red")
    axes[2].set_title("3. pixels > 40; columns that vary\nin the central band (orange)", fontsize=9)
    axes[3].imshow(s["uint8"], cmap="gray", vmin=0, vmax=255)
    axes[3].add_patch(Rectangle((cols[0] - 0.5, rows[0] - 0.5), cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1,
                                fill=False, edgecolor="tab:red", linewidth=1.5))
    axes[3].set_title("4. then rows that vary in the\ncentral column band: the ROI", fontsize=9)
    axes[4].imshow(result.image, cmap="gray", vmin=0, vmax=255)
    axes[4].set_title(f"5. INTER_AREA resize\n{width}×{height} (W×H), 8-bit PNG", fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    return fig


def plot_voi_steps(image: DicomImage, height: int = 1520, width: int = 912, size: float = 3.0, **options: Any):
    """The voi pipeline drawn step by step: header VOI → breast mask and markers → crop grown to 5:3 → PNG."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    cfg = PreprocessConfig(mode="voi", height=height, width=width, **options)
    result = process_image(image, cfg, keep_steps=True)
    s = result.steps
    x0, y0, x1, y1 = result.crop
    fig, axes = plt.subplots(1, 4, figsize=(size * 4, size * 1.6))
    axes[0].imshow(s["display"], cmap="gray", vmin=0, vmax=1)
    axes[0].set_title(f"1. modality + VOI, bright = dense\n{result.voi[:40]}", fontsize=9)
    overlay = np.dstack([s["markers"], s["breast"], np.zeros_like(s["breast"])]).astype(np.float32)
    axes[1].imshow(s["display"], cmap="gray", vmin=0, vmax=1)
    axes[1].imshow(overlay, alpha=0.35)
    axes[1].set_title(f"2. breast (green), markers (red)\n{int(s['markers'].sum())} marker pixels", fontsize=9)
    axes[2].imshow(s["cleaned"], cmap="gray", vmin=0, vmax=1)
    axes[2].add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="tab:cyan",
                                linewidth=1.5))
    axes[2].set_title("3. markers removed; box grown\nto the output's 5:3", fontsize=9)
    axes[3].imshow(result.image, cmap="gray")
    axes[3].set_title(f"4. resize, then window\n{width}×{height} (W×H), {cfg.bits}-bit PNG", fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    return fig


def plot_modes(images: Sequence[DicomImage], height: int = 1520, width: int = 912, size: float = 2.2):
    """Paper mode (top) and voi mode (bottom) of the same DICOMs, side by side."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(images), figsize=(size * len(images), size * 3.4), squeeze=False)
    for j, image in enumerate(images):
        for i, mode in enumerate(MODES):
            out = process_image(image, PreprocessConfig(mode=mode, height=height, width=width)).image
            axes[i, j].imshow(out, cmap="gray")
            axes[i, j].set_title(f"{mode}: {image.meta['manufacturer'][:14]}\n{image.photometric}", fontsize=8)
            axes[i, j].axis("off")
    fig.tight_layout()
    return fig
