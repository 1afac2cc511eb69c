"""Mammo-FActOR: which channels of the image tower speak about a finding, and where they look.

Spec §6 (reference-spec.md) and the paper's §2.3. The reference released only the attribute embeddings and the mapper
training; heatmaps and their localisation evaluation were never published, so this module is a complete design from
the paper's description:

1. attribute text embeddings (:func:`attribute_embeddings`) from report sentences (:func:`attribute_sentences`) and
   prompts;
2. cached last feature maps of the *frozen* image tower in eval mode (:func:`feature_maps`);
3. one mapper per attribute (:class:`AttributeMapper`) trained with the contrastive loss of spec §6.3
   (:func:`factor_loss`, :func:`train_mapper`: AdamW, early stopping on a validation split of training patients);
4. heatmaps from the top-k aligned channels (:func:`channel_alignment`, :func:`factor_heatmaps`), optionally on the
   same last feature map sampled more densely by shift-and-stitch (``feature_maps(stitch=...)``), thresholded at a
   quantile into boxes (:func:`heatmap_to_boxes`) mapped back to original pixels (:func:`localize`);
5. evaluation as the paper — mAP at IoU 0.25 / 0.5 and the pointing game (:func:`evaluate_localization`) — with a
   Grad-CAM baseline on the same model and images (:func:`gradcam_heatmaps`), and the ceilings a grid sets
   (:func:`box_oracle_heatmaps`), single channels (:func:`channel_hit_rates`) and box-supervised channel weights
   (:func:`box_supervised_weights`) reach;
6. figures: :func:`show_heatmap` and :func:`heatmap_viewer` (ipywidgets, with a static fallback).

Reference bugs avoided: the view-pairing of the two heads' outputs (spec §6.2, see :class:`AttributeMapper`), BN
statistics updated in a "frozen" encoder (spec §6.4; here the tower runs once in eval mode and its maps are cached), and
early stopping on the test split (here: held-out training patients).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from mammoclip_kit.factor.heatmaps import (
    LocalizationResult,
    box_oracle_heatmaps,
    box_supervised_weights,
    channel_hit_rates,
    evaluate_localization,
    factor_heatmaps,
    gradcam_heatmaps,
    heatmap_to_boxes,
    heatmap_viewer,
    localize,
    show_heatmap,
    tissue_mask,
    upsample,
    widgets_available,
)
from mammoclip_kit.factor.mapper import (
    ATTRIBUTES,
    SENTENCE_RULES,
    AttributeMapper,
    FactorConfig,
    MapperHistory,
    attribute_embeddings,
    attribute_sentences,
    channel_alignment,
    factor_loss,
    stack_attributes,
    train_mapper,
)

__all__ = [
    "ATTRIBUTES", "SENTENCE_RULES", "AttributeMapper", "FactorConfig", "FactorData", "LocalizationResult",
    "MapperHistory", "attribute_embeddings", "attribute_sentences", "attribute_text_sets", "box_oracle_heatmaps",
    "box_supervised_weights", "boxes_for", "channel_alignment", "channel_hit_rates", "evaluate_localization",
    "factor_data", "factor_heatmaps", "factor_loss", "feature_maps", "gradcam_heatmaps", "heatmap_to_boxes",
    "heatmap_viewer", "image_labels", "localize", "show_heatmap", "stack_attributes", "stitched_features",
    "tissue_mask", "train_mapper", "upsample", "widgets_available",
]

BOX_PNG = ("png_xmin", "png_ymin", "png_xmax", "png_ymax")
BOX_ORIGINAL = ("xmin", "ymin", "xmax", "ymax")


# ----------------------------------------------------------------------------------------------------------------------
# Data


@dataclass
class FactorData:
    """Images for Mammo-FActOR: ``train`` / ``val`` (training split, divided by patient) and ``test`` (test images
    with ≥ 1 box of an attribute), their ``boxes`` and the preprocessing ``manifest`` rows by image id (empty when
    the PNGs have no manifest, e.g. the authors' PNG release)."""

    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    boxes: pd.DataFrame
    manifest: dict[str, dict[str, Any]]


def image_labels(frame: pd.DataFrame, attributes: Sequence[str]) -> np.ndarray:
    """``(N, A)`` 0/1 array of the attributes' one-hot VinDr columns (``Mass``, ``Suspicious_Calcification``)."""
    columns = [ATTRIBUTES[a]["column"] for a in attributes]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"vindr_images table: missing finding column(s) {missing}")
    return (frame[columns].fillna(0).to_numpy(dtype=np.float32) > 0).astype(np.float32)


