"""Training and evaluation tables: input schemas and validation, table I/O, folds, :func:`ensure_tables` and the
builders' CLI (docs/reference-notes.md §7.2–7.5, §9, §10). The per-dataset builders (``build_vindr``, ``build_rsna``,
``build_reports``) are :mod:`mammoclip_kit.data.builders`; they build on the schemas and helpers here, and
:func:`ensure_tables` / :func:`build_cli` import them inside the function (the builders import this module).

Inputs (under ``data_root``; the embedded cohort writes the same files as the real datasets):

* ``vindr/breast-level_annotations.csv`` + ``vindr/finding_annotations.csv`` (VinDr-Mammo v1.0.0 columns and value
  styles: ``DENSITY A``, ``BI-RADS 4``, ``training`` / ``test``, ``finding_categories`` as a list string).
* ``rsna/train.csv`` (the RSNA Screening Mammography columns).
* ``reports/reports.csv`` (one row per image with its exam's report: ``patient_id, image_id, laterality, view,
  FINDINGS, IMPRESSION, …``; a free-text ``REPORT`` column with ``FINDINGS:`` / ``IMPRESSION:`` headers also works).

PNGs come from :func:`mammoclip_kit.data.batch.ensure_pngs`: ``<png_dir>/<patient_id>/<image_id>.png`` plus
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
import os
import time
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
    from mammoclip_kit.data.builders import ReportTextConfig

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


def row_label(index: int) -> str:
    """How messages name a data row of a CSV: ``row 3 (line 4)`` for index 2 (line 1 is the header)."""
    return f"row {index + 1} (line {index + 2})"


def is_blank(value: Any) -> bool:
    """None, NaN, pd.NA or a string of white space."""
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, (list, tuple, np.ndarray)):
        return False
    return value is None or bool(pd.isna(value))


def cell_text(value: Any) -> str:
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
        bad = [i for i, v in enumerate(df[column]) if is_blank(v)]
        if bad:
            raise SchemaError(f"{source}, {row_label(bad[0])}, column {column!r}: empty value "
                              f"({len(bad)} row(s) in all)")
    for column, allowed in checks.items():
        for i, value in enumerate(df[column]):
            if is_blank(value):
                if column in schema.nonempty or column in schema.allowed:
                    raise SchemaError(f"{source}, {row_label(i)}, column {column!r}: empty value; expected one of "
                                      f"{', '.join(allowed)}")
                continue
            if cell_text(value) not in allowed:
                raise SchemaError(f"{source}, {row_label(i)}, column {column!r}: value {value!r} is not one of "
                                  f"{', '.join(allowed)}")
    for column in schema.integer:
        for i, value in enumerate(df[column]):
            try:
                ok = not is_blank(value) and float(value) == int(float(value))
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise SchemaError(f"{source}, {row_label(i)}, column {column!r}: value {value!r} is not an integer")
    for column in schema.number:
        for i, value in enumerate(df[column]):
            if is_blank(value):
                continue
            try:
                float(value)
            except (TypeError, ValueError):
                raise SchemaError(f"{source}, {row_label(i)}, column {column!r}: value {value!r} is not a "
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
            raise SchemaError(f"{path}, {row_label(row)}, column {column!r}: value {value!r} is not a JSON list") \
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


def png_path_for(png_dir: Path, patient_id: str, image_id: str) -> Path:
    """Where the PNG of an image lies in a PNG folder: ``png_dir/<patient_id>/<image_id>.png``."""
    name = image_id if image_id.lower().endswith(".png") else f"{image_id}.png"
    return png_dir / str(patient_id) / name


def order_views(views: Iterable[str]) -> list[str]:
    """Distinct views in the canonical order: :data:`VIEW_ORDER` first, the others alphabetically."""
    views = list(dict.fromkeys(views))
    return [v for v in VIEW_ORDER if v in views] + sorted(v for v in views if v not in VIEW_ORDER)


def read_manifest(png_dir: Path) -> pd.DataFrame | None:
    """The PNG folder's ``manifest.csv`` indexed by image_id (last row wins), or None when the folder has none."""
    path = png_dir / "manifest.csv"
    if not path.is_file():
        return None
    manifest = read_csv_checked(path, "PNG manifest", dtype={c: str for c in ID_COLUMNS})
    if "image_id" not in manifest.columns:
        raise SchemaError(f"{path}: missing column image_id")
    return manifest.drop_duplicates("image_id", keep="last").set_index("image_id", drop=False)


#: Start of the stderr line that names an input listed in a CSV but absent on disk (one line per input, at most
#: :data:`MISSING_SHOWN`). The notebook runner reports a notebook that printed one as "missing inputs", not "ok".
MISSING_INPUT = "missing input:"
MISSING_SHOWN = 10
#: Start of a dropped-table reason for an image whose DICOM is not on disk (:func:`attach_pngs`).
DICOM_MISSING = "DICOM missing:"
DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom", ".DCM", ".DICOM")


