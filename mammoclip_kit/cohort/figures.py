"""Figures and small look-ups of the teaching cohort (used by ``notebooks/01_the_cohort.ipynb``).

Every function reads the cohort through its real-format files and its ``truth/`` tables, so the same calls show what a
student would see on disk. Matplotlib is imported inside the functions.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

FINDING_COLOURS = {"Mass": "tab:red", "Suspicious Calcification": "gold", "Architectural Distortion": "tab:cyan",
                   "Focal Asymmetry": "tab:green", "Benign Calcification": "white",
                   "Intramammary Lymph Node": "tab:purple"}
_IDS = {"study_id": str, "series_id": str, "image_id": str, "patient_id": str}


def load_truth(root: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``truth/images.csv`` and ``truth/lesions.csv`` with identifiers read as strings."""
    root = Path(root)
    return (pd.read_csv(root / "truth" / "images.csv", dtype=_IDS),
            pd.read_csv(root / "truth" / "lesions.csv", dtype=_IDS))


def read_stored(path: str | Path) -> tuple[np.ndarray, Any]:
    """Stored pixel values of a DICOM (no VOI, no inversion) and its header."""
    import pydicom

    ds = pydicom.dcmread(path)
    return ds.pixel_array, ds


def display_pixels(path: str | Path) -> np.ndarray:
    """A float image in [0, 1] for display: MONOCHROME1 inverted, stretched between the breast's 0.5–99.8 %."""
    pixels, ds = read_stored(path)
    x = pixels.astype(np.float32)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        x = float((1 << int(ds.BitsStored)) - 1) - x
    background = np.median(np.concatenate([x[:, :4].ravel(), x[:, -4:].ravel()]))
    tissue = x[x > background + 1]
    lo, hi = np.percentile(tissue, [0.5, 99.8]) if tissue.size else (x.min(), x.max())
    return np.clip((x - lo) / max(hi - lo, 1.0), 0.0, 1.0)


def breast_bounds(pixels: np.ndarray, threshold: float = 0.02) -> tuple[tuple[int, int], tuple[int, int]]:
    """Row and column range (end exclusive) of the largest bright component: the breast, without burnt-in text."""
    import cv2

    mask = (pixels > threshold).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:
        return (0, pixels.shape[0]), (0, pixels.shape[1])
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, w, h = (int(stats[best, k]) for k in (cv2.CC_STAT_LEFT, cv2.CC_STAT_TOP, cv2.CC_STAT_WIDTH,
                                               cv2.CC_STAT_HEIGHT))
    return (y, y + h), (x, x + w)


def pick_exam(images: pd.DataFrame, lesions: pd.DataFrame, dataset: str = "reports",
              finding: str | None = "Mass") -> str:
    """A patient of ``dataset`` with ``finding`` in one breast (the first in file order); any patient if None."""
    candidates = lesions[lesions["dataset"] == dataset]
    if finding is not None:
        candidates = candidates[candidates["finding"] == finding]
    if len(candidates):
        return str(candidates["patient_id"].iloc[0])
    return str(images[images["dataset"] == dataset]["patient_id"].iloc[0])


def _boxes(ax, lesions: pd.DataFrame, image_id: str, label: bool = True) -> None:
    import matplotlib.patches as patches

    for _, les in lesions[lesions["image_id"] == image_id].iterrows():
        colour = FINDING_COLOURS.get(les["finding"], "white")
        ax.add_patch(patches.Rectangle((les["xmin"], les["ymin"]), les["xmax"] - les["xmin"],
                                       les["ymax"] - les["ymin"], fill=False, ec=colour, lw=1.0))
        if label:
            ax.text(les["xmin"], les["ymin"] - 4, les["finding"], color=colour, fontsize=6, va="bottom")