def _has_box(boxes: pd.DataFrame, attributes: Sequence[str]) -> set[str]:
    findings = {ATTRIBUTES[a]["finding"] for a in attributes}
    return set(boxes.loc[boxes["finding"].isin(findings), "image_id"].astype(str))


def factor_data(ctx: Any, config: FactorConfig, ensure: bool = True) -> FactorData:
    """The images Mammo-FActOR trains and is evaluated on, from the built VinDr tables of ``ctx``.

    Training images (``split == training``) with any of the attributes (``config.train_rows == "findings"``, the
    reference's choice) or all of them (``"all"``) are divided by patient into train and validation
    (``config.val_fraction``, seeded by ``ctx.seed``). Test images with ≥ 1 box of an attribute are the evaluation set.
    """
    from mammoclip_kit.eval._detection_data import split_train_val

    if ensure:
        from mammoclip_kit.data.records import ensure_tables

        ensure_tables(ctx)
    images_path, boxes_path = Path(ctx.tables_dir) / "vindr_images.csv", Path(ctx.tables_dir) / "vindr_boxes.csv"
    for path in (images_path, boxes_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: Mammo-FActOR needs the VinDr tables (run notebook 02 / ensure_tables)")
    images = pd.read_csv(images_path, dtype={"image_id": str, "patient_id": str})
    boxes = pd.read_csv(boxes_path, dtype={"image_id": str})
    labels = image_labels(images, config.attributes)
    training = images[images["split"] == "training"]
    if config.train_rows == "findings":
        training = training[labels[images["split"].to_numpy() == "training"].sum(1) > 0]
    train, val = split_train_val(training, config.val_fraction, ctx.seed)
    test = images[(images["split"] == "test") & images["image_id"].isin(_has_box(boxes, config.attributes))]
    if train.empty or test.empty:
        raise ValueError(f"{images_path}: need training images with an attribute and test images with a box; found "
                         f"{len(train)} and {len(test)} (attributes {list(config.attributes)})")
    manifest: dict[str, dict[str, Any]] = {}
    manifest_path = Path(ctx.png_dir("vindr")) / "manifest.csv"
    if manifest_path.is_file():
        table = pd.read_csv(manifest_path, dtype={"image_id": str})
        manifest = {str(r["image_id"]): r for r in table.to_dict("records")}
    return FactorData(train.reset_index(drop=True), val.reset_index(drop=True), test.reset_index(drop=True),
                      boxes, manifest)


def boxes_for(frame: pd.DataFrame, boxes: pd.DataFrame, attribute: str, frame_kind: str = "png") -> list[np.ndarray]:
    """Per row of ``frame``, the ``(M, 4)`` boxes of ``attribute`` in PNG (``"png"``) or original pixels."""
    columns = {"png": BOX_PNG, "original": BOX_ORIGINAL}.get(frame_kind)
    if columns is None:
        raise ValueError(f"boxes_for: frame_kind must be 'png' or 'original', got {frame_kind!r}")
    picked = boxes[boxes["finding"] == ATTRIBUTES[attribute]["finding"]]
    grouped = {str(k): g[list(columns)].to_numpy(dtype=np.float64) for k, g in picked.groupby("image_id")}
    return [grouped.get(str(i), np.zeros((0, 4))) for i in frame["image_id"]]


def attribute_text_sets(ctx: Any, config: FactorConfig) -> dict[str, list[str]]:
    """Sentences per attribute: report sentences stating it (``data_root/reports/reports.csv`` FINDINGS, when the
    data has reports) followed by the kit's positive zero-shot prompts (:data:`mammoclip_kit.data.text.PROMPTS`)."""
    from mammoclip_kit.data.text import PROMPTS

    reports = Path(ctx.data_root) / "reports" / "reports.csv"
    texts: list[str] = []
    if reports.is_file():
        table = pd.read_csv(reports, usecols=lambda c: c in ("FINDINGS", "IMPRESSION"))
        texts = [t for col in ("FINDINGS", "IMPRESSION") if col in table for t in table[col].dropna().tolist()]
    out = {}
    for attribute in config.attributes:
        sentences = attribute_sentences(texts, attribute, config.max_sentences)
        out[attribute] = list(dict.fromkeys(sentences + list(PROMPTS[attribute][1])))
    return out


# ----------------------------------------------------------------------------------------------------------------------
# Cached feature maps


def _cache_key(encoder: torch.nn.Module, paths: Sequence[Path], image_size: tuple[int, int] | None,
               stitch: int = 1) -> str:
    from mammoclip_kit.eval.features import model_fingerprint

    digest = hashlib.sha1(model_fingerprint(encoder).encode())
    key: list[Any] = [list(image_size) if image_size else None, [str(p) for p in paths]]
    if stitch != 1:  # keeps the keys of unstitched caches unchanged
        key.append(int(stitch))
    digest.update(json.dumps(key).encode())
    return digest.hexdigest()[:20]


def stitched_features(encoder: torch.nn.Module, inputs: torch.Tensor, stitch: int = 1) -> torch.Tensor:
    """``encoder.forward_features`` sampled ``stitch`` times more densely in each direction (shift-and-stitch,
    Long et al. 2015, §3.2).

    The input is shifted up / left by every multiple of ``stride / stitch`` pixels (the vacated border filled with the
    darkest value any image has after :func:`~mammoclip_kit.data.transforms.to_model_input`, i.e. background), each
    shifted copy goes through the unchanged tower, and the ``stitch²`` maps are interleaved: cell ``(i·stitch + a,
    j·stitch + b)`` is the tower's output for the window that starts ``a·stride/stitch`` pixels lower and
    ``b·stride/stitch`` further right than cell ``(i, j)``. Same features, ``stitch²`` times the cost, a grid of
    ``(h·stitch, w·stitch)``. The stride is read from the input and output sizes and must be divisible by ``stitch``.
    """
    from mammoclip_kit.data.transforms import PAPER_MEAN, PAPER_STD

    stitch = int(stitch)
    if stitch < 1:
        raise ValueError(f"stitched_features: stitch must be ≥ 1, got {stitch}")
    base = encoder.forward_features(inputs)
    if stitch == 1:
        return base
    h, w = base.shape[-2:]
    stride_h, stride_w = round(inputs.shape[-2] / h), round(inputs.shape[-1] / w)
    if stride_h % stitch or stride_w % stitch:
        raise ValueError(f"stitched_features: the tower's stride {stride_h}×{stride_w} (input "
                         f"{tuple(inputs.shape[-2:])} → map {h}×{w}) is not divisible by stitch={stitch}")
    fill = (0.0 - PAPER_MEAN) / PAPER_STD
    out = base.new_empty(*base.shape[:2], h * stitch, w * stitch)
    for a in range(stitch):
        for b in range(stitch):
            dy, dx = a * stride_h // stitch, b * stride_w // stitch
            if a or b:
                shifted = F.pad(inputs[..., dy:, dx:], (0, dx, 0, dy), value=fill)
                out[:, :, a::stitch, b::stitch] = encoder.forward_features(shifted)
            else:
                out[:, :, ::stitch, ::stitch] = base
    return out


def feature_maps(encoder: torch.nn.Module, paths: Sequence[str | Path], *, image_size: tuple[int, int] | None = None,
                 batch_size: int = 16, device: Any = None, cache_dir: str | Path | None = None,
                 retrain: bool = False, progress: bool = True,
                 stitch: int = 1) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Last feature maps ``(N, C, h, w)`` (float32, CPU) of the frozen image tower in eval mode, and each image's
    ``(height, width)`` as read from disk (the frame of its PNG boxes).

    Images are read, resized to ``image_size`` when given and passed through the kit's one inference transform. With
    ``stitch > 1`` the same last map is sampled ``stitch`` times more densely (:func:`stitched_features`):
    ``(N, C, h·stitch, w·stitch)``. With ``cache_dir`` the result is stored under a key of the tower's weights, the
    size, the stitch factor and the paths, and reloaded.
    """
    from mammoclip_kit.data.transforms import load_image, resize_to, to_model_input

    paths = [Path(p) for p in paths]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"feature_maps: {len(missing)} image file(s) not found, first: {missing[0]}")
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"factor_maps_{_cache_key(encoder, paths, image_size, stitch)}.pt"
        if cache.is_file() and not retrain:
            stored = torch.load(cache, map_location="cpu", weights_only=True)
            return stored["maps"].float(), [tuple(s) for s in stored["sizes"].tolist()]
    device = torch.device(device) if device is not None else next(encoder.parameters()).device
    was_training = encoder.training
    encoder.eval()
    out, sizes = [], []
    batches = range(0, len(paths), batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="feature maps" if stitch == 1 else f"feature maps (stitch {stitch})",
                       unit="batch")
    try:
        with torch.inference_mode():
            for start in batches:
                inputs = []
                for path in paths[start:start + batch_size]:
                    image = load_image(path)
                    sizes.append(tuple(int(v) for v in image.shape[:2]))
                    if image_size is not None:
                        image = resize_to(image, *image_size)
                    inputs.append(to_model_input(image))
                out.append(stitched_features(encoder, torch.stack(inputs).to(device), stitch).float().cpu())
    finally:
        encoder.train(was_training)
    maps = torch.cat(out) if out else torch.zeros(0)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        torch.save({"maps": maps, "sizes": torch.tensor(sizes)}, tmp)
        tmp.replace(cache)
    return maps, sizes
