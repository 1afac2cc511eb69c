"""The per-dataset table builders: VinDr-Mammo (images, boxes, pretraining), RSNA and image–report pairs
(docs/reference-notes.md §7.2–7.5, §9, §10).

Each builder reads its input CSVs (validated against the schemas of :mod:`mammoclip_kit.data.records`), attaches the
PNGs of a PNG folder and returns its tables plus the images it left out (with reasons); it writes nothing.
:func:`mammoclip_kit.data.records.ensure_tables` (notebooks) and the ``data_prep.build_*`` CLIs
(:func:`~mammoclip_kit.data.records.build_cli`) call them and write the tables. The inputs, the outputs and the
authors' PNG releases are described in :mod:`mammoclip_kit.data.records`.
"""

from __future__ import annotations

import ast
import logging
import math
import os
import random
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mammoclip_kit.data import text as textlib
from mammoclip_kit.data.records import (
    DENSITY_LETTERS,
    REPORTS_SCHEMA,
    RSNA_SCHEMA,
    VIEW_ORDER,
    VINDR_BREAST_SCHEMA,
    VINDR_FINDING_SCHEMA,
    SchemaError,
    assign_folds,
    attach_pngs,
    cell_text,
    is_blank,
    order_views,
    png_path_for,
    read_input_csv,
    read_manifest,
    row_label,
)

