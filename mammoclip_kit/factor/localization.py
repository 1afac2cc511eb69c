"""From a heatmap to boxes and scores, evaluated as the paper does (mAP at IoU 0.25 / 0.5 and the pointing game).

A feature-grid heatmap is upsampled to the image (:func:`upsample`), kept inside the breast (:func:`tissue_mask`),
thresholded at a quantile, split into connected regions that become scored boxes (:func:`heatmap_to_boxes`), and the
boxes are mapped back to original DICOM pixels through the preprocessing manifest (:func:`localize`).
:func:`evaluate_localization` scores a set of heatmaps against the ground-truth boxes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from mammoclip_kit.eval.metrics import APResult, average_precision_at_iou, pointing_game


def upsample(heatmap: Any, size: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of a 2-D heatmap to ``size = (height, width)`` (pixel-centre aligned) → float32 array."""
    tensor = torch.as_tensor(np.asarray(heatmap, dtype=np.float32))
    if tensor.dim() != 2:
        raise ValueError(f"upsample: expected a 2-D heatmap, got shape {tuple(tensor.shape)}")
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"upsample: size must be (height, width) with positive values, got {size}")
    out = F.interpolate(tensor[None, None], size=tuple(int(s) for s in size), mode="bilinear", align_corners=False)
    return out[0, 0].numpy()