def show_exam(root: str | Path, patient_id: str, dataset: str = "reports", boxes: bool = True):
    """The four views of one exam (as hung: R left of L) with its report text beside them; returns the figure."""
    import matplotlib.pyplot as plt

    root = Path(root)
    images, lesions = load_truth(root)
    rows = images[(images["dataset"] == dataset) & (images["patient_id"] == patient_id)]
    if rows.empty:
        raise KeyError(f"{dataset} has no patient {patient_id!r} in {root / 'truth' / 'images.csv'}")
    fig = plt.figure(figsize=(13, 5.2))
    grid = fig.add_gridspec(1, 5, width_ratios=[1, 1, 1, 1, 2.2])
    order = [("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO")]
    for k, (lat, view) in enumerate(order):
        row = rows[(rows["laterality"] == lat) & (rows["view"] == view)].iloc[0]
        ax = fig.add_subplot(grid[0, k])
        ax.imshow(display_pixels(root / row["path"]), cmap="gray")
        if boxes:
            _boxes(ax, lesions, row["image_id"], label=False)
        ax.set_title(f"{lat}{view} · {row['vendor']}", fontsize=9)
        ax.set_axis_off()
    ax = fig.add_subplot(grid[0, 4])
    ax.set_axis_off()
    if dataset == "reports":
        report = pd.read_csv(root / "reports" / "reports.csv", dtype=_IDS)
        rep = report[report["patient_id"] == patient_id].iloc[0]
        text = "\n\n".join(f"{name}: " + textwrap.fill(str(rep[name]), 60) for name in ("HISTORY", "FINDINGS",
                                                                                       "IMPRESSION"))
    else:
        first = rows.iloc[0]
        text = f"density {first['density']}; findings L: {rows[rows.laterality == 'L'].iloc[0]['findings']}, " \
               f"R: {rows[rows.laterality == 'R'].iloc[0]['findings']}"
    ax.text(0, 1, text, va="top", ha="left", fontsize=7.5, family="monospace", wrap=True)
    fig.suptitle(f"{dataset} patient {patient_id} (density {rows.iloc[0]['density']})", fontsize=10)
    fig.tight_layout()
    return fig


def show_densities(root: str | Path, dataset: str = "vindr", view: str = "CC"):
    """One ``view`` per density category A–D, with the measured dense-area fraction."""
    import matplotlib.pyplot as plt

    root = Path(root)
    images, _ = load_truth(root)
    fig, axes = plt.subplots(1, 4, figsize=(11, 4.2))
    for ax, density in zip(axes, "ABCD", strict=True):
        pool = images[(images["dataset"] == dataset) & (images["view"] == view) & (images["density"] == density)]
        ax.set_axis_off()
        if pool.empty:
            ax.set_title(f"density {density}: none", fontsize=9)
            continue
        # The breast closest to its class's median dense fraction is the most typical example.
        row = pool.iloc[int(np.argmin(np.abs(pool["dense_fraction"] - pool["dense_fraction"].median())))]
        ax.imshow(display_pixels(root / row["path"]), cmap="gray")
        ax.set_title(f"density {density}: {row['dense_fraction']:.0%} dense", fontsize=9)
    fig.tight_layout()
    return fig


