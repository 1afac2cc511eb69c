"""Evaluation metrics used across the kit (docs/reference-notes.md §8.1–8.4, §8.10).

Every metric takes plain arrays (NumPy, lists or CPU torch tensors) and returns plain Python floats or small dataclasses,
so notebooks can print and serialise them directly.

* Classification: :func:`roc_auc` (NaN with a warning when only one class is present, where the reference silently
  returned 0.5), :func:`breast_level_scores` / :func:`breast_level_auc` (the paper's RSNA aggregation: mean image
  probability per patient × laterality, label = max), :func:`density_metrics` (accuracy, balanced accuracy, macro-F1).
* Uncertainty: :func:`bootstrap_ci`, a seeded percentile bootstrap that can resample whole patients (``groups``).
* Localisation: :func:`box_iou`, :func:`voc_ap` (VOC all-point interpolation with the precision envelope),
  :func:`average_precision_at_iou` (the reference detector's matching rule, docs/reference-notes.md §8.4) and
  :func:`pointing_game`.
* Retrieval: :func:`retrieval_metrics` (Recall@k and mean / median rank in both directions, duplicated texts merged as in
  docs/reference-notes.md §8.2).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "APResult",
    "ConfidenceInterval",
    "average_precision_at_iou",
    "bootstrap_ci",
    "percentile_interval",
    "box_iou",
    "breast_level_auc",
    "breast_level_scores",
    "density_metrics",
    "pointing_game",
    "retrieval_metrics",
    "roc_auc",
    "voc_ap",
]

#: Floor on IoU unions and precision denominators (as the reference's ``compute_overlap`` / ``max(TP+FP, eps)``).
EPS = float(np.finfo(np.float64).eps)


def _as_numpy(values: Any, name: str = "array") -> np.ndarray:
    """Convert lists, pandas objects and (CPU or accelerator) torch tensors to a NumPy array."""
    if hasattr(values, "detach"):  # torch.Tensor, without importing torch here
        values = values.detach().float().cpu().numpy() if values.is_floating_point() else values.detach().cpu().numpy()
    elif isinstance(values, (pd.Series, pd.DataFrame)):
        values = values.to_numpy()
    array = np.asarray(values)
    if array.dtype == object:
        raise TypeError(f"{name}: expected numbers, got an object array (mixed or missing values?)")
    return array


# ----------------------------------------------------------------------------------------------------------------------
# Classification
# ----------------------------------------------------------------------------------------------------------------------


def _check_binary(y_true: np.ndarray, y_score: np.ndarray) -> None:
    if y_true.ndim != 1 or y_score.ndim != 1:
        raise ValueError(f"roc_auc: expected 1-D arrays, got shapes {y_true.shape} and {y_score.shape}")
    if len(y_true) != len(y_score):
        raise ValueError(f"roc_auc: y_true has {len(y_true)} values but y_score has {len(y_score)}")
    labels = set(np.unique(y_true).tolist())
    if not labels <= {0, 1}:  # also accepts booleans and 0.0 / 1.0
        raise ValueError(f"roc_auc: y_true must be binary 0/1, found values {sorted(labels)[:5]}")
    if np.isnan(y_score.astype(float)).any():
        index = int(np.flatnonzero(np.isnan(y_score.astype(float)))[0])
        raise ValueError(f"roc_auc: y_score contains NaN (first at position {index})")


def _auc_unchecked(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Mann–Whitney AUC with average ranks for ties (equal to ``sklearn.metrics.roc_auc_score``); NaN if one class."""
    from scipy.stats import rankdata

    positive = y_true.astype(bool)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(y_score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_auc(y_true: Any, y_score: Any, *, warn: bool = True) -> float:
    """Area under the ROC curve of binary labels ``y_true`` (0/1) and scores ``y_score``.

    Computed from ranks (the Mann–Whitney statistic with average ranks for ties), which equals
    ``sklearn.metrics.roc_auc_score`` exactly and is fast enough for thousands of bootstrap replicates. When only one
    class is present the AUC is undefined: the result is NaN and a ``UserWarning`` says so (``warn=False`` silences it).
    """
    y_true, y_score = _as_numpy(y_true, "y_true"), _as_numpy(y_score, "y_score")
    y_true = y_true.ravel() if y_true.ndim == 2 and y_true.shape[1] == 1 else y_true
    y_score = y_score.ravel() if y_score.ndim == 2 and y_score.shape[1] == 1 else y_score
    _check_binary(y_true, y_score)
    value = _auc_unchecked(y_true, y_score)
    if math.isnan(value) and warn:
        present = sorted(set(np.unique(y_true).astype(int).tolist()))
        warnings.warn(f"roc_auc: only class {present} present in {len(y_true)} labels; AUC is undefined (NaN)",
                      UserWarning, stacklevel=2)
    return value


def breast_level_scores(df: pd.DataFrame, score_col: str, label_col: str,
                        group_col: str = "breast_id") -> pd.DataFrame:
    """Aggregate image-level rows to one row per breast, as the paper does for RSNA.

    The breast score is the mean of its images' ``score_col`` values and its label the max of ``label_col`` (a breast is
    positive when any of its images is). When ``group_col`` is ``"breast_id"`` and the table has no such column, it is
    built from ``patient_id`` and ``laterality``. Returns columns ``[group_col, score_col, label_col, "n_images"]``,
    sorted by ``group_col``.
    """
    df = df.copy()
    if group_col not in df.columns:
        if group_col == "breast_id" and {"patient_id", "laterality"} <= set(df.columns):
            df[group_col] = df["patient_id"].astype(str) + "_" + df["laterality"].astype(str)
        else:
            raise KeyError(f"breast_level_scores: column {group_col!r} not in the table (columns: {list(df.columns)})")
    for column in (score_col, label_col):
        if column not in df.columns:
            raise KeyError(f"breast_level_scores: column {column!r} not in the table (columns: {list(df.columns)})")
        missing = df[column].isna()
        if missing.any():
            row = df.index[missing.to_numpy()][0]
            raise ValueError(f"breast_level_scores: column {column!r} is missing at row {row!r}")
    grouped = df.groupby(group_col, sort=True)
    out = pd.DataFrame({
        score_col: grouped[score_col].mean(),
        label_col: grouped[label_col].max(),
        "n_images": grouped.size(),
    }).reset_index()
    return out


def breast_level_auc(df: pd.DataFrame, score_col: str, label_col: str, group_col: str = "breast_id") -> float:
    """ROC AUC after :func:`breast_level_scores` aggregation (the paper's RSNA malignancy metric)."""
    breasts = breast_level_scores(df, score_col, label_col, group_col)
    return roc_auc(breasts[label_col].to_numpy().astype(int), breasts[score_col].to_numpy())


def density_metrics(y_true: Any, y_pred: Any, labels: Sequence[int] | None = None) -> dict[str, float]:
    """Accuracy, balanced accuracy (mean per-class recall) and macro-F1 of class predictions.

    ``labels`` fixes the class set used by macro-F1 (default: the classes present in ``y_true`` or ``y_pred``); classes
    absent from ``y_true`` are ignored by balanced accuracy, as in scikit-learn.
    """
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    y_true = _as_numpy(y_true, "y_true").astype(int)
    y_pred = _as_numpy(y_pred, "y_pred").astype(int)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"density_metrics: expected two 1-D arrays of equal length, got {y_true.shape} and {y_pred.shape}")
    if len(y_true) == 0:
        raise ValueError("density_metrics: no samples")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # balanced accuracy warns about classes only predicted, never true
        balanced = balanced_accuracy_score(y_true, y_pred)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
    }