def heatmap_to_boxes(heatmap: Any, quantile: float = 0.95, max_boxes: int | None = None,
                     min_pixels: int = 1, mask: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Threshold a heatmap at its ``quantile`` and turn each connected region into a scored box.

    Pixels ``>= np.quantile(heatmap, quantile)`` are kept (``>`` when that quantile is the minimum, so that a flat
    background is never selected); :func:`scipy.ndimage.label` (4-connectivity) finds the
    regions; each becomes ``(xmin, ymin, xmax, ymax)`` in pixel-edge coordinates (a region covering columns 3..7 gives
    ``xmin = 3, xmax = 8``) scored by the heatmap's maximum inside it. Returns ``(boxes K×4, scores K)`` sorted by
    score, at most ``max_boxes``. A constant heatmap gives no box. With a boolean ``mask`` (e.g. the breast, see
    :func:`tissue_mask`) the quantile is taken over the masked pixels only and nothing outside it is kept.
    """
    from scipy import ndimage

    array = np.asarray(heatmap, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"heatmap_to_boxes: expected a 2-D heatmap, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("heatmap_to_boxes: heatmap contains NaN or inf")
    if not 0.0 <= quantile < 1.0:
        raise ValueError(f"heatmap_to_boxes: quantile must lie in [0, 1), got {quantile}")
    region = np.ones(array.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if region.shape != array.shape:
        raise ValueError(f"heatmap_to_boxes: mask shape {region.shape} differs from the heatmap's {array.shape}")
    values = array[region]
    if values.size == 0 or np.ptp(values) == 0:
        return np.zeros((0, 4)), np.zeros(0)
    threshold = np.quantile(values, quantile)
    # ties at the minimum (a flat background) would select the whole image: keep only pixels above it then
    mask = (array > threshold if threshold <= values.min() else array >= threshold) & region
    labels, count = ndimage.label(mask)
    boxes, scores = [], []
    for index, region in enumerate(ndimage.find_objects(labels), start=1):
        if region is None:
            continue
        inside = labels[region] == index
        if inside.sum() < min_pixels:
            continue
        rows, cols = region
        boxes.append([cols.start, rows.start, cols.stop, rows.stop])
        scores.append(float(array[region][inside].max()))
    if not boxes:
        return np.zeros((0, 4)), np.zeros(0)
    boxes_arr, scores_arr = np.asarray(boxes, dtype=np.float64), np.asarray(scores)
    order = np.argsort(-scores_arr, kind="stable")[:max_boxes]
    return boxes_arr[order], scores_arr[order]


def tissue_mask(image: Any, threshold: float = 0.05, margin: int = 0) -> np.ndarray:
    """Boolean mask of the breast: pixels more than ``threshold`` of the image's grey range above its darkest value.

    The background of a PNG is its darkest value, but not always 0 (the cohort's converted images have a background
    of 2–5 grey levels on about half of the views): a mask ``image > 0`` would then be the whole frame. The same rule
    as :func:`mammoclip_kit.data.shifts.tissue_mask`. A constant image gives an empty mask. ``margin`` (pixels) erodes
    the mask, leaving out a band along the skin line and the image border, where the tower's channels respond to the
    edge of the breast rather than to a lesion (``factor.margin``; chosen on validation images).
    """
    array = np.asarray(image, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"tissue_mask: expected a 2-D image, got shape {array.shape}")
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"tissue_mask: threshold is a fraction of the grey range in [0, 1), got {threshold}")
    if int(margin) < 0:
        raise ValueError(f"tissue_mask: margin must be ≥ 0 pixels, got {margin}")
    from mammoclip_kit.data.shifts import tissue_mask as grey_range_mask

    mask = grey_range_mask(array, threshold)
    if int(margin) and mask.any():
        from scipy import ndimage

        mask = ndimage.binary_erosion(mask, iterations=int(margin), border_value=0)
    return mask


def localize(heatmap: Any, size: tuple[int, int], quantile: float = 0.95, max_boxes: int | None = 10,
             manifest_row: Mapping[str, Any] | None = None,
             mask: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Feature-map heatmap → upsampled heatmap (PNG frame, ``size``), boxes and scores.

    With a ``mask`` (PNG frame) the heatmap is set to its minimum outside it, so thresholds, boxes and the peak stay
    inside. With a preprocessing ``manifest_row`` the boxes are mapped back to original DICOM pixels
    (:func:`mammoclip_kit.data.preprocess.png_to_original`); otherwise they stay in PNG pixels.
    """
    full = upsample(heatmap, size)
    if mask is not None:
        region = np.asarray(mask, dtype=bool)
        if region.shape != full.shape:
            raise ValueError(f"localize: mask shape {region.shape} differs from the image size {full.shape}")
        if region.any():
            full = np.where(region, full, full[region].min()).astype(np.float32)
    boxes, scores = heatmap_to_boxes(full, quantile, max_boxes, mask=mask)
    if manifest_row is not None and len(boxes):
        from mammoclip_kit.data.preprocess import png_to_original

        boxes = png_to_original(boxes, manifest_row)
    return full, boxes, scores


@dataclass
class LocalizationResult:
    """mAP at IoU 0.25 / 0.5 and the pointing game of one attribute's heatmaps on a set of images."""

    map25: float
    map50: float
    pointing: float
    n_images: int
    n_boxes: int
    ap25: APResult | None = None
    ap50: APResult | None = None
    predictions: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    frame: str = "png"
    truth: list[np.ndarray] = field(default_factory=list)       # per image, the boxes of the AP (in ``frame``)
    hits: np.ndarray = field(default_factory=lambda: np.zeros(0))  # per image: 1 when its peak lies in a box


def evaluate_localization(heatmaps: Sequence[Any], sizes: Sequence[tuple[int, int]],
                          gt_png: Sequence[Any], *, gt_original: Sequence[Any] | None = None,
                          manifest_rows: Sequence[Mapping[str, Any] | None] | None = None, quantile: float = 0.95,
                          max_boxes: int | None = 10, masks: Sequence[Any] | None = None) -> LocalizationResult:
    """Evaluate heatmaps as the paper: boxes from :func:`localize`, VOC mAP at IoU 0.25 and 0.5, pointing game.

    ``heatmaps[i]`` is image ``i``'s feature-map heatmap, ``sizes[i]`` its PNG ``(height, width)``, ``gt_png[i]`` its
    ground-truth boxes in PNG pixels. With ``manifest_rows`` and ``gt_original`` the AP is computed in original DICOM
    pixels (the boxes mapped back through the manifest), otherwise in PNG pixels; the pointing game always uses the
    upsampled heatmap's arg-max against the PNG boxes. Every detection counts (no score threshold). ``masks[i]``
    (PNG frame, e.g. :func:`tissue_mask` of the image) restricts image ``i``'s heatmap to the breast.
    """
    n = len(heatmaps)
    if not (len(sizes) == len(gt_png) == n):
        raise ValueError(f"evaluate_localization: {n} heatmaps, {len(sizes)} sizes, {len(gt_png)} box lists")
    original = manifest_rows is not None and gt_original is not None
    if masks is not None and len(masks) != n:
        raise ValueError(f"evaluate_localization: {len(masks)} masks for {n} heatmaps")
    if original and not (len(manifest_rows) == len(gt_original) == n):
        raise ValueError("evaluate_localization: manifest_rows and gt_original need one entry per heatmap")
    predictions, full_maps, truth = [], [], []
    for i in range(n):
        row = manifest_rows[i] if original else None
        full, boxes, scores = localize(heatmaps[i], sizes[i], quantile, max_boxes, row,
                                       masks[i] if masks is not None else None)
        predictions.append((boxes, scores))
        full_maps.append(full)
        truth.append(np.asarray(gt_original[i] if original else gt_png[i], dtype=np.float64).reshape(-1, 4))
    ap25 = average_precision_at_iou(predictions, truth, 0.25)
    ap50 = average_precision_at_iou(predictions, truth, 0.5)
    png_boxes = [np.asarray(b, dtype=np.float64).reshape(-1, 4) for b in gt_png]
    pointing = pointing_game(full_maps, png_boxes)
    hits = np.array([pointing_game([m], [b]) if len(b) else np.nan for m, b in zip(full_maps, png_boxes, strict=True)])
    return LocalizationResult(ap25.ap, ap50.ap, pointing, n, sum(len(t) for t in truth), ap25, ap50, predictions,
                              "original" if original else "png", truth, hits)


@dataclass
class LocalizationBootstrap:
    """mAP@IoU and pointing game of several heatmap methods on the same images, with one patient bootstrap.

    ``point[method][metric]`` (metric ``"map"`` or ``"pointing"``) is the value on all images, ``replicates`` the
    values on each resample of patients — the same resamples for every method, so differences are paired.
    """

    point: dict[str, dict[str, float]]
    replicates: dict[str, dict[str, np.ndarray]]
    iou: float
    n_images: int
    n_patients: int

    def interval(self, method: str, metric: str = "map") -> tuple[float, float, float]:
        """(value, 2.5th, 97.5th percentile) of ``method``'s ``metric``."""
        from mammoclip_kit.eval.metrics import percentile_interval

        return (self.point[method][metric], *percentile_interval(self.replicates[method][metric]))

    def difference(self, a: str, b: str, metric: str = "pointing") -> tuple[float, float, float]:
        """Paired ``metric(a) − metric(b)`` with its 95 % interval."""
        from mammoclip_kit.eval.metrics import percentile_interval

        return (self.point[a][metric] - self.point[b][metric],
                *percentile_interval(self.replicates[a][metric] - self.replicates[b][metric]))

    def table(self) -> pd.DataFrame:
        """One row per method: mAP at ``iou`` and the pointing game, each with its 95 % patient-bootstrap interval."""
        rows = []
        for method in self.point:
            value, low, high = self.interval(method, "map")
            hit, hit_low, hit_high = self.interval(method, "pointing")
            rows.append({"method": method, f"mAP@{self.iou:g}": value, "map_low": low, "map_high": high,
                         "pointing game": hit, "pointing_low": hit_low, "pointing_high": hit_high})
        return pd.DataFrame(rows)


def _image_matches(result: LocalizationResult, iou: float) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """Per image: detection scores (descending), TP flags and number of true boxes at ``iou`` (for :func:`ap_of`)."""
    import warnings

    scores, flags, n_gt = [], [], []
    for (boxes, image_scores), truth in zip(result.predictions, result.truth, strict=True):
        image_scores = np.asarray(image_scores, dtype=np.float64).reshape(-1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            single = average_precision_at_iou([(np.asarray(boxes), image_scores)], [truth], iou)
        tp = np.diff(np.concatenate([[0.0], single.recall * single.n_gt])) if single.n_gt else \
            np.zeros(len(image_scores))
        scores.append(np.sort(image_scores)[::-1])
        flags.append(np.round(tp))
        n_gt.append(single.n_gt)
    return scores, flags, np.asarray(n_gt)


def localization_bootstrap(results: Mapping[str, LocalizationResult], patients: Sequence[Any], *,
                           iou: float = 0.25, n_boot: int = 1000, seed: int = 0) -> LocalizationBootstrap:
    """Patient bootstrap of mAP at ``iou`` and of the pointing game for methods evaluated on the same images.

    ``results`` maps a method to its :func:`evaluate_localization` of the same images in the same order;
    ``patients[i]`` is image ``i``'s patient. Each replicate draws the patients with replacement (all their images
    together) and recomputes every method's AP (VOC, each detection matched within its own image, so the per-image
    matches are reused) and pointing game on that resample.
    """
    from mammoclip_kit.eval.detection import ap_of

    if not results:
        raise ValueError("localization_bootstrap: no results")
    n = len(patients)
    for method, result in results.items():
        if result.n_images != n or len(result.truth) != n or len(result.hits) != n:
            raise ValueError(f"localization_bootstrap: {method!r} has {result.n_images} images (with per-image truth "
                             f"and hits), {n} patients given")
    codes = pd.factorize(pd.Series([str(p) for p in patients]))[0]
    members = [np.flatnonzero(codes == c) for c in range(codes.max() + 1)]
    rng = np.random.default_rng(seed)
    resamples = [np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])
                 for _ in range(n_boot)]
    everyone = np.arange(n)
    point, replicates = {}, {}
    for method, result in results.items():
        matches = _image_matches(result, iou)
        hits = np.asarray(result.hits, dtype=np.float64)
        point[method] = {"map": ap_of(matches, everyone), "pointing": float(np.nanmean(hits))}
        replicates[method] = {"map": np.array([ap_of(matches, index) for index in resamples]),
                              "pointing": np.array([np.nanmean(hits[index]) for index in resamples])}
    return LocalizationBootstrap(point, replicates, float(iou), n, len(members))