def show_findings(root: str | Path, size: tuple[int, int] = (320, 192)):
    """Each finding type zoomed at native resolution with its box, and the same breast cropped + resized to ``size``."""
    import cv2
    import matplotlib.patches as patches
    import matplotlib.pyplot as plt

    root = Path(root)
    images, lesions = load_truth(root)
    kinds = [k for k in FINDING_COLOURS if (lesions["finding"] == k).any()]
    fig, axes = plt.subplots(2, len(kinds), figsize=(2.4 * len(kinds), 7), squeeze=False)
    by_id = images.set_index("image_id")
    for j, kind in enumerate(kinds):
        pool = lesions[lesions["finding"] == kind]
        les = pool.iloc[int(np.argmin(np.abs(pool["size_mm"] - pool["size_mm"].median())))]
        img = by_id.loc[les["image_id"]]
        pixels = display_pixels(root / img["path"])
        half = int(max(les["xmax"] - les["xmin"], les["ymax"] - les["ymin"]) * 0.9 + 0.01 * max(pixels.shape)) + 8
        cy, cx = int(les["cy"]), int(les["cx"])
        y0, x0 = max(0, cy - half), max(0, cx - half)
        ax = axes[0, j]
        ax.imshow(pixels[y0:cy + half, x0:cx + half], cmap="gray", vmin=0, vmax=1)
        ax.add_patch(patches.Rectangle((les["xmin"] - x0, les["ymin"] - y0), les["xmax"] - les["xmin"],
                                       les["ymax"] - les["ymin"], fill=False, ec=FINDING_COLOURS[kind], lw=1.2))
        detail = " ".join(str(v) for v in (les["shape"], les["margin"]) if isinstance(v, str))
        ax.set_title(f"{kind}\n{detail} {les['size_mm']:.0f} mm", fontsize=7.5)
        ax.set_axis_off()
        # What the classroom model sees: breast bounding box resized to 320 × 192 (INTER_AREA).
        (y0c, y1c), (x0c, x1c) = breast_bounds(pixels)
        ys, xs = np.array([y0c]), np.array([x0c])
        crop = pixels[y0c:y1c, x0c:x1c]
        small = cv2.resize(crop, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        sx, sy = size[1] / crop.shape[1], size[0] / crop.shape[0]
        ax = axes[1, j]
        ax.imshow(small, cmap="gray", vmin=0, vmax=1)
        ax.add_patch(patches.Rectangle(((les["xmin"] - xs.min()) * sx - 2, (les["ymin"] - ys.min()) * sy - 2),
                                       (les["xmax"] - les["xmin"]) * sx + 4, (les["ymax"] - les["ymin"]) * sy + 4,
                                       fill=False, ec=FINDING_COLOURS[kind], lw=0.8))
        ax.set_title(f"{size[0]}×{size[1]} ({img['laterality']}{img['view']}, {img['density']})", fontsize=7.5)
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def vendor_table(root: str | Path) -> pd.DataFrame:
    """Per vendor: images, matrix, pixel size, bit depth, photometric, VOI header, transfer syntaxes and parts."""
    import pydicom

    root = Path(root)
    images, _ = load_truth(root)
    rows = []
    for vendor, group in images.groupby("vendor"):
        ds = pydicom.dcmread(root / group.iloc[0]["path"], stop_before_pixels=True)
        voi = "VOI LUT Sequence" if "VOILUTSequence" in ds else str(ds.get("VOILUTFunction", "LINEAR"))
        windows = ds.get("WindowCenter")
        n_windows = len(windows) if isinstance(windows, pydicom.multival.MultiValue) else 1
        rows.append({"vendor": vendor, "manufacturer": ds.Manufacturer, "model": ds.ManufacturerModelName,
                     "images": len(group), "matrix (rows×cols)": f"{group.iloc[0]['height']}×{group.iloc[0]['width']}",
                     "pixel mm": group.iloc[0]["pixel_spacing_mm"], "bits stored": int(ds.BitsStored),
                     "photometric": ds.PhotometricInterpretation, "VOI": f"{voi}, {n_windows} window(s)",
                     "transfer syntaxes": ", ".join(sorted(pydicom.uid.UID(t).name.split(" (")[0][:24]
                                                           for t in group["transfer_syntax"].unique())),
                     "parts": ", ".join(sorted(group["dataset"].unique()))})
    return pd.DataFrame(rows)


def show_vendor_histograms(root: str | Path, per_vendor: int = 3):
    """Histograms of the raw stored pixel values of each vendor (first ``per_vendor`` images), log counts."""
    import matplotlib.pyplot as plt

    root = Path(root)
    images, _ = load_truth(root)
    vendors = sorted(images["vendor"].unique())
    fig, axes = plt.subplots(1, len(vendors), figsize=(3.2 * len(vendors), 3), squeeze=False)
    for ax, vendor in zip(axes[0], vendors, strict=True):
        group = images[images["vendor"] == vendor].head(per_vendor)
        values, header = [], None
        for _, row in group.iterrows():
            pixels, header = read_stored(root / row["path"])
            values.append(pixels[::2, ::2].ravel())
        top = (1 << int(header.BitsStored)) - 1
        counts, edges = np.histogram(np.concatenate(values), bins=128, range=(0, top))
        ax.stairs(np.maximum(counts, 0.8), edges, fill=True, color="tab:blue")
        ax.set_yscale("log")
        ax.set_title(f"{vendor}: {header.BitsStored}-bit, {header.PhotometricInterpretation}", fontsize=8.5)
        ax.set_xlabel("stored value")
    axes[0, 0].set_ylabel("pixels (log)")
    fig.tight_layout()
    return fig


def two_view_table(root: str | Path) -> pd.DataFrame:
    """Per lesion: distance behind the nipple (mm) measured in CC and in MLO, and the 3-D truth."""
    images, lesions = load_truth(root)
    merged = lesions.merge(images[["image_id", "nipple_col", "pixel_spacing_mm"]], on="image_id")
    merged["depth_mm"] = (merged["cx"] - merged["nipple_col"]).abs() * merged["pixel_spacing_mm"]
    table = merged.pivot_table(index=["dataset", "patient_id", "laterality", "lesion_id", "finding"],
                               columns="view", values="depth_mm").reset_index()
    truth = lesions.drop_duplicates(["dataset", "patient_id", "laterality", "lesion_id"])
    table = table.merge(truth[["dataset", "patient_id", "laterality", "lesion_id", "back_mm", "clock", "quadrant"]],
                        on=["dataset", "patient_id", "laterality", "lesion_id"])
    return table.rename(columns={"CC": "depth CC (mm)", "MLO": "depth MLO (mm)", "back_mm": "truth (mm)"})


def model_view(path: str | Path, size: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int, float, float]]:
    """What a model sees: min–max scaled pixels (MONOCHROME1 inverted), cropped to the breast, resized to ``size``.

    Returns the image and (x0, y0, scale_x, scale_y) to map original pixel coordinates into it.
    """
    import cv2

    pixels, ds = read_stored(path)
    x = pixels.astype(np.float32)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        x = x.max() - x
    x = (x - x.min()) / max(float(x.max() - x.min()), 1.0)
    (y0, y1), (x0, x1) = breast_bounds(x, threshold=0.02 + float(np.median(x[:, :2])))
    crop = x[y0:y1, x0:x1]
    small = cv2.resize(crop, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return small, (x0, y0, size[1] / crop.shape[1], size[0] / crop.shape[0])


def lesion_contrast(root: str | Path, size: tuple[int, int] = (320, 192), per_finding: int = 40,
                    findings: tuple[str, ...] = ("Mass", "Suspicious Calcification", "Architectural Distortion",
                                                 "Focal Asymmetry")) -> pd.DataFrame:
    """Contrast of boxed lesions in the model's view: mean in the box minus mean of a surrounding ring, and CNR.

    CNR = contrast / standard deviation of the ring (the anatomical "noise" a detector must beat). Up to
    ``per_finding`` lesions of each kind (CC and MLO images both count), in file order.
    """
    root = Path(root)
    images, lesions = load_truth(root)
    by_id = images.set_index("image_id")
    rows = []
    for finding in findings:
        for _, les in lesions[lesions["finding"] == finding].head(per_finding).iterrows():
            img = by_id.loc[les["image_id"]]
            small, (x0, y0, sx, sy) = model_view(root / img["path"], size)
            bx0, bx1 = int((les["xmin"] - x0) * sx), int(np.ceil((les["xmax"] - x0) * sx)) + 1
            by0, by1 = int((les["ymin"] - y0) * sy), int(np.ceil((les["ymax"] - y0) * sy)) + 1
            pad = max(3, (bx1 - bx0) // 2, (by1 - by0) // 2)
            outer = small[max(0, by0 - pad):by1 + pad, max(0, bx0 - pad):bx1 + pad]
            inner = small[max(0, by0):by1, max(0, bx0):bx1]
            ring = np.ones(outer.shape, bool)
            ring[max(0, by0) - max(0, by0 - pad):max(0, by0) - max(0, by0 - pad) + inner.shape[0],
                 max(0, bx0) - max(0, bx0 - pad):max(0, bx0) - max(0, bx0 - pad) + inner.shape[1]] = False
            ring &= outer > 0.05  # ignore air around the breast
            if inner.size == 0 or ring.sum() < 4:
                continue
            contrast = float(inner.mean() - outer[ring].mean())
            peak = float(inner.max() - np.percentile(outer[ring], 99))
            rows.append({"finding": finding, "density": img["density"], "vendor": img["vendor"],
                         "size_mm": les["size_mm"], "box_px": int((bx1 - bx0) * (by1 - by0)),
                         "contrast": contrast, "cnr": contrast / max(float(outer[ring].std()), 1e-3),
                         "peak_over_p99": peak})
    return pd.DataFrame(rows)