def _dicom_of(images_dir: Path, patient_id: str, image_id: str) -> Path | None:
    """The DICOM of an image under a dataset's image folder (``<patient_id>/<image_id>.dcm|.dicom``), or None."""
    for suffix in DICOM_SUFFIXES:
        path = images_dir / str(patient_id) / f"{image_id}{suffix}"
        if path.is_file():
            return path
    return None


def _conversion_errors(png_dir: Path) -> dict[str, str]:
    """image_id → "error: message" of the PNG folder's ``errors.csv`` (the last conversion's failures)."""
    path = png_dir / "errors.csv"
    if not path.is_file() or not path.stat().st_size:
        return {}
    table = read_csv_checked(path, "PNG conversion errors", dtype=str).fillna("")
    if not {"image_id", "error", "message"} <= set(table.columns):
        return {}
    return {r.image_id: f"{r.error}: {r.message}" for r in table.itertuples()}


def _missing_png_reason(png: Path, png_dir: Path, patient_id: str, image_id: str, row: int, images_dir: Path | None,
                        suffix: str, listed_in: Path | None, errors: dict[str, str]) -> str:
    """Why an image has no PNG: its DICOM is not on disk, its DICOM failed to convert, or (else) no PNG at ``png``."""
    where = f"{listed_in.name} {row_label(row)}" if listed_in is not None else "the input table"
    if images_dir is not None:
        dicom = _dicom_of(images_dir, patient_id, image_id)
        if dicom is None:
            return f"{DICOM_MISSING} {images_dir / str(patient_id) / image_id}{suffix} is not on disk (listed in {where})"
        if image_id in errors:
            return f"DICOM {dicom} could not be converted ({errors[image_id]}; see {png_dir / 'errors.csv'})"
    return f"no PNG at {png}"


def attach_pngs(df: pd.DataFrame, png_dir: Path, relative_to: Path | None, dataset: str,
                patient_column: str = "patient_id", *, images_dir: Path | None = None, dicom_suffix: str = ".dcm",
                listed_in: Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Add ``png_path``; rows whose PNG is missing go to the dropped table (with the reason).

    ``images_dir`` is the dataset's DICOM folder (``<patient_id>/<image_id><dicom_suffix>``; any of
    :data:`DICOM_SUFFIXES` is found) and ``listed_in`` the input CSV
    (``df``'s index = its data rows). When ``png_dir`` is a kit PNG folder (it has ``manifest.csv`` or
    ``png_folder.json``), the reason names the DICOM that is missing on disk (``DICOM missing: …``, also printed as a
    ``missing input:`` line) or that failed to convert (from ``errors.csv``), rather than the PNG it would have made.
    """
    paths = [png_path_for(png_dir, p, i) for p, i in zip(df[patient_column], df["image_id"], strict=True)]
    exists = np.array([p.is_file() for p in paths], dtype=bool)
    base = _relpath(png_dir, relative_to)  # resolve once; every PNG lies below png_dir
    df = df.copy()
    df["png_path"] = [f"{base}/{p.relative_to(png_dir).as_posix()}" if relative_to is not None and not
                      Path(base).is_absolute() else str(p) for p in paths]
    kit_folder = (png_dir / "manifest.csv").is_file() or (png_dir / "png_folder.json").is_file()
    images_dir = images_dir if kit_folder else None  # a PNG release was not made from these DICOMs
    errors = _conversion_errors(png_dir) if kit_folder and not exists.all() else {}
    missing = np.flatnonzero(~exists)
    reasons = [_missing_png_reason(paths[k], png_dir, str(df[patient_column].iloc[k]), str(df["image_id"].iloc[k]),
                                   int(df.index[k]), images_dir, dicom_suffix, listed_in, errors) for k in missing]
    dropped = pd.DataFrame({"dataset": dataset, "image_id": df["image_id"].iloc[missing].to_numpy(),
                            "reason": reasons}, columns=["dataset", "image_id", "reason"])
    if len(missing):
        log.warning("%s: %d of %d image(s) have no PNG under %s and are left out (first reason: %s)", dataset,
                    len(missing), len(df), png_dir, reasons[0])
        warn_missing_inputs(dropped)
    return df.loc[exists].reset_index(drop=True), dropped


def missing_inputs(dropped: pd.DataFrame) -> list[str]:
    """The inputs a dropped table says are missing on disk (``DICOM missing: …`` reasons, without the prefix)."""
    if dropped is None or not len(dropped) or "reason" not in dropped.columns:
        return []
    reasons = dropped["reason"].dropna().astype(str)
    return [r[len(DICOM_MISSING):].strip() for r in reasons if r.startswith(DICOM_MISSING)]


def warn_missing_inputs(dropped: pd.DataFrame, more: str = "the dropped table") -> int:
    """Print one ``missing input: …`` line on stderr per input missing on disk (at most :data:`MISSING_SHOWN`, then a
    count naming ``more``, where the full list is); returns how many are missing."""
    import sys

    found = missing_inputs(dropped)
    for line in found[:MISSING_SHOWN]:
        print(f"{MISSING_INPUT} {line}; its image is left out of the tables", file=sys.stderr)
    if len(found) > MISSING_SHOWN:
        print(f"{MISSING_INPUT} … and {len(found) - MISSING_SHOWN} more (every one in {more})", file=sys.stderr)
    return len(found)


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
        """The report-text settings of these tables (for :func:`~mammoclip_kit.data.builders.build_reports`)."""
        from mammoclip_kit.data.builders import ReportTextConfig

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
        from mammoclip_kit.data.batch import ensure_pngs

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

    PNGs come from :func:`mammoclip_kit.data.batch.ensure_pngs` (or an author PNG release, see the module
    docstring). Each dataset's table group is an artefact (:func:`mammoclip_kit.artifacts.ensure`) recorded in
    ``tables/<dataset>.params.json``: it is rebuilt when its inputs (CSV and PNG manifest mtimes and sizes), the
    ``tables`` settings, the seed or the kit's table version changed, when one of its tables is missing, or when
    ``ctx.retrain`` is set. Left-out images are listed in ``tables/dropped.csv``; an image whose DICOM is missing on
    disk is also printed as a ``missing input:`` line (on every call, also when the tables are reused). A data root
    that holds the input CSVs of none of ``datasets`` is an error naming the root and the files expected, unless their
    tables are already built (then those are returned, with a note naming the root and where they came from).
    """
    config = TablesConfig.from_context(ctx)
    tables_dir = Path(ctx.tables_dir)
    ctx.require_data(complete=False)  # builds a missing embedded cohort; a user root must exist
    already_built = _require_inputs(ctx, datasets or tuple(_INPUTS))
    if already_built is not None:
        return already_built
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
            _rewarn_missing(tables_dir / "dropped.csv", dataset)  # still missing: say so on every run
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


