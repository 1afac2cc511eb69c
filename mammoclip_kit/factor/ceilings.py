"""How far can a heatmap go on a feature grid? Ceilings that use the boxes, and one table that sets methods beside them.

Three references separate "the method fails" from "nothing on this grid could do better", each chosen *with* the
ground-truth boxes (which a weakly supervised method may not use):

* the box oracle (:func:`box_oracle_heatmaps`): the best heatmap a grid can hold;
* the best single channel (:func:`channel_hit_rates`): whether the frozen features hold the position at all;
* box-supervised channel weights (:func:`box_supervised_weights`): the best linear channel weighting of the map.

:func:`localisation_table` measures them and any weakly supervised heatmaps (FActOR, Grad-CAM) on one or more grids
(the tower's own, a shift-and-stitched one) into a tidy table keyed by grid and method; :func:`ceiling_metrics` and
:func:`alignment_agreement` give the numbers notebook 09 records.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from mammoclip_kit.factor.localization import evaluate_localization

#: The ceiling rows :func:`localisation_table` measures on every grid, in this order, before the compared methods.
CEILING_METHODS = ("box_oracle", "best_channel", "box_supervised")

#: Columns of :func:`localisation_table` (``channel`` and ``hit rate`` are filled on ``best_channel`` rows only).
TABLE_COLUMNS = ("grid", "method", "grid_label", "heatmap", "channel", "hit rate", "mAP@0.25", "mAP@0.5",
                 "pointing game")


def _boxes_array(boxes: Any) -> np.ndarray:
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def box_oracle_heatmaps(gt_boxes: Sequence[Any], sizes: Sequence[tuple[int, int]],
                        grid: tuple[int, int]) -> list[np.ndarray]:
    """The best heatmaps a ``grid = (h, w)`` feature map can hold: each cell is the share of it the ground-truth
    boxes cover (boxes rasterised at the image ``sizes[i] = (height, width)``, then area-averaged onto the grid).

    Put through :func:`~mammoclip_kit.factor.localization.evaluate_localization` like any heatmap, they give the ceiling that the grid and the threshold
    alone set on mAP and the pointing game — what a perfect channel combination could reach on that grid.
    """
    if len(gt_boxes) != len(sizes):
        raise ValueError(f"box_oracle_heatmaps: {len(gt_boxes)} box lists for {len(sizes)} image sizes")
    h, w = (int(v) for v in grid)
    if h < 1 or w < 1:
        raise ValueError(f"box_oracle_heatmaps: grid must be (h, w) with positive values, got {grid}")
    out = []
    for boxes, (height, width) in zip(gt_boxes, sizes, strict=True):
        canvas = torch.zeros(1, 1, int(height), int(width))
        for x0, y0, x1, y1 in _boxes_array(boxes):
            top, left = max(0, int(np.floor(y0))), max(0, int(np.floor(x0)))
            canvas[0, 0, top:int(np.ceil(y1)), left:int(np.ceil(x1))] = 1.0
        out.append(F.adaptive_avg_pool2d(canvas, (h, w))[0, 0].numpy())
    return out


def _cell_centres(grid: tuple[int, int], size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Cell centres ``(xs (w,), ys (h,))`` of an ``(h, w)`` grid over an image of ``size = (height, width)`` pixels."""
    (h, w), (height, width) = grid, size
    return (np.arange(w) + 0.5) * width / w, (np.arange(h) + 0.5) * height / h


