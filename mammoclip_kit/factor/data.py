"""What Mammo-FActOR reads: the attributes, their report sentences and text embeddings, the images, labels and boxes.

An attribute (``mass``, ``suspicious_calcification``) is named by the VinDr table column that marks it on an image and
the finding name its boxes carry (:data:`ATTRIBUTES`). Its text embedding is built from report sentences that state it
(:func:`attribute_sentences`, :func:`attribute_text_sets`) and the kit's positive prompts
(:func:`attribute_embeddings`). The images come from the built VinDr tables (:func:`factor_data`): training images
with the attribute (labels only) and test images with a box of it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from mammoclip_kit.context import RunContext
    from mammoclip_kit.factor.mapper import FactorConfig

#: The attributes of the paper and the VinDr table column / box finding name of each.
ATTRIBUTES: dict[str, dict[str, str]] = {
    "mass": {"column": "Mass", "finding": "Mass"},
    "suspicious_calcification": {"column": "Suspicious_Calcification", "finding": "Suspicious Calcification"},
}

#: How a report sentence is recognised as *stating* an attribute: a keyword, and words that disqualify the sentence
#: (negations, and benign calcification types that are not "suspicious calcification").
SENTENCE_RULES: dict[str, tuple[str, str]] = {
    "mass": (r"\bmass(es)?\b", r"\b(no|not|without|negative|nor|obscure|obscures)\b"),
    "suspicious_calcification": (r"calcification", r"\b(no|not|without|negative|nor|benign|vascular|rim|coarse|"
                                                  r"round|tram)\b"),
}

#: Box columns of ``vindr_boxes.csv`` in PNG pixels and in original DICOM pixels.
BOX_PNG = ("png_xmin", "png_ymin", "png_xmax", "png_ymax")
BOX_ORIGINAL = ("xmin", "ymin", "xmax", "ymax")


# ----------------------------------------------------------------------------------------------------------------------
# Attribute sentences and text embeddings


def attribute_sentences(texts: Sequence[str], attribute: str, max_sentences: int | None = None) -> list[str]:
    """Distinct cleaned report sentences that state ``attribute`` (keyword present, no negation), in first-seen order.

    ``texts`` are raw report sections (e.g. the FINDINGS column); they are split and cleaned with
    :func:`mammoclip_kit.data.text.clean_sentences` exactly as for pretraining, so the sentences look like the text the
    model was trained on.
    """
    from mammoclip_kit.data.text import clean_sentences, split_sentences

    if attribute not in SENTENCE_RULES:
        raise ValueError(f"attribute_sentences: unknown attribute {attribute!r}; known: {sorted(SENTENCE_RULES)}")
    keyword, exclude = (re.compile(p, re.IGNORECASE) for p in SENTENCE_RULES[attribute])
    found: dict[str, None] = {}
    for text in texts:
        if not isinstance(text, str):
            continue
        for raw in split_sentences(text):
            if keyword.search(raw) and not exclude.search(raw):
                for cleaned in clean_sentences([raw]):
                    found.setdefault(cleaned, None)
        if max_sentences is not None and len(found) >= max_sentences:
            break
    out = list(found)
    return out[:max_sentences] if max_sentences is not None else out


def attribute_text_sets(ctx: RunContext, config: FactorConfig) -> dict[str, list[str]]:
    """Sentences per attribute: report sentences stating it (``data_root/reports/reports.csv`` FINDINGS and
    IMPRESSION, when the data has reports) followed by the kit's positive zero-shot prompts
    (:data:`mammoclip_kit.data.text.PROMPTS`)."""
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


def attribute_embeddings(model: Any, sentences: Mapping[str, Sequence[str]], device: Any = None,
                         batch_size: int = 64) -> dict[str, torch.Tensor]:
    """Per attribute: the mean of the L2-normalised embeddings of its sentences, re-normalised → ``(D,)`` tensors.

    The authors' released code averaged *unnormalised* prompt embeddings before normalising; normalising each sentence
    first gives every sentence the same weight, whatever its norm.
    """
    from mammoclip_kit.inference import embed_texts

    out: dict[str, torch.Tensor] = {}
    for attribute, items in sentences.items():
        items = [s for s in items if isinstance(s, str) and s.strip()]
        if not items:
            raise ValueError(f"attribute_embeddings: no sentences for attribute {attribute!r}")
        emb = embed_texts(items, model, batch_size=batch_size, device=device)
        out[attribute] = F.normalize(emb.mean(0), dim=0)
    return out


def stack_attributes(embeddings: Mapping[str, torch.Tensor], attributes: Sequence[str]) -> torch.Tensor:
    """``(A, D)`` tensor of the named attributes' embeddings, in the order given."""
    missing = [a for a in attributes if a not in embeddings]
    if missing:
        raise KeyError(f"no embedding for attribute(s) {missing}; have {sorted(embeddings)}")
    return torch.stack([embeddings[a].float() for a in attributes])


# ----------------------------------------------------------------------------------------------------------------------
# Images, labels and boxes


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


def factor_data(ctx: RunContext, config: FactorConfig, ensure: bool = True) -> FactorData:
    """The images Mammo-FActOR trains and is evaluated on, from the built VinDr tables of ``ctx``.

    Training images (``split == training``) with any of the attributes (``config.train_rows == "findings"``, the
    choice of the authors' released code) or all of them (``"all"``) are divided by patient into train and validation
    (``config.val_fraction``, seeded by ``ctx.seed``). Test images with ≥ 1 box of an attribute are the evaluation set.
    """
    from mammoclip_kit.eval.tasks import split_train_val

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