def _require_inputs(ctx: RunContext, datasets: Sequence[str]) -> dict[str, Path] | None:
    """Check that ``data_root`` holds the input CSVs of at least one of ``datasets`` (returns None).

    When it holds none (e.g. a wrong data root): the tables of ``datasets`` already built in ``ctx.tables_dir`` are
    returned with a note naming the root and where they came from, and without any, a ``FileNotFoundError`` names the
    root, the files expected and what the root holds instead — before any PNG or table work.
    """
    unknown = [d for d in datasets if d not in _INPUTS]
    if unknown:
        raise ValueError(f"unknown dataset(s) {', '.join(map(str, unknown))}: expected some of {', '.join(_INPUTS)}")
    root = Path(ctx.data_root)
    if any(all((root / f).is_file() for f in _INPUTS[d]) for d in datasets):
        return None
    if not root.is_dir():
        raise FileNotFoundError(f"data_root {root} does not exist: point data_root at a folder holding vindr/, "
                                "rsna/ and/or reports/ (see README 'Real data')")
    expected = "; ".join(" + ".join(_INPUTS[d]) for d in datasets)
    tables_dir = Path(ctx.tables_dir)
    built = {name: tables_dir / f"{name}.csv" for d in datasets for name in _OUTPUTS[d]
             if (tables_dir / f"{name}.csv").is_file()}
    if built:
        sources = sorted({str(Path(entry[0]).parent.parent) for d in datasets
                          for entry in _recorded_inputs(tables_dir / f"{d}.params.json")})
        print(f"note: data_root {root} holds none of the input tables ({expected}); using the tables already built "
              f"in {tables_dir}" + (f" from {', '.join(sources)}" if sources else ""))
        return built
    found = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())[:8]
    raise FileNotFoundError(f"data_root {root}: no input tables to build from — expected {expected} (at least one "
                            f"dataset); the folder holds {', '.join(found) if found else 'nothing'}")


def _recorded_inputs(record: Path) -> list[list[Any]]:
    """The input files a table group's ``<dataset>.params.json`` records ([] when unreadable or absent)."""
    try:
        return list(json.loads(record.read_text())["params"]["inputs"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _rewarn_missing(dropped_csv: Path, dataset: str) -> None:
    """Repeat the ``missing input:`` lines of a reused dataset (the tables were built without those images)."""
    if dropped_csv.is_file():
        dropped = pd.read_csv(dropped_csv, dtype=str)
        warn_missing_inputs(dropped[dropped["dataset"] == dataset], more=str(dropped_csv))


def _build_group(ctx: RunContext, dataset: str, png_dir: Path, config: TablesConfig,
                 outputs: Mapping[str, Path]) -> pd.DataFrame:
    """Build and write the tables of one dataset; returns its left-out images."""
    from mammoclip_kit.data.builders import build_reports, build_rsna, build_vindr

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

    from mammoclip_kit.data.builders import ReportTextConfig, build_reports, build_rsna, build_vindr

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
