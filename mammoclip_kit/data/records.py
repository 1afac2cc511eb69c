"""Training and evaluation tables: input schemas and validation, the VinDr / RSNA / image-report builders, folds and
:func:`ensure_tables` (docs/reference-notes.md §7.2–7.5, §9, §10).

Inputs (under ``data_root``; the embedded cohort writes the same files as the real datasets):

* ``vindr/breast-level_annotations.csv`` + ``vindr/finding_annotations.csv`` (VinDr-Mammo v1.0.0 columns and value
  styles: ``DENSITY A``, ``BI-RADS 4``, ``training`` / ``test``, ``finding_categories`` as a list string).
* ``rsna/train.csv`` (the RSNA Screening Mammography columns).
* ``reports/reports.csv`` (one row per image with its exam's report: ``patient_id, image_id, laterality, view,
  FINDINGS, IMPRESSION, …``; a free-text ``REPORT`` column with ``FINDINGS:`` / ``IMPRESSION:`` headers also works).

PNGs come from :func:`mammoclip_kit.data.preprocess.ensure_pngs`: ``<png_dir>/<patient_id>/<image_id>.png`` plus
``<png_dir>/manifest.csv`` (original size, crop box and scale of each image), which maps VinDr boxes exactly into PNG
pixels.

**The authors' preprocessed PNG releases** (VinDr on Kaggle, RSNA on Hugging Face,
docs/reference-notes.md §6.4) work without DICOMs. Put them at
``<data_root>/vindr/images_png/<study_id>/<image_id>.png`` and
``<data_root>/rsna/train_images_png/ <patient_id>/<image_id>.png`` (detected automatically), or name the
folder in the profile (``tables.png_root.vindr``) or with ``--png-root`` of the CLIs. Those folders have no
manifest, so the breast crop of each image is unknown and boxes are mapped by scaling alone:
``x_png = x · W_png / width``, ``y_png = y · H_png / height`` (``width``/``height`` from the VinDr CSV, the
PNG size read from its header); the ``box_mapping`` column says ``scaled`` instead of ``manifest``. Such boxes
are approximate: prefer DICOMs + the kit's preprocessing for detection work.

Outputs (``ctx.tables_dir``; image paths relative to ``ctx.output_dir``; list columns JSON-encoded, decoded by
:func:`read_table`; ``fold`` is a GroupKFold by patient, so all images of a patient share a fold):

* ``vindr_images.csv`` — one row per image, one-hot finding columns, density 0–3, birads, split, fold (training split
  only; ``-1`` on the test split), ``png_path``.
* ``vindr_boxes.csv`` — one row per box and finding, original and PNG coordinates.
* ``vindr_pretrain.csv`` — one row per patient × laterality: ``views``, one list of PNG paths per view (``CC``,
  ``MLO``), findings per view (``CC_findings``, ``MLO_findings``: flat lists of VinDr finding names).
* ``rsna_images.csv`` — the RSNA rows + ``fold``, ``breast_id`` (``<patient_id>_<laterality>``), ``png_path``.
* ``reports_pretrain.csv`` — one row per patient × laterality: ``views``, image lists per view, ``text`` (cleaned
  FINDINGS sentences about this breast, cleaned IMPRESSION), ``text_augment`` (one augmented version per text),
  ``fold``.
"""

from __future__ import annotations

import ast
import json
import logging
import math
import os
import random
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from mammoclip_kit import env
from mammoclip_kit.artifacts import ensure
from mammoclip_kit.config import StageConfig
from mammoclip_kit.data import text as textlib
from mammoclip_kit.errors import cli_errors

if TYPE_CHECKING:
    from mammoclip_kit.context import RunContext

log = logging.getLogger(__name__)

#: Bump when a builder's output changes, so that :func:`ensure_tables` rebuilds stale tables.
TABLES_VERSION = 1
#: Columns always read as strings (identifiers).
ID_COLUMNS: tuple[str, ...] = ("patient_id", "image_id", "study_id", "series_id", "breast_id", "site_id", "machine_id")
#: Canonical view order in the pretraining tables; other views follow alphabetically.
VIEW_ORDER: tuple[str, ...] = ("CC", "MLO")
DENSITY_LETTERS: tuple[str, ...] = ("A", "B", "C", "D")
TABLE_NAMES: tuple[str, ...] = ("vindr_images", "vindr_boxes", "vindr_pretrain", "rsna_images", "reports_pretrain")


