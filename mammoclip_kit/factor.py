"""Mammo-FActOR: which channels of the image tower speak about a finding, and where they look.

Spec §6 (reference-spec.md) and the paper's §2.3. The reference released only the attribute embeddings and the mapper
training; heatmaps and their localisation evaluation were never published, so this module is a complete design from
the paper's description:

1. attribute text embeddings (:func:`attribute_embeddings`) from report sentences (:func:`attribute_sentences`) and
   prompts;
2. cached last feature maps of the *frozen* image tower in eval mode (:func:`feature_maps`);
3. one mapper per attribute (:class:`AttributeMapper`) trained with the contrastive loss of spec §6.3
   (:func:`factor_loss`, :func:`train_mapper`: AdamW, early stopping on a validation split of training patients);
4. heatmaps from the top-k aligned channels (:func:`channel_alignment`, :func:`factor_heatmaps`), thresholded at a
   quantile into boxes (:func:`heatmap_to_boxes`) mapped back to original pixels (:func:`localize`);
5. evaluation as the paper — mAP at IoU 0.25 / 0.5 and the pointing game (:func:`evaluate_localization`) — with a
   Grad-CAM baseline on the same model and images (:func:`gradcam_heatmaps`);
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

from mammoclip_kit._factor_maps import (
    LocalizationResult,
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
from mammoclip_kit._factor_train import (
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
    "MapperHistory", "attribute_embeddings", "attribute_sentences", "attribute_text_sets", "boxes_for",
    "channel_alignment", "evaluate_localization", "factor_data", "factor_heatmaps", "factor_loss", "feature_maps",
    "gradcam_heatmaps", "heatmap_to_boxes", "heatmap_viewer", "image_labels", "localize", "show_heatmap",
    "stack_attributes", "tissue_mask", "train_mapper", "upsample", "widgets_available",
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


def _cache_key(encoder: torch.nn.Module, paths: Sequence[Path], image_size: tuple[int, int] | None) -> str:
    from mammoclip_kit.eval.probe import model_fingerprint

    digest = hashlib.sha1(model_fingerprint(encoder).encode())
    digest.update(json.dumps([list(image_size) if image_size else None, [str(p) for p in paths]]).encode())
    return digest.hexdigest()[:20]


def feature_maps(encoder: torch.nn.Module, paths: Sequence[str | Path], *, image_size: tuple[int, int] | None = None,
                 batch_size: int = 16, device: Any = None, cache_dir: str | Path | None = None,
                 retrain: bool = False, progress: bool = True) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Last feature maps ``(N, C, h, w)`` (float32, CPU) of the frozen image tower in eval mode, and each image's
    ``(height, width)`` as read from disk (the frame of its PNG boxes).

    Images are read, resized to ``image_size`` when given and passed through the kit's one inference transform. With
    ``cache_dir`` the result is stored under a key of the tower's weights, the size and the paths, and reloaded.
    """
    from mammoclip_kit.data.transforms import load_image, resize_to, to_model_input

    paths = [Path(p) for p in paths]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"feature_maps: {len(missing)} image file(s) not found, first: {missing[0]}")
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"factor_maps_{_cache_key(encoder, paths, image_size)}.pt"
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

        batches = tqdm(batches, desc="feature maps", unit="batch")
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
                out.append(encoder.forward_features(torch.stack(inputs).to(device)).float().cpu())
    finally:
        encoder.train(was_training)
    maps = torch.cat(out) if out else torch.zeros(0)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        torch.save({"maps": maps, "sizes": torch.tensor(sizes)}, tmp)
        tmp.replace(cache)
    return maps, sizes