# ----------------------------------------------------------------------------------------------------------------------
# Bootstrap
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfidenceInterval:
    """A point estimate with a percentile-bootstrap interval ``[low, high]``."""

    point: float  # the metric on the full data
    low: float  # lower percentile (alpha / 2) of the bootstrap replicates
    high: float  # upper percentile (1 - alpha / 2)
    n_boot: int = 0  # replicates with a finite metric value (resamples with one class are dropped)

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        """``{prefix: point, prefix_ci_low: low, prefix_ci_high: high}`` (keys without prefix when it is empty)."""
        if not prefix:
            return {"point": self.point, "ci_low": self.low, "ci_high": self.high}
        return {prefix: self.point, f"{prefix}_ci_low": self.low, f"{prefix}_ci_high": self.high}

    def __str__(self) -> str:
        return f"{self.point:.3f} [{self.low:.3f}, {self.high:.3f}]"


def percentile_interval(values: np.ndarray, alpha: float = 0.05) -> tuple[float, float]:
    """The (alpha/2, 1 − alpha/2) percentiles of the finite bootstrap replicates in ``values`` (NaNs if none)."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if not len(finite):
        return float("nan"), float("nan")
    low, high = np.percentile(finite, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)


def bootstrap_ci(metric_fn: Callable[..., float], *arrays: Any, n_boot: int = 1000, seed: int = 0,
                 groups: Any = None, alpha: float = 0.05) -> ConfidenceInterval:
    """Percentile bootstrap confidence interval of ``metric_fn(*arrays)``.

    Each replicate resamples the rows of all ``arrays`` together, with replacement. With ``groups`` (one id per row,
    e.g. patient ids) whole groups are resampled, so that images of one patient stay together. Replicates whose metric is
    not finite (a resample with one class has no AUC) are dropped; ``n_boot`` of the result counts the ones kept. The same
    ``seed`` gives the same interval.
    """
    if not arrays:
        raise ValueError("bootstrap_ci: give at least one array")
    if not 0 < alpha < 1:
        raise ValueError(f"bootstrap_ci: alpha must lie in (0, 1), got {alpha}")
    data = [_as_numpy(a, f"array {i}") for i, a in enumerate(arrays)]
    n = len(data[0])
    for i, array in enumerate(data):
        if len(array) != n:
            raise ValueError(f"bootstrap_ci: array {i} has {len(array)} rows, array 0 has {n}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        point = float(metric_fn(*data))
    rng = np.random.default_rng(seed)
    if groups is not None:
        group_values = groups.detach().cpu().numpy() if hasattr(groups, "detach") else np.asarray(groups, dtype=object)
        if len(group_values) != n:
            raise ValueError(f"bootstrap_ci: groups has {len(group_values)} values, the arrays have {n} rows")
        codes, uniques = pd.factorize(pd.Series(group_values))
        if (codes < 0).any():
            raise ValueError(f"bootstrap_ci: groups has a missing value at row {int(np.flatnonzero(codes < 0)[0])}")
        order = np.argsort(codes, kind="stable")
        members = np.split(order, np.cumsum(np.bincount(codes, minlength=len(uniques)))[:-1])
    values = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(n_boot):
            if groups is None:
                index = rng.integers(0, n, size=n)
            else:
                picked = rng.integers(0, len(members), size=len(members))
                index = np.concatenate([members[g] for g in picked])
            value = float(metric_fn(*[a[index] for a in data]))
            if math.isfinite(value):
                values.append(value)
    if not values:
        return ConfidenceInterval(point, float("nan"), float("nan"), 0)
    low, high = np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return ConfidenceInterval(point, float(low), float(high), len(values))


# ----------------------------------------------------------------------------------------------------------------------
# Localisation
# ----------------------------------------------------------------------------------------------------------------------


def _boxes(values: Any, name: str) -> np.ndarray:
    array = _as_numpy(values, name).astype(np.float64)
    if array.size == 0:
        return array.reshape(0, 4)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"{name}: expected an N×4 array of xyxy boxes, got shape {array.shape}")
    bad = (array[:, 2] < array[:, 0]) | (array[:, 3] < array[:, 1])
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name}: box {i} {array[i].tolist()} has xmax < xmin or ymax < ymin (expected xyxy)")
    return array


def box_iou(a: Any, b: Any) -> np.ndarray:
    """Pairwise intersection over union of ``a`` (N×4) and ``b`` (M×4) boxes in ``xmin, ymin, xmax, ymax`` → N×M.

    Coordinates are continuous (area = width × height, no ``+1``); the union is floored at machine epsilon so that
    degenerate boxes give 0 instead of NaN, as the reference's ``compute_overlap`` does.
    """
    a, b = _boxes(a, "a"), _boxes(b, "b")
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    union = np.maximum(area_a[:, None] + area_b[None, :] - inter, EPS)
    return inter / union


def voc_ap(recall: Any, precision: Any) -> float:
    """VOC all-point interpolated average precision (docs/reference-notes.md §8.4, py-faster-rcnn's
    ``_compute_ap``).

    Pads recall with 0 and 1 and precision with 0 and 0, replaces every precision by the maximum precision at any higher
    recall (the precision envelope), then sums ``Δrecall × envelope`` over the points where recall changes.
    """
    recall = _as_numpy(recall, "recall").astype(np.float64)
    precision = _as_numpy(precision, "precision").astype(np.float64)
    if recall.shape != precision.shape or recall.ndim != 1:
        raise ValueError(f"voc_ap: recall and precision must be 1-D and equal in length, got {recall.shape}, "
                         f"{precision.shape}")
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    change = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[change + 1] - mrec[change]) * mpre[change + 1]))


@dataclass(frozen=True)
class APResult:
    """Average precision of one class with the curve it was computed from."""

    ap: float  # VOC all-point AP; NaN when there is no ground-truth box
    precision: np.ndarray  # cumulative precision after each detection, in global score order
    recall: np.ndarray  # cumulative recall after each detection
    n_gt: int  # number of ground-truth boxes
    n_det: int = 0  # detections evaluated (after the score threshold and the per-image cap)


def average_precision_at_iou(predictions: Sequence[tuple[Any, Any]], ground_truth: Sequence[Any],
                             iou_threshold: float = 0.5, score_threshold: float | None = None,
                             max_detections: int | None = None) -> APResult:
    """Detection AP of one class at one IoU threshold, following the reference detector's rule
    (docs/reference-notes.md §8.4).

    ``predictions[i] = (boxes N×4, scores N)`` and ``ground_truth[i] = boxes M×4`` for image ``i`` (xyxy, same pixel
    frame). Per image, detections above ``score_threshold`` (if given) are sorted by score and capped at
    ``max_detections`` (the reference uses 0.2 and 100). Within the image each detection, in descending score order, is
    compared with its *highest-IoU* ground-truth box: it is a true positive when that IoU ≥ ``iou_threshold`` and that
    box is not already matched, otherwise a false positive (a detection whose best box is taken does not fall back to a
    second-best box). All detections are then sorted globally by score (stable), TP/FP are accumulated,
    ``recall = TP / n_gt`` and ``precision = TP / max(TP + FP, eps)``, and AP is :func:`voc_ap`. With no ground-truth box
    the AP is undefined: NaN with a warning.
    """
    if len(predictions) != len(ground_truth):
        raise ValueError(f"average_precision_at_iou: {len(predictions)} prediction entries but "
                         f"{len(ground_truth)} ground-truth entries (one per image each)")
    all_scores: list[np.ndarray] = []
    all_tp: list[np.ndarray] = []
    n_gt = 0
    for i, ((boxes, scores), gt) in enumerate(zip(predictions, ground_truth, strict=True)):
        boxes = _boxes(boxes, f"predictions[{i}] boxes")
        scores = _as_numpy(scores, f"predictions[{i}] scores").astype(np.float64).reshape(-1)
        if len(scores) != len(boxes):
            raise ValueError(f"predictions[{i}]: {len(boxes)} boxes but {len(scores)} scores")
        gt = _boxes(gt, f"ground_truth[{i}]")
        n_gt += len(gt)
        if score_threshold is not None:
            keep = scores > score_threshold
            boxes, scores = boxes[keep], scores[keep]
        order = np.argsort(-scores, kind="stable")
        if max_detections is not None:
            order = order[:max_detections]
        boxes, scores = boxes[order], scores[order]
        tp = np.zeros(len(scores))
        if len(gt) and len(boxes):
            iou = box_iou(boxes, gt)
            matched = np.zeros(len(gt), dtype=bool)
            for d in range(len(boxes)):
                best = int(np.argmax(iou[d]))
                if iou[d, best] >= iou_threshold and not matched[best]:
                    matched[best] = True
                    tp[d] = 1.0
        all_scores.append(scores)
        all_tp.append(tp)
    scores = np.concatenate(all_scores) if all_scores else np.zeros(0)
    tp = np.concatenate(all_tp) if all_tp else np.zeros(0)
    order = np.argsort(-scores, kind="stable")
    tp = tp[order]
    cum_tp = np.cumsum(tp)
    cum_fp = np.cumsum(1.0 - tp)
    precision = cum_tp / np.maximum(cum_tp + cum_fp, EPS)
    if n_gt == 0:
        warnings.warn("average_precision_at_iou: no ground-truth boxes; AP is undefined (NaN)", UserWarning,
                      stacklevel=2)
        return APResult(float("nan"), precision, np.zeros_like(precision), 0, len(tp))
    recall = cum_tp / n_gt
    return APResult(voc_ap(recall, precision), precision, recall, n_gt, len(tp))


def pointing_game(heatmaps_or_points: Sequence[Any], gt_boxes: Sequence[Any]) -> float:
    """Fraction of images whose most salient point falls inside one of their ground-truth boxes.

    Each entry of ``heatmaps_or_points`` is either a 2-D heatmap (its arg-max pixel, column = x and row = y, is the
    point; the first maximum in row-major order on ties) or an ``(x, y)`` point. ``gt_boxes[i]`` holds image ``i``'s
    boxes (M×4 xyxy, in the heatmap's pixel frame); a point on a box edge counts as inside. Images without boxes are
    skipped; with none left the result is NaN.
    """
    if len(heatmaps_or_points) != len(gt_boxes):
        raise ValueError(f"pointing_game: {len(heatmaps_or_points)} heatmaps/points but {len(gt_boxes)} box lists")
    hits, counted = 0, 0
    for i, (item, boxes) in enumerate(zip(heatmaps_or_points, gt_boxes, strict=True)):
        boxes = _boxes(boxes, f"gt_boxes[{i}]")
        if len(boxes) == 0:
            continue
        array = _as_numpy(item, f"heatmaps_or_points[{i}]")
        if array.ndim == 2:
            if not np.isfinite(array).all():
                raise ValueError(f"heatmaps_or_points[{i}]: heatmap contains NaN or inf")
            y, x = np.unravel_index(int(np.argmax(array)), array.shape)
        elif array.shape == (2,):
            x, y = float(array[0]), float(array[1])
        else:
            raise ValueError(f"heatmaps_or_points[{i}]: expected a 2-D heatmap or an (x, y) point, got shape "
                             f"{array.shape}")
        inside = (boxes[:, 0] <= x) & (x <= boxes[:, 2]) & (boxes[:, 1] <= y) & (y <= boxes[:, 3])
        hits += int(inside.any())
        counted += 1
    return hits / counted if counted else float("nan")


# ----------------------------------------------------------------------------------------------------------------------
# Retrieval
# ----------------------------------------------------------------------------------------------------------------------


def _normalise_rows(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def _ranks(similarity: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """1-based rank of the best correct candidate per query row: 1 + #candidates strictly more similar than it."""
    best_correct = np.where(correct, similarity, -np.inf).max(axis=1)
    return 1 + (similarity > best_correct[:, None]).sum(axis=1)


def retrieval_metrics(image_emb: Any, text_emb: Any, ks: Sequence[int] = (1, 5, 10),
                      text_ids: Sequence[Any] | None = None) -> dict[str, float]:
    """Image→text and text→image retrieval of paired embeddings (row ``i`` of both belongs together).

    Similarity is cosine (rows are L2-normalised here). As in the reference (docs/reference-notes.md §8.2)
    duplicated texts are merged: ``text_ids`` (e.g. the report strings; default: every row is its own text)
    groups rows with the same text, each group is represented once (its first embedding) in the text gallery,
    and an image's target is its group. For text→image, each unique text queries all images and any image of
    its group is a correct hit. The rank of a query is ``1 +`` the number of candidates strictly more similar
    than its best correct candidate (ties resolved in the query's favour). Returns ``image_to_text_R@k`` /
    ``text_to_image_R@k`` (fractions of queries with rank ≤ k) and ``*_mean_rank`` / ``*_median_rank``, plus
    ``n_images`` and ``n_texts`` (unique).
    """
    images = _as_numpy(image_emb, "image_emb").astype(np.float64)
    texts = _as_numpy(text_emb, "text_emb").astype(np.float64)
    if images.ndim != 2 or texts.ndim != 2 or images.shape != texts.shape:
        raise ValueError(f"retrieval_metrics: expected paired N×D embeddings, got {images.shape} and {texts.shape}")
    n = len(images)
    ids = np.arange(n) if text_ids is None else np.asarray(list(text_ids), dtype=object)
    if len(ids) != n:
        raise ValueError(f"retrieval_metrics: text_ids has {len(ids)} entries, the embeddings have {n} rows")
    unique: dict[Any, int] = {}
    group = np.empty(n, dtype=int)
    first_rows = []
    for row, key in enumerate(ids.tolist()):
        if key not in unique:
            unique[key] = len(unique)
            first_rows.append(row)
        group[row] = unique[key]
    gallery = _normalise_rows(texts[first_rows])
    similarity = _normalise_rows(images) @ gallery.T  # n_images × n_unique_texts
    correct = group[:, None] == np.arange(len(first_rows))[None, :]
    i2t = _ranks(similarity, correct)
    t2i = _ranks(similarity.T, correct.T)
    out: dict[str, float] = {}
    for direction, ranks in (("image_to_text", i2t), ("text_to_image", t2i)):
        for k in ks:
            out[f"{direction}_R@{k}"] = float(np.mean(ranks <= k))
        out[f"{direction}_mean_rank"] = float(np.mean(ranks))
        out[f"{direction}_median_rank"] = float(np.median(ranks))
    out["n_images"] = float(n)
    out["n_texts"] = float(len(first_rows))
    return out