__all__ = [
    "RSNA_KEPT_COLUMNS",
    "ReportTables",
    "ReportTextConfig",
    "RsnaTables",
    "VindrTables",
    "breast_texts",
    "build_reports",
    "build_rsna",
    "build_vindr",
    "parse_finding_categories",
    "vindr_pretrain_table",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------------------------
# VinDr


@dataclass
class VindrTables:
    """The three VinDr tables and the images left out (with reasons)."""

    images: pd.DataFrame
    boxes: pd.DataFrame
    pretrain: pd.DataFrame
    dropped: pd.DataFrame


def parse_finding_categories(value: Any, source: str | os.PathLike, row: int) -> list[str]:
    """``"['Mass', 'Suspicious Calcification']"`` → canonical VinDr names; errors name the file and row."""
    where = f"{source}, {row_label(row)}, column 'finding_categories'"
    if isinstance(value, (list, tuple)):
        items = list(value)
    else:
        try:
            items = ast.literal_eval(str(value))
        except (ValueError, SyntaxError):
            raise SchemaError(f"{where}: value {value!r} is not a list such as \"['Mass']\"") from None
        if isinstance(items, str):
            items = [items]
        if not isinstance(items, (list, tuple)):
            raise SchemaError(f"{where}: value {value!r} is not a list such as \"['Mass']\"")
    try:
        return [textlib.canonical_finding(item) for item in items]
    except ValueError as error:
        raise SchemaError(f"{where}: {error}") from None


def _map_boxes(boxes: np.ndarray, image: Mapping[str, Any], manifest_row: Mapping[str, Any] | None, png_file: Path,
               ) -> tuple[np.ndarray, str]:
    """Original → PNG coordinates: the manifest row when there is one, else scaling by the PNG size."""
    if manifest_row is not None:
        from mammoclip_kit.data.preprocess import original_to_png

        return np.asarray(original_to_png(boxes, manifest_row, clip=True), dtype=float), "manifest"
    from PIL import Image

    with Image.open(png_file) as handle:
        width_png, height_png = handle.size
    scale = np.array([width_png / float(image["width"]), height_png / float(image["height"])] * 2)
    return boxes * scale, "scaled"


def _box_problem(names: list[str], coords: list[Any], size: tuple[float, float]) -> tuple[str | None, list[float] | None]:
    """Check one finding row's box against its image size (width, height): (problem or None, box to keep or None).

    Blank boxes of real findings, non-finite and wholly outside boxes are dropped; boxes reaching past the image are
    clipped. Each case is reported (``dropped`` table of the builder), never passed over in silence.
    """
    width, height = size
    findings = [n for n in names if n != "No Finding"]
    if not names:
        return "empty finding_categories []: row ignored", None
    if all(is_blank(c) for c in coords):
        return (f"no box coordinates (all blank) for {', '.join(findings)}: image label kept, no box", None) \
            if findings else (None, None)
    box = [float(c) for c in coords]
    if not all(math.isfinite(v) for v in box):
        return f"non-finite box coordinates {box}: box dropped", None
    xmin, ymin, xmax, ymax = box
    if xmax <= 0 or ymax <= 0 or xmin >= width or ymin >= height:
        return f"box {box} lies outside the {width:g}×{height:g} image: box dropped", None
    clipped = [max(xmin, 0.0), max(ymin, 0.0), min(xmax, width), min(ymax, height)]
    if clipped != box:
        return f"box {box} reaches past the {width:g}×{height:g} image: clipped to {clipped}", clipped
    return None, box


def build_vindr(vindr_dir: str | os.PathLike, png_dir: str | os.PathLike, *, relative_to: str | os.PathLike | None = None,
                n_folds: int = 4, png_release: bool | None = None) -> VindrTables:
    """Build the VinDr image, box and pretraining tables.

    Args:
        vindr_dir: folder holding ``breast-level_annotations.csv`` and ``finding_annotations.csv``.
        png_dir: PNG folder (``<study_id>/<image_id>.png``, with ``manifest.csv`` from the kit's preprocessing or
            without one for the authors' release).
        relative_to: store PNG paths relative to this folder (the profile's ``output_dir``).
        n_folds: GroupKFold folds over the patients of the training split (test rows get fold ``-1``).
        png_release: ``True`` declares ``png_dir`` an external PNG release (boxes scaled by the PNG size); ``False``
            a kit PNG folder, where an image without a manifest row (a stale or foreign PNG) is left out; ``None``
            decides by the folder (a release has neither ``manifest.csv`` nor the kit's ``png_folder.json``).

    Box rows with empty categories, blank boxes of real findings, non-finite, outside or overhanging coordinates are
    reported in ``dropped`` (dataset ``vindr_boxes``); overhanging boxes are clipped to the image.
    """
    vindr_dir, png_dir = Path(vindr_dir), Path(png_dir)
    relative_to = Path(relative_to) if relative_to is not None else None
    breast_csv, finding_csv = vindr_dir / "breast-level_annotations.csv", vindr_dir / "finding_annotations.csv"
    breast = read_input_csv(breast_csv, VINDR_BREAST_SCHEMA)
    finding = read_input_csv(finding_csv, VINDR_FINDING_SCHEMA)

    duplicated = breast["image_id"].duplicated(keep=False)
    if duplicated.any():
        first = int(np.flatnonzero(duplicated.to_numpy())[0])
        raise SchemaError(f"{breast_csv}, {row_label(first)}, column 'image_id': value "
                          f"{breast['image_id'].iloc[first]!r} appears more than once")
    known = set(breast["image_id"])
    sizes = {i: (float(w), float(h)) for i, w, h in zip(breast["image_id"], breast["width"], breast["height"],
                                                         strict=True)}
    box_notes: list[dict[str, Any]] = []
    findings_per_image: dict[str, set[str]] = {}
    box_rows = []
    for i, row in enumerate(finding.itertuples(index=False)):
        if row.image_id not in known:
            raise SchemaError(f"{finding_csv}, {row_label(i)}, column 'image_id': value {row.image_id!r} is not in "
                              f"{breast_csv.name}")
        names = parse_finding_categories(row.finding_categories, finding_csv, i)
        findings_per_image.setdefault(row.image_id, set()).update(names)
        coords = [row.xmin, row.ymin, row.xmax, row.ymax]
        present = [not is_blank(c) for c in coords]
        if any(present) and not all(present):
            raise SchemaError(f"{finding_csv}, {row_label(i)}: box coordinates xmin, ymin, xmax, ymax must be all set "
                              f"or all blank, got {coords}")
        problem, kept_box = _box_problem(names, coords, sizes[row.image_id])
        if problem:
            box_notes.append({"dataset": "vindr_boxes", "image_id": row.image_id,
                              "reason": f"{finding_csv.name} {row_label(i)}: {problem}"})
        if all(present) and kept_box is not None:
            xmin, ymin, xmax, ymax = kept_box
            if xmax <= xmin or ymax <= ymin:
                raise SchemaError(f"{finding_csv}, {row_label(i)}: empty box (xmin {xmin}, ymin {ymin}, xmax {xmax}, "
                                  f"ymax {ymax}); need xmax > xmin and ymax > ymin")
            for name in names:
                if name != "No Finding":
                    box_rows.append({"box_id": i, "image_id": row.image_id, "finding": name,
                                     "finding_birads": None if is_blank(row.finding_birads) else row.finding_birads,
                                     "xmin": xmin, "ymin": ymin, "xmax": xmax, "ymax": ymax})

    images = pd.DataFrame({
        "patient_id": breast["study_id"].astype(str), "image_id": breast["image_id"].astype(str),
        "series_id": breast["series_id"].astype(str), "laterality": breast["laterality"].astype(str),
        "view": breast["view_position"].astype(str).str.strip(), "split": breast["split"].astype(str),
        "density": breast["breast_density"].map(lambda v: DENSITY_LETTERS.index(str(v).strip()[-1])).astype(int),
        "birads": breast["breast_birads"].map(lambda v: int(str(v).strip().split()[-1])).astype(int),
        "height": breast["height"].astype(float).astype(int), "width": breast["width"].astype(float).astype(int),
    })
    for name in textlib.FINDING_NAMES:
        images[textlib.FINDING_COLUMNS[name]] = [int(name in findings_per_image.get(i, set()))
                                                 for i in images["image_id"]]
    others = [textlib.FINDING_COLUMNS[n] for n in textlib.FINDING_NAMES if n != "No Finding"]
    images["No_Finding"] = (images[others].sum(axis=1) == 0).astype(int)
    images["fold"] = -1
    training = (images["split"] == "training").to_numpy()
    images.loc[training, "fold"] = assign_folds(images.loc[training, "patient_id"], n_folds)
    images, dropped = attach_pngs(images, png_dir, relative_to, "vindr", images_dir=vindr_dir / "images",
                                  dicom_suffix=".dicom", listed_in=breast_csv)

    manifest = read_manifest(png_dir)
    if png_release is None:
        png_release = manifest is None and not (png_dir / "png_folder.json").is_file()
    if not png_release:
        listed = set(manifest.index) if manifest is not None else set()
        stale = ~images["image_id"].isin(listed)
        if stale.any():
            dropped = pd.concat([dropped, pd.DataFrame({
                "dataset": "vindr", "image_id": images.loc[stale, "image_id"],
                "reason": f"PNG has no row in {png_dir / 'manifest.csv'} (stale or foreign PNG; its boxes cannot be "
                          "mapped); declare an external PNG release with --png-root to scale boxes instead"})],
                ignore_index=True)
            images = images.loc[~stale].reset_index(drop=True)
    if box_notes:
        dropped = pd.concat([dropped, pd.DataFrame(box_notes)], ignore_index=True)
    boxes = pd.DataFrame(box_rows, columns=["box_id", "image_id", "finding", "finding_birads", "xmin", "ymin", "xmax",
                                            "ymax"])
    boxes = boxes[boxes["image_id"].isin(set(images["image_id"]))].reset_index(drop=True)
    by_image = images.set_index("image_id", drop=False)
    with_boxes = set(boxes["image_id"])
    manifest_rows = manifest[manifest.index.isin(with_boxes)].to_dict("index") if manifest is not None else {}
    image_rows = by_image[by_image.index.isin(with_boxes)].to_dict("index")
    png_coords = np.zeros((len(boxes), 4))
    mapping = [""] * len(boxes)
    for image_id, positions in boxes.groupby("image_id", sort=False).indices.items():
        image = image_rows[image_id]
        original = boxes[["xmin", "ymin", "xmax", "ymax"]].to_numpy(dtype=float)[positions]
        mapped, how = _map_boxes(original, image, manifest_rows.get(image_id),
                                 png_path_for(png_dir, image["patient_id"], image_id))
        png_coords[positions] = np.round(mapped, 3)
        for p in positions:
            mapping[p] = how
    meta = by_image.loc[boxes["image_id"], ["patient_id", "laterality", "view", "split"]].reset_index(drop=True)
    boxes = pd.concat([meta, boxes], axis=1)
    for j, column in enumerate(("png_xmin", "png_ymin", "png_xmax", "png_ymax")):
        boxes[column] = png_coords[:, j]
    boxes["box_mapping"] = mapping
    boxes = boxes[["patient_id", "image_id", "laterality", "view", "split", "finding", "finding_birads", "box_id",
                   "xmin", "ymin", "xmax", "ymax", "png_xmin", "png_ymin", "png_xmax", "png_ymax", "box_mapping"]]
    return VindrTables(images=images, boxes=boxes, pretrain=vindr_pretrain_table(images), dropped=dropped)


def _group_breasts(records_: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], list[Mapping[str, Any]]]:
    """Rows grouped by (patient_id, laterality), groups in sorted key order, rows sorted by image_id."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for row in records_:
        groups.setdefault((str(row["patient_id"]), str(row["laterality"])), []).append(row)
    return {key: sorted(groups[key], key=lambda r: str(r["image_id"])) for key in sorted(groups)}


def vindr_pretrain_table(images: pd.DataFrame) -> pd.DataFrame:
    """One row per patient × laterality from ``vindr_images``: ``views``, PNG lists per view, findings per view.

    Any number of images per view is accepted. A view's findings are the union over its images; ``No Finding`` only
    when none of them has a finding.
    """
    all_views = list(dict.fromkeys(list(VIEW_ORDER) + (order_views(images["view"]) if len(images) else [])))
    finding_columns = [(n, textlib.FINDING_COLUMNS[n]) for n in textlib.FINDING_NAMES if n != "No Finding"]
    rows = []
    for (patient_id, laterality), group in _group_breasts(images.to_dict("records")).items():
        row: dict[str, Any] = {"patient_id": patient_id, "laterality": laterality, "split": group[0]["split"],
                               "fold": int(group[0]["fold"]), "density": max(int(g["density"]) for g in group),
                               "birads": max(int(g["birads"]) for g in group),
                               "views": order_views(g["view"] for g in group), "images": [g["image_id"] for g in group]}
        for view in all_views:
            in_view = [g for g in group if g["view"] == view]
            row[view] = [g["png_path"] for g in in_view]
            found = [name for name, column in finding_columns if any(int(g[column]) for g in in_view)]
            row[f"{view}_findings"] = found or (["No Finding"] if in_view else [])
        rows.append(row)
    columns = ["patient_id", "laterality", "split", "fold", "density", "birads", "views", "images"]
    for view in all_views:
        columns += [view, f"{view}_findings"]
    return pd.DataFrame(rows, columns=columns)


# --------------------------------------------------------------------------------------------------------------------
# RSNA


@dataclass
class RsnaTables:
    """The RSNA image table and the images left out."""

    images: pd.DataFrame
    dropped: pd.DataFrame


#: The RSNA train.csv columns the kit keeps; any other column (it could carry identifiers) is dropped unless asked.
RSNA_KEPT_COLUMNS: tuple[str, ...] = ("site_id", "patient_id", "image_id", "laterality", "view", "age", "cancer",
                                      "biopsy", "invasive", "BIRADS", "implant", "density", "machine_id",
                                      "difficult_negative_case")


def build_rsna(rsna_dir: str | os.PathLike, png_dir: str | os.PathLike, *, relative_to: str | os.PathLike | None = None,
               n_folds: int = 4, keep_extra_columns: bool = False) -> RsnaTables:
    """``train.csv`` + PNGs → the RSNA rows with ``fold`` (GroupKFold by patient), ``breast_id`` and ``png_path``.

    Only :data:`RSNA_KEPT_COLUMNS` pass into the table (a warning names the others) unless ``keep_extra_columns``.
    """
    rsna_dir, png_dir = Path(rsna_dir), Path(png_dir)
    df = read_input_csv(rsna_dir / "train.csv", RSNA_SCHEMA)
    extra = [c for c in df.columns if c not in RSNA_KEPT_COLUMNS]
    if extra and not keep_extra_columns:
        log.warning("%s: column(s) %s are not RSNA columns the kit uses and were left out of the table "
                    "(--keep-extra-columns keeps them)", rsna_dir / "train.csv", ", ".join(map(str, extra)))
        df = df.drop(columns=extra)
    duplicated = df["image_id"].duplicated(keep=False)
    if duplicated.any():
        first = int(np.flatnonzero(duplicated.to_numpy())[0])
        raise SchemaError(f"{rsna_dir / 'train.csv'}, {row_label(first)}, column 'image_id': value "
                          f"{df['image_id'].iloc[first]!r} appears more than once")
    df["cancer"] = df["cancer"].map(cell_text).astype(int)
    df["fold"] = assign_folds(df["patient_id"], n_folds)
    df["breast_id"] = df["patient_id"].astype(str) + "_" + df["laterality"].astype(str)
    images, dropped = attach_pngs(df, png_dir, Path(relative_to) if relative_to is not None else None, "rsna",
                                  images_dir=rsna_dir / "train_images", listed_in=rsna_dir / "train.csv")
    return RsnaTables(images=images, dropped=dropped)


# --------------------------------------------------------------------------------------------------------------------
# Image-report pairs


@dataclass
class ReportTextConfig:
    """How report text becomes training text."""

    per_breast: bool = True  # keep only the sentences about this breast (or both / no side)
    keep_decimals: bool = False  # kit option; the paper's cleaning cuts sentences at decimal points
    augment: textlib.TextAugmentConfig = field(default_factory=textlib.TextAugmentConfig)


@dataclass
class ReportTables:
    """The image-report pretraining table and the images / breasts left out."""

    pretrain: pd.DataFrame
    dropped: pd.DataFrame


def _report_sections(row: Mapping[str, Any], columns: Sequence[str]) -> tuple[str, str]:
    """(FINDINGS, IMPRESSION) of one image row: from their columns, or extracted from a free-text REPORT column."""
    if "FINDINGS" in columns or "IMPRESSION" in columns:
        findings, impression = row.get("FINDINGS"), row.get("IMPRESSION")
        return (findings if isinstance(findings, str) else ""), (impression if isinstance(impression, str) else "")
    sections = textlib.extract_sections(row.get("REPORT"))
    return sections.get("FINDINGS", ""), sections.get("IMPRESSION", "")


def breast_texts(findings: Iterable[str], impressions: Iterable[str], laterality: str,
                 config: ReportTextConfig | None = None) -> list[list[str]]:
    """Cleaned sentence lists of one breast: one per distinct FINDINGS text, then one per distinct IMPRESSION.

    FINDINGS (and IMPRESSION) sentences only about the other breast are dropped when ``config.per_breast``; empty
    results and duplicates are left out.
    """
    config = config or ReportTextConfig()
    out: list[list[str]] = []
    for raw in list(dict.fromkeys(findings)) + list(dict.fromkeys(impressions)):
        sentences = textlib.split_sentences(raw)
        if config.per_breast:
            sentences = textlib.select_breast_sentences(sentences, laterality)
        cleaned = textlib.clean_sentences(sentences, keep_decimals=config.keep_decimals)
        if cleaned and cleaned not in out:
            out.append(cleaned)
    return out


def _row_seed(seed: int, *keys: Any) -> int:
    return int(seed) * 1_000_003 + zlib.crc32("|".join(map(str, keys)).encode())


def build_reports(reports_dir: str | os.PathLike, png_dir: str | os.PathLike, *,
                  relative_to: str | os.PathLike | None = None, n_folds: int = 4, seed: int = 0,
                  config: ReportTextConfig | None = None, back_translator: Any = None,
                  progress: bool = True) -> ReportTables:
    """``reports.csv`` + PNGs → one row per patient × laterality with images per view, ``text`` and ``text_augment``.

    ``text`` = [cleaned FINDINGS sentences about this breast, cleaned IMPRESSION] (as in
    docs/reference-notes.md §7.3, one entry per distinct report text); ``text_augment`` has one augmented
    version per ``text`` entry: back-translation when ``back_translator`` (a
    :class:`~mammoclip_kit.data.text.BackTranslator`) is given, else the offline augmentation, seeded by
    ``seed`` and the breast (same seed ⇒ same table). ``fold`` is a GroupKFold by patient.
    """
    from mammoclip_kit.env import progress_bar as tqdm

    reports_dir, png_dir = Path(reports_dir), Path(png_dir)
    config = config or ReportTextConfig()
    source = reports_dir / "reports.csv"
    df = read_input_csv(source, REPORTS_SCHEMA)
    duplicated = df["image_id"].duplicated(keep=False)
    if duplicated.any():
        first = int(np.flatnonzero(duplicated.to_numpy())[0])
        raise SchemaError(f"{source}, {row_label(first)}, column 'image_id': value {df['image_id'].iloc[first]!r} "
                          f"appears more than once ({int(duplicated.sum())} rows share an image_id)")
    if not {"FINDINGS", "IMPRESSION", "REPORT"} & set(df.columns):
        raise SchemaError(f"{source}: missing column(s) FINDINGS, IMPRESSION — an image-report table needs FINDINGS "
                          "and IMPRESSION (or one free-text REPORT column with FINDINGS: / IMPRESSION: headers)")
    df["view"] = df["view"].astype(str).str.strip()
    df, dropped = attach_pngs(df, png_dir, Path(relative_to) if relative_to is not None else None, "reports",
                              images_dir=reports_dir / "images", listed_in=source)
    all_views = list(dict.fromkeys(list(VIEW_ORDER) + (order_views(df["view"]) if len(df) else [])))
    columns = list(df.columns)
    rows, texts, keys = [], [], []
    dropped_breasts = []
    groups = _group_breasts(df.to_dict("records"))
    for (patient_id, laterality), group in tqdm(groups.items(), total=len(groups), desc="reports",
                                                disable=not progress, leave=False):
        sections = [_report_sections(r, columns) for r in group]
        sentence_lists = breast_texts([s[0] for s in sections if s[0]], [s[1] for s in sections if s[1]],
                                      laterality, config)
        if not sentence_lists:
            dropped_breasts.append({"dataset": "reports", "image_id": ",".join(g["image_id"] for g in group),
                                    "reason": f"patient {patient_id} breast {laterality}: no report text left"})
            continue
        row: dict[str, Any] = {"patient_id": patient_id, "laterality": laterality,
                               "views": order_views(g["view"] for g in group), "images": [g["image_id"] for g in group]}
        for view in all_views:
            row[view] = [g["png_path"] for g in group if g["view"] == view]
        row["text"] = [" ".join(s) for s in sentence_lists]
        rows.append(row)
        texts.append(sentence_lists)
        keys.append((patient_id, laterality))
    if back_translator is not None:
        flat = [" ".join(s) for lists in texts for s in lists]
        translated = iter(back_translator(flat, seed=seed))
        augmented = [[next(translated) for _ in lists] for lists in texts]
    else:
        augmented = []
        for (patient_id, laterality), lists in zip(keys, texts, strict=True):
            rng = random.Random(_row_seed(seed, patient_id, laterality))
            augmented.append([" ".join(textlib.augment_sentences(s, rng, config.augment)) for s in lists])
    for row, aug in zip(rows, augmented, strict=True):
        row["text_augment"] = aug
    table = pd.DataFrame(rows, columns=["patient_id", "laterality", "views", "images", *all_views, "text",
                                        "text_augment"])
    table["fold"] = assign_folds(table["patient_id"], n_folds) if len(table) else []
    if dropped_breasts:
        dropped = pd.concat([dropped, pd.DataFrame(dropped_breasts)], ignore_index=True)
    return ReportTables(pretrain=table, dropped=dropped)