# --------------------------------------------------------------------------------------------------------------------
# Schemas and validation


class SchemaError(ValueError):
    """An input table does not have the expected columns or values (the message names file, row and column)."""


@dataclass(frozen=True)
class Schema:
    """Expected columns and value rules of one input CSV."""

    name: str  # human-readable name used in messages
    required: tuple[str, ...]  # columns that must exist
    allowed: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # column → allowed values (blank = NaN)
    integer: tuple[str, ...] = ()  # columns that must hold integers (blank not allowed)
    number: tuple[str, ...] = ()  # columns that must hold numbers or be blank
    nonempty: tuple[str, ...] = ()  # columns that must not be blank
    optional_allowed: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # rules for columns that may be absent


VINDR_DENSITY = tuple(f"DENSITY {d}" for d in DENSITY_LETTERS)
VINDR_BIRADS = tuple(f"BI-RADS {b}" for b in range(1, 6))
VINDR_SPLITS = ("training", "test")

VINDR_BREAST_SCHEMA = Schema(
    name="VinDr breast-level annotations",
    required=("study_id", "series_id", "image_id", "laterality", "view_position", "height", "width", "breast_birads",
              "breast_density", "split"),
    allowed={"laterality": ("L", "R"), "breast_density": VINDR_DENSITY, "breast_birads": VINDR_BIRADS,
             "split": VINDR_SPLITS},
    integer=("height", "width"),
    nonempty=("study_id", "image_id", "view_position"),
)
VINDR_FINDING_SCHEMA = Schema(
    name="VinDr finding annotations",
    required=VINDR_BREAST_SCHEMA.required + ("finding_categories", "finding_birads", "xmin", "ymin", "xmax", "ymax"),
    allowed={"laterality": ("L", "R"), "split": VINDR_SPLITS},
    number=("xmin", "ymin", "xmax", "ymax"),
    nonempty=("study_id", "image_id", "finding_categories"),
)
RSNA_SCHEMA = Schema(
    name="RSNA train.csv",
    required=("patient_id", "image_id", "laterality", "view", "cancer"),
    allowed={"laterality": ("L", "R"), "cancer": ("0", "1")},
    nonempty=("patient_id", "image_id", "view"),
    optional_allowed={"density": DENSITY_LETTERS, "biopsy": ("0", "1"), "invasive": ("0", "1"),
                      "implant": ("0", "1")},
)
REPORTS_SCHEMA = Schema(
    name="image-report table",
    required=("patient_id", "image_id", "laterality", "view"),
    allowed={"laterality": ("L", "R")},
    nonempty=("patient_id", "image_id", "view"),
)


def _row_label(index: int) -> str:
    return f"row {index + 1} (line {index + 2})"


def _blank(value: Any) -> bool:
    """None, NaN, pd.NA or a string of white space."""
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, (list, tuple, np.ndarray)):
        return False
    return value is None or bool(pd.isna(value))