def _inside(boxes: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Whether each point ``(x[k], y[k])`` lies in any box (edges count) → bool ``(K,)``."""
    return ((boxes[:, None, 0] <= x) & (x <= boxes[:, None, 2]) & (boxes[:, None, 1] <= y)
            & (y <= boxes[:, None, 3])).any(0)


def channel_hit_rates(maps: torch.Tensor, sizes: Sequence[tuple[int, int]], gt_boxes: Sequence[Any],
                      masks: Sequence[Any] | None = None) -> np.ndarray:
    """Per channel, the pointing game of its own map: the share of images (with ≥ 1 box) whose channel peak — the
    arg-max cell's centre in image pixels, among the cells whose centre lies in ``masks[i]`` when given — falls inside
    a box. ``maps`` ``(N, C, h, w)``, ``sizes[i] = (height, width)``, ``gt_boxes[i]`` in the same pixels → ``(C,)``.

    A diagnostic that uses the boxes to judge channels; a weakly supervised method may not choose channels this way.
    """
    if maps.dim() != 4 or not (len(maps) == len(sizes) == len(gt_boxes)):
        raise ValueError(f"channel_hit_rates: need maps (N, C, h, w) and N sizes and box lists; got "
                         f"{tuple(maps.shape)}, {len(sizes)}, {len(gt_boxes)}")
    if masks is not None and len(masks) != len(maps):
        raise ValueError(f"channel_hit_rates: {len(masks)} masks for {len(maps)} maps")
    _, channels, h, w = maps.shape
    hits, counted = np.zeros(channels), 0
    for i, (size, boxes) in enumerate(zip(sizes, gt_boxes, strict=True)):
        boxes = _boxes_array(boxes)
        if not len(boxes):
            continue
        xs, ys = _cell_centres((h, w), size)
        allowed = np.ones((h, w), dtype=bool)
        if masks is not None:
            mask = np.asarray(masks[i], dtype=bool)
            rows = np.minimum(ys.astype(int), mask.shape[0] - 1)
            allowed = mask[rows][:, np.minimum(xs.astype(int), mask.shape[1] - 1)]
            allowed = allowed if allowed.any() else np.ones((h, w), dtype=bool)
        values = maps[i].float().masked_fill(~torch.as_tensor(allowed), float("-inf")).flatten(1)
        peak = values.argmax(1).numpy()
        hits += _inside(boxes, xs[peak % w], ys[peak // w])
        counted += 1
    return hits / counted if counted else np.full(channels, np.nan)


def box_supervised_weights(maps: torch.Tensor, sizes: Sequence[tuple[int, int]], gt_boxes: Sequence[Any],
                           c: float = 0.01) -> torch.Tensor:
    """Channel weights of the best *box-supervised* linear heatmap → ``(C,)``, in activation units, so that
    ``torch.einsum("nchw,c->nhw", maps, weights)`` is the heatmap.

    A heatmap that weights channels is a linear function of each cell's ``C``-vector; this fits that function with the
    boxes: an L2 logistic regression (inverse strength ``c``, balanced classes, on standardised features) of "the cell
    centre lies in a box, or the cell holds a box's centre" over every cell of ``maps`` ``(N, C, h, w)``. It is a
    supervised reference for what any channel weighting of these maps could reach — not a weakly supervised method.
    """
    from sklearn.linear_model import LogisticRegression

    if maps.dim() != 4 or not (len(maps) == len(sizes) == len(gt_boxes)):
        raise ValueError(f"box_supervised_weights: need maps (N, C, h, w) and N sizes and box lists; got "
                         f"{tuple(maps.shape)}, {len(sizes)}, {len(gt_boxes)}")
    h, w = maps.shape[2:]
    labels = []
    for (height, width), boxes in zip(sizes, gt_boxes, strict=True):
        boxes = _boxes_array(boxes)
        xs, ys = _cell_centres((h, w), (height, width))
        inside = _inside(boxes, np.tile(xs, h), np.repeat(ys, w)).reshape(h, w)
        # a box smaller than a cell may hold no cell centre: it still marks the cell that holds its own centre
        rows = np.clip(((boxes[:, 1] + boxes[:, 3]) / 2 * h / height).astype(int), 0, h - 1)
        cols = np.clip(((boxes[:, 0] + boxes[:, 2]) / 2 * w / width).astype(int), 0, w - 1)
        inside[rows, cols] = True
        labels.append(inside.ravel())
    y = np.concatenate(labels)
    if y.all() or not y.any():
        raise ValueError(f"box_supervised_weights: need cells inside and outside the boxes; {int(y.sum())} of "
                         f"{y.size} cells are marked by a box")
    x = maps.float().permute(0, 2, 3, 1).reshape(-1, maps.shape[1]).numpy().astype(np.float64)
    mean, std = x.mean(0), x.std(0) + 1e-6
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=2000).fit((x - mean) / std, y)
    return torch.as_tensor(model.coef_[0] / std, dtype=torch.float32)


def chance_pointing(gt_boxes: Sequence[Any], masks: Sequence[Any]) -> float:
    """The pointing game of a peak drawn at random in the breast: the mean share of ``masks[i]`` (boolean, image
    pixels) that image ``i``'s boxes cover (overlapping boxes counted twice, as areas add)."""
    if len(gt_boxes) != len(masks):
        raise ValueError(f"chance_pointing: {len(gt_boxes)} box lists for {len(masks)} masks")
    if not len(masks):
        return float("nan")
    shares = [sum((b[2] - b[0]) * (b[3] - b[1]) for b in _boxes_array(boxes)) / np.asarray(mask, dtype=bool).sum()
              for boxes, mask in zip(gt_boxes, masks, strict=True)]
    return float(np.mean(shares))


@dataclass
class FeatureGrid:
    """One feature grid on which :func:`localisation_table` compares heatmaps.

    ``maps`` ``(N, C, h, w)``: the evaluated images' feature maps on this grid. ``heatmaps``: the methods compared
    with the ceilings, method key → ``N`` heatmaps ``(h, w)`` (e.g. ``{"factor": ..., "gradcam": ...}``).
    ``fit_maps`` ``(M, C, h, w)``: training images' maps on the same grid for :func:`box_supervised_weights` (``None``
    leaves that row out). ``label``: how the grid reads in a table (e.g. ``"7×4 (tower)"``; default ``"h×w"``).
    """

    maps: torch.Tensor
    heatmaps: Mapping[str, Any] = field(default_factory=dict)
    fit_maps: torch.Tensor | None = None
    label: str | None = None


def localisation_table(grids: Mapping[str, FeatureGrid], sizes: Sequence[tuple[int, int]], gt_boxes: Sequence[Any],
                       *, masks: Sequence[Any] | None = None, fit_sizes: Sequence[tuple[int, int]] | None = None,
                       fit_boxes: Sequence[Any] | None = None, labels: Mapping[str, str] | None = None,
                       quantile: float = 0.95, max_boxes: int | None = 10) -> pd.DataFrame:
    """Ceilings and compared heatmaps, evaluated alike on every grid → a tidy table, one row per grid × method.

    For each grid (key → :class:`FeatureGrid`) the rows are, in order: ``box_oracle`` (:func:`box_oracle_heatmaps` at
    the grid's size), ``best_channel`` (the map of the channel with the highest :func:`channel_hit_rates`, clipped at
    0), ``box_supervised`` (the maps weighted by :func:`box_supervised_weights` fitted on the grid's ``fit_maps`` with
    ``fit_sizes`` / ``fit_boxes``; left out without them), then the grid's ``heatmaps`` in their order. Every heatmap
    goes through :func:`~mammoclip_kit.factor.localization.evaluate_localization` with the same ``sizes``,
    ``gt_boxes`` (image pixels), ``masks``, ``quantile`` and ``max_boxes``.

    Columns (:data:`TABLE_COLUMNS`): ``grid`` and ``method`` (the keys), ``grid_label`` and ``heatmap`` (readable:
    ``labels[method]`` names a compared method), ``channel`` and ``hit rate`` (the best channel and its own pointing
    game, on ``best_channel`` rows), ``mAP@0.25``, ``mAP@0.5``, ``pointing game``. Look rows up by key, e.g.
    ``table.set_index(["grid", "method"]).loc[("tower", "box_oracle"), "mAP@0.25"]``.
    """
    if not grids:
        raise ValueError("localisation_table: no grids given")
    n = len(gt_boxes)
    if len(sizes) != n or (masks is not None and len(masks) != n):
        raise ValueError(f"localisation_table: {n} box lists, {len(sizes)} sizes"
                         + (f", {len(masks)} masks" if masks is not None else ""))
    labels = dict(labels or {})
    rows = []
    for key, grid in grids.items():
        maps = grid.maps
        if maps.dim() != 4 or len(maps) != n:
            raise ValueError(f"localisation_table: grid {key!r} needs maps (N={n}, C, h, w), got {tuple(maps.shape)}")
        shape = tuple(int(v) for v in maps.shape[2:])
        grid_label = grid.label or f"{shape[0]}×{shape[1]}"
        hit_rates = channel_hit_rates(maps, sizes, gt_boxes, masks)
        best = int(np.argmax(hit_rates))
        candidates: list[tuple[str, str, Any]] = [
            ("box_oracle", "box oracle (uses the boxes)", box_oracle_heatmaps(gt_boxes, sizes, shape)),
            ("best_channel", f"best single channel {best} (chosen with the boxes)", maps[:, best].clamp_min(0))]
        if grid.fit_maps is not None:
            if fit_sizes is None or fit_boxes is None:
                raise ValueError(f"localisation_table: grid {key!r} has fit_maps but fit_sizes / fit_boxes are missing")
            if tuple(grid.fit_maps.shape[1:]) != tuple(maps.shape[1:]):
                raise ValueError(f"localisation_table: grid {key!r}: fit_maps {tuple(grid.fit_maps.shape)} do not "
                                 f"match maps {tuple(maps.shape)} in channels and grid")
            weights = box_supervised_weights(grid.fit_maps, fit_sizes, fit_boxes)
            candidates.append(("box_supervised", f"box-supervised weights ({len(grid.fit_maps)} training images)",
                               torch.einsum("nchw,c->nhw", maps, weights)))
        for method, heatmaps in grid.heatmaps.items():
            if method in CEILING_METHODS:
                raise ValueError(f"localisation_table: {method!r} is a ceiling the table measures itself")
            if len(heatmaps) != n:
                raise ValueError(f"localisation_table: grid {key!r}, method {method!r}: {len(heatmaps)} heatmaps "
                                 f"for {n} images")
            candidates.append((method, labels.get(method, method), heatmaps))
        for method, label, heatmaps in candidates:
            result = evaluate_localization([np.asarray(h) for h in heatmaps], sizes, gt_boxes, quantile=quantile,
                                           max_boxes=max_boxes, masks=masks)
            best_row = method == "best_channel"
            rows.append({"grid": key, "method": method, "grid_label": grid_label, "heatmap": label,
                         "channel": best if best_row else None, "hit rate": float(hit_rates[best]) if best_row
                         else float("nan"), "mAP@0.25": result.map25, "mAP@0.5": result.map50,
                         "pointing game": result.pointing})
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    table["channel"] = table["channel"].astype("Int64")
    return table


def ceiling_metrics(table: pd.DataFrame) -> dict[str, float]:
    """The ceilings of a :func:`localisation_table` as notebook 09 records them, per grid key ``<g>``:
    ``oracle_map25_<g>``, ``oracle_pointing_<g>``, ``best_channel_pointing_<g>`` (the best channel's own hit rate) and,
    when measured, ``supervised_map25_<g>``, ``supervised_pointing_<g>``."""
    out: dict[str, float] = {}
    indexed = table.set_index(["grid", "method"])
    for grid in dict.fromkeys(table["grid"]):
        out[f"oracle_map25_{grid}"] = float(indexed.loc[(grid, "box_oracle"), "mAP@0.25"])
        out[f"oracle_pointing_{grid}"] = float(indexed.loc[(grid, "box_oracle"), "pointing game"])
        out[f"best_channel_pointing_{grid}"] = float(indexed.loc[(grid, "best_channel"), "hit rate"])
        if (grid, "box_supervised") in indexed.index:
            out[f"supervised_map25_{grid}"] = float(indexed.loc[(grid, "box_supervised"), "mAP@0.25"])
            out[f"supervised_pointing_{grid}"] = float(indexed.loc[(grid, "box_supervised"), "pointing game"])
    return out


def alignment_agreement(alignment: Any, hit_rates: Any, top: Sequence[int]) -> dict[str, float]:
    """Do the channels a method weights most peak on the lesions? ``alignment`` ``(C,)``: each channel's mean
    alignment with the attribute; ``hit_rates`` ``(C,)``: :func:`channel_hit_rates`; ``top``: the channels the method
    uses. → ``factor_top_channels_pointing`` (the mean hit rate of ``top``) and ``alignment_vs_hits_spearman`` (the
    rank correlation of alignment and hit rate over all channels)."""
    from scipy.stats import spearmanr

    alignment = np.asarray(alignment, dtype=np.float64)
    hit_rates = np.asarray(hit_rates, dtype=np.float64)
    if alignment.shape != hit_rates.shape or alignment.ndim != 1:
        raise ValueError(f"alignment_agreement: alignment {alignment.shape} and hit_rates {hit_rates.shape} must be "
                         "(C,) vectors of one length")
    return {"factor_top_channels_pointing": float(hit_rates[np.asarray(top, dtype=int)].mean()),
            "alignment_vs_hits_spearman": float(spearmanr(alignment, hit_rates).correlation)}