def _norm(value: Any) -> str:
    """A cell as text: integers written as floats by pandas (``1.0``) become ``1``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def validate(df: pd.DataFrame, schema: Schema, source: str | os.PathLike) -> None:
    """Check ``df`` against ``schema``; raise :class:`SchemaError` naming ``source``, the row and column and the value."""
    missing = [c for c in schema.required if c not in df.columns]
    if missing:
        raise SchemaError(f"{source}: missing column(s) {', '.join(missing)} — a {schema.name} file needs "
                          f"{', '.join(schema.required)}; found {', '.join(map(str, df.columns))}")
    checks = dict(schema.allowed)
    checks.update({c: v for c, v in schema.optional_allowed.items() if c in df.columns})
    for column in schema.nonempty:
        bad = [i for i, v in enumerate(df[column]) if _blank(v)]
        if bad:
            raise SchemaError(f"{source}, {_row_label(bad[0])}, column {column!r}: empty value "
                              f"({len(bad)} row(s) in all)")
    for column, allowed in checks.items():
        for i, value in enumerate(df[column]):
            if _blank(value):
                if column in schema.nonempty or column in schema.allowed:
                    raise SchemaError(f"{source}, {_row_label(i)}, column {column!r}: empty value; expected one of "
                                      f"{', '.join(allowed)}")
                continue
            if _norm(value) not in allowed:
                raise SchemaError(f"{source}, {_row_label(i)}, column {column!r}: value {value!r} is not one of "
                                  f"{', '.join(allowed)}")
    for column in schema.integer:
        for i, value in enumerate(df[column]):
            try:
                ok = not _blank(value) and float(value) == int(float(value))
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise SchemaError(f"{source}, {_row_label(i)}, column {column!r}: value {value!r} is not an integer")
    for column in schema.number:
        for i, value in enumerate(df[column]):
            if _blank(value):
                continue
            try:
                float(value)
            except (TypeError, ValueError):
                raise SchemaError(f"{source}, {_row_label(i)}, column {column!r}: value {value!r} is not a "
                                  "number") from None


#: Input tables that must hold at least one data row (a header-only file is an error, never an empty table).
_NONEMPTY_INPUTS = frozenset({"VinDr breast-level annotations", "RSNA train.csv", "image-report table"})


def read_csv_checked(path: str | os.PathLike, what: str = "CSV", **read_csv: Any) -> pd.DataFrame:
    """``pd.read_csv`` whose failures (0-byte file, not UTF-8, malformed rows) raise :class:`SchemaError` naming the
    file and the problem instead of a parser traceback."""
    path = Path(path)
    if path.is_dir():
        raise SchemaError(f"{path}: is a folder, expected a {what} file")
    if path.is_file() and path.stat().st_size == 0:
        raise SchemaError(f"{path}: empty file (0 bytes); expected a {what} with a header row")
    try:
        return pd.read_csv(path, **read_csv)
    except UnicodeDecodeError as error:
        raise SchemaError(f"{path}: not UTF-8 text (byte {error.object[error.start:error.start + 1]!r} at offset "
                          f"{error.start}); save the {what} as UTF-8") from None
    except pd.errors.EmptyDataError:
        raise SchemaError(f"{path}: no header row; expected a {what} with a header row") from None
    except pd.errors.ParserError as error:
        raise SchemaError(f"{path}: not a readable CSV ({' '.join(str(error).split())})") from None


def read_input_csv(path: str | os.PathLike, schema: Schema) -> pd.DataFrame:
    """Read an input CSV (identifiers as strings) and validate it; a missing file raises ``FileNotFoundError``."""
    path = Path(path)
    if not path.is_file() and not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file (expected a {schema.name} CSV)")
    df = read_csv_checked(path, f"{schema.name} CSV", dtype={c: str for c in ID_COLUMNS})
    validate(df, schema, path)
    if schema.name in _NONEMPTY_INPUTS and not len(df):
        raise SchemaError(f"{path}: header only, no data rows; a {schema.name} file needs at least one row")
    return df


# --------------------------------------------------------------------------------------------------------------------
# Table I/O


def write_table(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a built table as CSV, JSON-encoding list cells; atomic (temporary file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = df.copy()
    for column in out.columns:
        if out[column].map(lambda v: isinstance(v, (list, tuple))).any():
            out[column] = out[column].map(lambda v: json.dumps(list(v)) if isinstance(v, (list, tuple)) else v)
    from mammoclip_kit.artifacts import atomic_write_csv

    return atomic_write_csv(path, out)


def require_rows(frames: Mapping[str, pd.DataFrame], dropped: pd.DataFrame, png_dir: str | os.PathLike) -> None:
    """Refuse to write a built table with zero rows (an existing good table is never replaced by an empty one).

    The message names the table, the PNG folder and the first reasons images were left out (e.g. a misspelt
    ``--png-dir``: every image then has "no PNG at ...").
    """
    empty = [name for name, frame in frames.items() if not name.endswith(("_boxes",)) and not len(frame)]
    if not empty:
        return
    reasons = []
    if dropped is not None and len(dropped):
        reasons = list(dict.fromkeys(str(r) for r in dropped["reason"]))[:2]
    why = f"{len(dropped)} image(s) left out, e.g. {'; '.join(reasons)}" if reasons else "no input rows"
    raise SchemaError(f"{', '.join(empty)}: 0 rows kept from PNG folder {png_dir} ({why}); nothing written — check "
                      "--png-dir / --png-root")


def _decode_list(value: Any, path: Path, row: int, column: str) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        try:
            return list(ast.literal_eval(value))
        except (ValueError, SyntaxError):
            raise SchemaError(f"{path}, {_row_label(row)}, column {column!r}: value {value!r} is not a JSON list") \
                from None


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a built table: identifiers as strings and list columns (cells written as ``[...]``) decoded to lists."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such table (build it with mammoclip_kit.data.records.ensure_tables)")
    df = read_csv_checked(path, "built table", dtype={c: str for c in ID_COLUMNS})
    for column in df.columns:
        if not (df[column].dtype == object or pd.api.types.is_string_dtype(df[column])):
            continue
        values = df[column].dropna()
        if len(values) and values.map(lambda v: isinstance(v, str) and v.startswith("[") and v.endswith("]")).all():
            df[column] = [_decode_list(v, path, i, column) for i, v in enumerate(df[column])]
    return df


# --------------------------------------------------------------------------------------------------------------------
# Shared helpers


def assign_folds(groups: Sequence[Any], n_folds: int) -> np.ndarray:
    """GroupKFold fold index per row: every row of a group (patient) gets the same fold.

    ``n_folds`` is capped at the number of groups; with fewer than 2 groups everything is fold 0. Deterministic
    (scikit-learn's GroupKFold balances fold sizes without randomness).
    """
    from sklearn.model_selection import GroupKFold

    groups = np.asarray([str(g) for g in groups])
    folds = np.zeros(len(groups), dtype=int)
    n_groups = len(np.unique(groups))
    k = min(int(n_folds), n_groups)
    if k < 2:
        return folds
    for fold, (_, test_index) in enumerate(GroupKFold(n_splits=k).split(groups, groups=groups)):
        folds[test_index] = fold
    return folds


def _relpath(path: Path, relative_to: Path | None) -> str:
    if relative_to is None:
        return str(path)
    try:
        return path.resolve().relative_to(Path(relative_to).resolve()).as_posix()
    except ValueError:
        return str(path)


def _png_path(png_dir: Path, patient_id: str, image_id: str) -> Path:
    name = image_id if image_id.lower().endswith(".png") else f"{image_id}.png"
    return png_dir / str(patient_id) / name


def _view_order(views: Iterable[str]) -> list[str]:
    views = list(dict.fromkeys(views))
    return [v for v in VIEW_ORDER if v in views] + sorted(v for v in views if v not in VIEW_ORDER)


def _read_manifest(png_dir: Path) -> pd.DataFrame | None:
    path = png_dir / "manifest.csv"
    if not path.is_file():
        return None
    manifest = read_csv_checked(path, "PNG manifest", dtype={c: str for c in ID_COLUMNS})
    if "image_id" not in manifest.columns:
        raise SchemaError(f"{path}: missing column image_id")
    return manifest.drop_duplicates("image_id", keep="last").set_index("image_id", drop=False)


def _attach_pngs(df: pd.DataFrame, png_dir: Path, relative_to: Path | None, dataset: str,
                 patient_column: str = "patient_id") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Add ``png_path``; rows whose PNG is missing go to the dropped table (with the reason)."""
    paths = [_png_path(png_dir, p, i) for p, i in zip(df[patient_column], df["image_id"], strict=True)]
    exists = np.array([p.is_file() for p in paths], dtype=bool)
    base = _relpath(png_dir, relative_to)  # resolve once; every PNG lies below png_dir
    df = df.copy()
    df["png_path"] = [f"{base}/{p.relative_to(png_dir).as_posix()}" if relative_to is not None and not
                      Path(base).is_absolute() else str(p) for p in paths]
    dropped = pd.DataFrame({"dataset": dataset, "image_id": df.loc[~exists, "image_id"],
                            "reason": [f"no PNG at {p}" for p, e in zip(paths, exists, strict=True) if not e]})
    if (~exists).any():
        log.warning("%s: %d of %d image(s) have no PNG under %s and are left out", dataset, int((~exists).sum()),
                    len(df), png_dir)
    return df.loc[exists].reset_index(drop=True), dropped


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
    where = f"{source}, {_row_label(row)}, column 'finding_categories'"
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
    if all(_blank(c) for c in coords):
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
        raise SchemaError(f"{breast_csv}, {_row_label(first)}, column 'image_id': value "
                          f"{breast['image_id'].iloc[first]!r} appears more than once")
    known = set(breast["image_id"])
    sizes = {i: (float(w), float(h)) for i, w, h in zip(breast["image_id"], breast["width"], breast["height"],
                                                         strict=True)}
    box_notes: list[dict[str, Any]] = []
    findings_per_image: dict[str, set[str]] = {}
    box_rows = []
    for i, row in enumerate(finding.itertuples(index=False)):
        if row.image_id not in known:
            raise SchemaError(f"{finding_csv}, {_row_label(i)}, column 'image_id': value {row.image_id!r} is not in "
                              f"{breast_csv.name}")
        names = parse_finding_categories(row.finding_categories, finding_csv, i)
        findings_per_image.setdefault(row.image_id, set()).update(names)
        coords = [row.xmin, row.ymin, row.xmax, row.ymax]
        present = [not _blank(c) for c in coords]
        if any(present) and not all(present):
            raise SchemaError(f"{finding_csv}, {_row_label(i)}: box coordinates xmin, ymin, xmax, ymax must be all set "
                              f"or all blank, got {coords}")
        problem, kept_box = _box_problem(names, coords, sizes[row.image_id])
        if problem:
            box_notes.append({"dataset": "vindr_boxes", "image_id": row.image_id,
                              "reason": f"{finding_csv.name} {_row_label(i)}: {problem}"})
        if all(present) and kept_box is not None:
            xmin, ymin, xmax, ymax = kept_box
            if xmax <= xmin or ymax <= ymin:
                raise SchemaError(f"{finding_csv}, {_row_label(i)}: empty box (xmin {xmin}, ymin {ymin}, xmax {xmax}, "
                                  f"ymax {ymax}); need xmax > xmin and ymax > ymin")
            for name in names:
                if name != "No Finding":
                    box_rows.append({"box_id": i, "image_id": row.image_id, "finding": name,
                                     "finding_birads": None if _blank(row.finding_birads) else row.finding_birads,
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
    images, dropped = _attach_pngs(images, png_dir, relative_to, "vindr")

    manifest = _read_manifest(png_dir)
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
                                 _png_path(png_dir, image["patient_id"], image_id))
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
    all_views = list(dict.fromkeys(list(VIEW_ORDER) + (_view_order(images["view"]) if len(images) else [])))
    finding_columns = [(n, textlib.FINDING_COLUMNS[n]) for n in textlib.FINDING_NAMES if n != "No Finding"]
    rows = []
    for (patient_id, laterality), group in _group_breasts(images.to_dict("records")).items():
        row: dict[str, Any] = {"patient_id": patient_id, "laterality": laterality, "split": group[0]["split"],
                               "fold": int(group[0]["fold"]), "density": max(int(g["density"]) for g in group),
                               "birads": max(int(g["birads"]) for g in group),
                               "views": _view_order(g["view"] for g in group), "images": [g["image_id"] for g in group]}
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
        raise SchemaError(f"{rsna_dir / 'train.csv'}, {_row_label(first)}, column 'image_id': value "
                          f"{df['image_id'].iloc[first]!r} appears more than once")
    df["cancer"] = df["cancer"].map(_norm).astype(int)
    df["fold"] = assign_folds(df["patient_id"], n_folds)
    df["breast_id"] = df["patient_id"].astype(str) + "_" + df["laterality"].astype(str)
    images, dropped = _attach_pngs(df, png_dir, Path(relative_to) if relative_to is not None else None, "rsna")
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
        raise SchemaError(f"{source}, {_row_label(first)}, column 'image_id': value {df['image_id'].iloc[first]!r} "
                          f"appears more than once ({int(duplicated.sum())} rows share an image_id)")
    if not {"FINDINGS", "IMPRESSION", "REPORT"} & set(df.columns):
        raise SchemaError(f"{source}: missing column(s) FINDINGS, IMPRESSION — an image-report table needs FINDINGS "
                          "and IMPRESSION (or one free-text REPORT column with FINDINGS: / IMPRESSION: headers)")
    df["view"] = df["view"].astype(str).str.strip()
    df, dropped = _attach_pngs(df, png_dir, Path(relative_to) if relative_to is not None else None, "reports")
    all_views = list(dict.fromkeys(list(VIEW_ORDER) + (_view_order(df["view"]) if len(df) else [])))
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
                               "views": _view_order(g["view"] for g in group), "images": [g["image_id"] for g in group]}
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


# --------------------------------------------------------------------------------------------------------------------
# ensure_tables


@dataclass
class TablesConfig(StageConfig):
    """The ``tables`` section of a profile (built with :meth:`~mammoclip_kit.config.StageConfig.from_context`)."""

    SECTION: ClassVar[str] = "tables"

    n_folds: int = 4  # GroupKFold folds (by patient) for RSNA, reports and the VinDr training split
    per_breast: bool = True  # per-breast sentence selection of bilateral reports
    keep_decimals: bool = False  # kit option; False = the paper's cleaning
    augment: dict[str, Any] = field(default_factory=dict)  # TextAugmentConfig fields (data.text)
    back_translation: list[str] | None = None  # [en→pivot folder, pivot→en folder] of local MarianMT models
    png_root: dict[str, str | None] = field(default_factory=dict)  # dataset → folder of the authors' PNG release

    def report_config(self) -> ReportTextConfig:
        return ReportTextConfig(per_breast=self.per_breast, keep_decimals=self.keep_decimals,
                                augment=textlib.TextAugmentConfig.from_dict(self.augment))


#: Author PNG release folders that :func:`ensure_tables` detects under ``data_root`` (reference names,
#: docs/reference-notes.md §6.4).
RELEASE_PNG_DIRS: dict[str, str] = {"vindr": "vindr/images_png", "rsna": "rsna/train_images_png"}
#: Inputs of each dataset's builder, relative to ``data_root``.
_INPUTS: dict[str, tuple[str, ...]] = {
    "vindr": ("vindr/breast-level_annotations.csv", "vindr/finding_annotations.csv"),
    "rsna": ("rsna/train.csv",),
    "reports": ("reports/reports.csv",),
}
_OUTPUTS: dict[str, tuple[str, ...]] = {
    "vindr": ("vindr_images", "vindr_boxes", "vindr_pretrain"), "rsna": ("rsna_images",),
    "reports": ("reports_pretrain",),
}


def _resolve_png_dirs(ctx: RunContext, config: TablesConfig) -> dict[str, Path]:
    """Configured release folders, then the kit's PNGs (``ensure_pngs``), then detected release folders."""
    png_dirs: dict[str, Path] = {}
    for dataset, folder in (config.png_root or {}).items():
        if folder:
            path = Path(folder).expanduser()
            png_dirs[dataset] = path if path.is_absolute() else ctx.data_root / path
    if any(d not in png_dirs for d in _INPUTS):
        # ensure_pngs asks the context for its data first (the context builds a missing embedded cohort)
        from mammoclip_kit.data.preprocess import ensure_pngs

        for dataset, folder in (ensure_pngs(ctx) or {}).items():
            png_dirs.setdefault(dataset, Path(folder))
    for dataset, folder in RELEASE_PNG_DIRS.items():
        if dataset not in png_dirs and (ctx.data_root / folder).is_dir():
            png_dirs[dataset] = ctx.data_root / folder
    return png_dirs


def _file_signature(path: Path) -> list[Any]:
    if not path.exists():
        return [str(path), None]
    stat = path.stat()
    return [str(path), stat.st_mtime_ns, stat.st_size]


def ensure_tables(ctx: RunContext, datasets: Sequence[str] | None = None) -> dict[str, Path]:
    """Build every table whose inputs exist under ``ctx.data_root`` (skipping up-to-date ones); name → path.

    PNGs come from :func:`mammoclip_kit.data.preprocess.ensure_pngs` (or an author PNG release, see the module
    docstring). Each dataset's table group is an artefact (:func:`mammoclip_kit.artifacts.ensure`) recorded in
    ``tables/<dataset>.params.json``: it is rebuilt when its inputs (CSV and PNG manifest mtimes and sizes), the
    ``tables`` settings, the seed or the kit's table version changed, when one of its tables is missing, or when
    ``ctx.retrain`` is set. Left-out images are listed in ``tables/dropped.csv``.
    """
    config = TablesConfig.from_context(ctx)
    tables_dir = Path(ctx.tables_dir)
    png_dirs = _resolve_png_dirs(ctx, config)
    built: dict[str, Path] = {}
    dropped_all = []
    for dataset in datasets or tuple(_INPUTS):
        inputs = [ctx.data_root / f for f in _INPUTS[dataset]]
        if not all(p.is_file() for p in inputs):
            continue
        if dataset not in png_dirs:
            raise FileNotFoundError(f"{ctx.data_root / dataset}: the tables need PNGs, but there are no DICOMs to "
                                    f"convert and no PNG release at {ctx.data_root / RELEASE_PNG_DIRS.get(dataset, '')}")
        png_dir = png_dirs[dataset]
        signature = {"version": TABLES_VERSION, "seed": ctx.seed, "settings": config.to_dict(),
                     "inputs": [_file_signature(p) for p in inputs], "png_dir": str(png_dir),
                     "manifest": _file_signature(png_dir / "manifest.csv"),
                     "png_dir_mtime": png_dir.stat().st_mtime_ns if png_dir.is_dir() else None}
        outputs = {name: tables_dir / f"{name}.csv" for name in _OUTPUTS[dataset]}

        def reuse(_: Path, dataset: str = dataset, outputs: dict[str, Path] = outputs) -> dict[str, Path]:
            if env.verbose():
                print(f"tables {dataset:<8} up to date: {', '.join(outputs)}")
            return outputs

        def build(_: Path, dataset: str = dataset, png_dir: Path = png_dir,
                  outputs: dict[str, Path] = outputs) -> dict[str, Path]:
            dropped_all.append(_build_group(ctx, dataset, png_dir, config, outputs))
            return outputs

        missing = not all(p.is_file() for p in outputs.values())
        built.update(ensure(tables_dir, signature, build, load=reuse, retrain=ctx.retrain or missing,
                            record=tables_dir / f"{dataset}.params.json", verbose=False))
    if dropped_all:
        dropped = pd.concat(dropped_all, ignore_index=True)
        previous = tables_dir / "dropped.csv"
        if previous.is_file():
            old = pd.read_csv(previous, dtype=str)
            old = old[~old["dataset"].isin(set(dropped["dataset"]))]
            dropped = pd.concat([old, dropped], ignore_index=True)
        write_table(dropped, previous)
    return built


def _build_group(ctx: RunContext, dataset: str, png_dir: Path, config: TablesConfig,
                 outputs: Mapping[str, Path]) -> pd.DataFrame:
    """Build and write the tables of one dataset; returns its left-out images."""
    started = time.perf_counter()
    relative_to = ctx.output_dir
    if dataset == "vindr":
        result = build_vindr(ctx.data_root / "vindr", png_dir, relative_to=relative_to, n_folds=config.n_folds)
        frames = {"vindr_images": result.images, "vindr_boxes": result.boxes, "vindr_pretrain": result.pretrain}
    elif dataset == "rsna":
        result = build_rsna(ctx.data_root / "rsna", png_dir, relative_to=relative_to, n_folds=config.n_folds)
        frames = {"rsna_images": result.images}
    else:
        translator = None
        if config.back_translation:
            translator = textlib.BackTranslator(*config.back_translation, device=ctx.device)
        result = build_reports(ctx.data_root / "reports", png_dir, relative_to=relative_to,
                               n_folds=config.n_folds, seed=ctx.seed, config=config.report_config(),
                               back_translator=translator)
        frames = {"reports_pretrain": result.pretrain}
    require_rows(frames, result.dropped, png_dir)  # never replace a good table by an empty one
    for name, frame in frames.items():
        write_table(frame, outputs[name])
    print(f"tables {dataset:<8} built in {time.perf_counter() - started:.1f} s: "
          + ", ".join(f"{name} {len(frame)} rows" for name, frame in frames.items())
          + (f"; {len(result.dropped)} left out (tables/dropped.csv)" if len(result.dropped) else ""))
    return result.dropped


def table_counts(paths: Mapping[str, Path]) -> dict[str, int]:
    """Row counts of built tables (name → rows)."""
    return {name: int(len(pd.read_csv(path, usecols=[0]))) for name, path in paths.items()}


# --------------------------------------------------------------------------------------------------------------------
# Command-line entry shared by data_prep.build_vindr / build_rsna / build_reports

_CLI_DIRS = {"vindr": "vindr", "rsna": "rsna", "reports": "reports"}


def _dataset_dir(data_root: Path, dataset: str) -> Path:
    """``data_root/<dataset>`` when it exists, else ``data_root`` itself (a folder holding the CSVs directly)."""
    sub = data_root / _CLI_DIRS[dataset]
    return sub if sub.is_dir() else data_root


@cli_errors
def build_cli(dataset: str, argv: Sequence[str] | None = None, description: str | None = None) -> dict[str, Path]:
    """Parse the shared builder options, build ``dataset``'s tables, write them and print their row counts."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog=f"python -m data_prep.build_{dataset}", description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, required=True,
                        help=f"folder holding {_CLI_DIRS[dataset]}/ (or the input CSV(s) directly)")
    pngs = parser.add_mutually_exclusive_group(required=True)
    pngs.add_argument("--png-dir", type=Path, help="the kit's PNG folder (<patient_id>/<image_id>.png + manifest.csv)")
    pngs.add_argument("--png-root", type=Path,
                      help="an authors' PNG release (<patient_id>/<image_id>.png, no manifest; boxes are scaled)")
    parser.add_argument("--out", type=Path, required=True, help="tables folder (e.g. runs/<profile>/tables)")
    parser.add_argument("--output-dir", type=Path, default=None,
                        help="PNG paths are stored relative to this folder (default: the parent of --out)")
    parser.add_argument("--n-folds", type=int, default=4, help="GroupKFold folds by patient (default 4)")
    if dataset == "rsna":
        parser.add_argument("--keep-extra-columns", action="store_true",
                            help="keep train.csv columns the kit does not use (default: left out, named in a warning)")
    if dataset == "reports":
        parser.add_argument("--seed", type=int, default=0, help="seed of the text augmentation")
        parser.add_argument("--no-per-breast", action="store_true",
                            help="keep every report sentence for both breasts (default: drop the other breast's)")
        parser.add_argument("--keep-decimals", action="store_true",
                            help="keep decimal numbers whole (the paper's cleaning cuts sentences at '.')")
        parser.add_argument("--back-translation", nargs=2, type=Path, metavar=("EN_TO_PIVOT", "PIVOT_TO_EN"),
                            help="two local MarianMT folders; default: the offline augmentation")
    args = parser.parse_args(argv)
    png_dir = args.png_dir or args.png_root
    output_dir = args.output_dir or args.out.parent
    source = _dataset_dir(args.data_root, dataset)
    try:
        if dataset == "vindr":
            result = build_vindr(source, png_dir, relative_to=output_dir, n_folds=args.n_folds,
                                 png_release=args.png_root is not None)
            frames = {"vindr_images": result.images, "vindr_boxes": result.boxes, "vindr_pretrain": result.pretrain}
        elif dataset == "rsna":
            result = build_rsna(source, png_dir, relative_to=output_dir, n_folds=args.n_folds,
                                keep_extra_columns=args.keep_extra_columns)
            frames = {"rsna_images": result.images}
        else:
            translator = textlib.BackTranslator(*args.back_translation) if args.back_translation else None
            config = ReportTextConfig(per_breast=not args.no_per_breast, keep_decimals=args.keep_decimals)
            result = build_reports(source, png_dir, relative_to=output_dir, n_folds=args.n_folds, seed=args.seed,
                                   config=config, back_translator=translator)
            frames = {"reports_pretrain": result.pretrain}
    except (SchemaError, FileNotFoundError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    require_rows(frames, result.dropped, png_dir)
    paths = {name: write_table(frame, args.out / f"{name}.csv") for name, frame in frames.items()}
    for name, frame in frames.items():
        print(f"{name:<18} {len(frame):>7} rows → {paths[name]}")
    if len(result.dropped):
        dropped = write_table(result.dropped, args.out / f"dropped_{dataset}.csv")
        print(f"{len(result.dropped)} image(s) / breast(s) left out (reasons in {dropped})")
    return paths
