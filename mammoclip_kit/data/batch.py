"""Folders of DICOMs → folders of PNGs: the resumable batch, its manifest and error report, and ``ensure_pngs``.

:func:`preprocess_many` converts many DICOMs (one image at a time with :mod:`mammoclip_kit.data.preprocess`) into
``out_dir/<patient_id>/<image_id>.png`` in one or more processes, writes ``manifest.csv`` (one row per PNG, the
columns of :data:`~mammoclip_kit.data.preprocess.MANIFEST_COLUMNS`) and ``errors.csv`` (one row per bad file; a bad
file never stops the batch), resumes an interrupted or repeated run, and binds the folder to one (mode, size, bits)
setting (``png_folder.json``). :func:`ensure_pngs` is the notebooks' "build if missing" entry point for every dataset
under a data root; :func:`find_sources` and :func:`read_source_list` list the DICOMs of a folder or a CSV.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2

from mammoclip_kit import env
from mammoclip_kit.artifacts import Artifact
from mammoclip_kit.data.dicom import DicomError
from mammoclip_kit.data.preprocess import (
    IMAGE_SOURCES,
    MANIFEST_COLUMNS,
    PreprocessConfig,
    PreprocessError,
    convert_dicom,
    source_ids,
)

if TYPE_CHECKING:  # pandas is imported where tables are built, so that worker processes start fast
    import pandas as pd

    from mammoclip_kit.context import RunContext

__all__ = [
    "ERROR_COLUMNS",
    "FOLDER_RECORD",
    "BatchResult",
    "ensure_pngs",
    "find_sources",
    "folder_setting",
    "preprocess_many",
    "read_source_list",
    "recorded_folder_setting",
]

#: The record of the (mode, size, bits) a PNG folder belongs to, written by :func:`preprocess_many`.
FOLDER_RECORD = "png_folder.json"
ERROR_COLUMNS: tuple[str, ...] = ("source", "patient_id", "image_id", "error", "message")

_JOURNAL = ".manifest.partial.jsonl"


@dataclass
class BatchResult:
    """What :func:`preprocess_many` did."""

    out_dir: Path
    converted: int          # PNGs written in this run
    skipped: int            # already done with the same settings (resume)
    failed: int             # files listed in errors
    manifest: pd.DataFrame  # every image in out_dir (this run and earlier runs)
    errors: pd.DataFrame    # this run's failures: source, patient_id, image_id, error, message
    seconds: float

    @property
    def burned_in(self) -> int:
        """Images whose header says ``BurnedInAnnotation = YES`` (text burned into the pixels; column
        ``burned_in_annotation`` of the manifest). Reported by :meth:`summary`; ``skip_burned_in`` leaves them out."""
        if "burned_in_annotation" not in self.manifest.columns:
            return 0
        return int((self.manifest["burned_in_annotation"].astype(str).str.upper() == "YES").sum())

    @property
    def images_per_s(self) -> float:
        """PNGs written per second of wall time (NaN when nothing was converted)."""
        return self.converted / self.seconds if self.converted and self.seconds > 0 else float("nan")

    def summary(self) -> str:
        rate = f", {self.images_per_s:.1f} images/s" if self.converted else ""
        burned = f"; {self.burned_in} flagged BurnedInAnnotation = YES" if self.burned_in else ""
        return (f"{len(self.manifest)} PNGs — converted {self.converted}, skipped {self.skipped}, "
                f"failed {self.failed} ({self.seconds:.1f} s{rate}){burned}")


def find_sources(folder: str | os.PathLike, patterns: Sequence[str] = ("*.dcm", "*.dicom", "*.DCM")) -> list[Path]:
    """DICOM files one level below ``folder`` (``<patient>/<image>.dcm``), or directly in it; sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    found: set[Path] = set()
    for pattern in patterns:
        found.update(folder.glob(f"*/{pattern}"))
        found.update(folder.glob(pattern))
    return sorted(p for p in found if p.is_file())


def read_source_list(csv_path: str | os.PathLike, column: str | None = None,
                     root: str | os.PathLike | None = None) -> list[Path]:
    """DICOM paths from a CSV column (``path``, ``source``, ``file`` or ``dicom``), relative paths under ``root``."""

    from mammoclip_kit.data.records import read_csv_checked

    csv_path = Path(csv_path)
    table = read_csv_checked(csv_path, "list of DICOM files", dtype=str)
    candidates = [column] if column else ["path", "source", "file", "dicom", "filename"]
    picked = next((c for c in candidates if c in table.columns), None)
    if picked is None:
        raise ValueError(f"{csv_path}: no column {' / '.join(candidates)} with the DICOM paths "
                         f"(columns are {', '.join(table.columns)})")
    base = Path(root) if root else csv_path.parent
    paths = []
    for i, value in enumerate(table[picked]):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{csv_path}: row {i + 2}, column {picked!r}: empty path")
        p = Path(value.strip())
        paths.append(p if p.is_absolute() else base / p)
    return paths


def _relative(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            pass
    return str(path)


def _same_source(row: Mapping[str, Any], src: Path) -> bool:
    """True when ``src`` still has the size and modification time recorded in its manifest ``row``."""
    try:
        stat = src.stat()
        return int(row["source_bytes"]) == stat.st_size and int(row["source_mtime_ns"]) == stat.st_mtime_ns
    except (KeyError, TypeError, ValueError, OSError):
        return False


def _job(args: tuple[str, str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """Worker body: convert one file; never raises (failures come back as an error record)."""
    src, dst, cfg_fields = args
    cfg = PreprocessConfig(**cfg_fields)
    try:
        return "ok", convert_dicom(Path(src), Path(dst), cfg)
    except (DicomError, PreprocessError, FileNotFoundError) as exc:
        reason = getattr(exc, "reason", None) or str(exc).removeprefix(f"{src}: ")
        return "error", {"error": type(exc).__name__, "message": reason}
    except Exception as exc:  # one bad file never stops the batch
        return "error", {"error": type(exc).__name__, "message": str(exc).replace(src, "<file>")[:500]}


def _worker_init() -> None:
    cv2.setNumThreads(1)


def _read_rows(out_dir: Path) -> dict[str, dict[str, Any]]:
    """Existing manifest rows keyed by output, including a journal left by an interrupted run."""
    import pandas as pd

    rows: dict[str, dict[str, Any]] = {}
    manifest = out_dir / "manifest.csv"
    if manifest.is_file():
        table = pd.read_csv(manifest, dtype={"image_id": str, "patient_id": str})
        for record in table.to_dict("records"):
            rows[str(record["output"])] = record
    journal = out_dir / _JOURNAL
    if journal.is_file():
        for line in journal.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut by the interruption
                continue
            rows[str(record["output"])] = record
    return rows


def _write_if_changed(path: Path, table: pd.DataFrame) -> bool:
    text = table.to_csv(index=False)
    if path.is_file() and path.read_text() == text:
        return False
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return True


def folder_setting(cfg: PreprocessConfig) -> dict[str, Any]:
    """The part of the settings a PNG folder is bound to: PNGs of two modes, sizes or depths never share a folder."""
    return {"mode": cfg.mode, "height": int(cfg.height), "width": int(cfg.width), "bits": int(cfg.bits)}


def _describe_setting(setting: Mapping[str, Any]) -> str:
    return f"mode {setting['mode']}, {setting['height']}×{setting['width']}, {setting['bits']}-bit"


def recorded_folder_setting(out_dir: Path) -> dict[str, Any] | None:
    """The (mode, size, bits) ``out_dir`` holds: its record, else inferred from an older manifest; None if new."""
    record = out_dir / FOLDER_RECORD
    if record.is_file():
        try:
            value = json.loads(record.read_text())
        except (OSError, ValueError):
            raise PreprocessError(f"{record}: unreadable folder record; move the folder aside and convert again") \
                from None
        return {k: value.get(k) for k in ("mode", "height", "width", "bits")}
    manifest = out_dir / "manifest.csv"
    if manifest.is_file() and manifest.stat().st_size:
        import pandas as pd

        try:
            table = pd.read_csv(manifest, usecols=["mode", "out_height", "out_width", "bits"])
        except (ValueError, pd.errors.ParserError):
            raise PreprocessError(f"{manifest}: not a kit PNG manifest; choose another output folder") from None
        settings = {(str(r.mode), int(r.out_height), int(r.out_width), int(r.bits)) for r in table.itertuples()}
        if len(settings) > 1:
            raise PreprocessError(f"{out_dir}: already mixes PNGs of {len(settings)} settings; convert into a new "
                                  "folder (or --no-resume to redo this one)")
        if settings:
            mode, height, width, bits = settings.pop()
            return {"mode": mode, "height": height, "width": width, "bits": bits}
    return None


def _claim_folder(out_dir: Path, cfg: PreprocessConfig, resume: bool) -> None:
    """Bind ``out_dir`` to ``cfg``'s (mode, size, bits) or refuse; ``resume=False`` redoes a folder of another setting
    (its old PNGs, listed in its manifest, are removed first so that none of them outlives its manifest row)."""
    wanted = folder_setting(cfg)
    recorded = recorded_folder_setting(out_dir)
    if recorded is None and not (out_dir / "manifest.csv").is_file() and next(out_dir.glob("*/*.png"), None):
        raise PreprocessError(f"{out_dir}: holds PNGs without a kit manifest.csv (another tool's or a PNG release); "
                              "convert into a new folder")
    if recorded is not None and recorded != wanted:
        if resume:
            raise PreprocessError(f"{out_dir}: holds PNGs made with {_describe_setting(recorded)}; this run asks for "
                                  f"{_describe_setting(wanted)} — use another --out, or --no-resume to convert "
                                  "everything again into this folder")
        for row in _read_rows(out_dir).values():
            (out_dir / str(row["output"])).unlink(missing_ok=True)
    if not (out_dir / FOLDER_RECORD).is_file() or recorded != wanted:  # a rerun with the same setting writes nothing
        from mammoclip_kit.artifacts import atomic_write_json

        atomic_write_json(out_dir / FOLDER_RECORD, wanted)


def preprocess_many(sources: Iterable[str | os.PathLike], out_dir: str | os.PathLike, *, mode: str, height: int,
                    width: int | None, bits: int = 8, workers: int = 1, resume: bool = True,
                    root: str | os.PathLike | None = None, progress: bool = True, skip_burned_in: bool = False,
                    **options: Any) -> BatchResult:
    """Convert many DICOMs to ``out_dir/<patient_id>/<image_id>.png`` and write ``manifest.csv`` + ``errors.csv``.

    Args:
        sources: DICOM paths; patient_id = the parent folder's name, image_id = the file stem.
        out_dir: output folder.
        mode, height, width, bits: see :class:`PreprocessConfig` (``options`` takes its other fields).
        workers: processes (1 = in this process).
        resume: skip images whose PNG exists and whose manifest row has the same settings; a second identical run
            writes nothing. ``False`` converts everything again and the manifest lists only this run's images.
        root: data root; manifest ``source`` paths are stored relative to it (``output`` is relative to ``out_dir``).
        progress: show a tqdm progress bar.
        skip_burned_in: leave out images whose header says ``BurnedInAnnotation = YES`` (text burned into the pixels
            may identify the patient); they become ``errors.csv`` rows. Without it they are converted, counted in a
            warning and flagged in the manifest's ``burned_in_annotation`` column.

    Bad files never stop the batch: each becomes one ``errors.csv`` row (file, error type, reason), and a PNG an earlier
    run made from a file that now fails is removed. The folder belongs to one (mode, size, bits) setting, recorded in
    ``png_folder.json``: a resume with another setting is refused (see :func:`_claim_folder`).
    """
    import pandas as pd

    from mammoclip_kit.env import progress_bar as tqdm

    start = time.perf_counter()
    cfg = PreprocessConfig(mode=mode, height=height, width=width, bits=bits, **options)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise PreprocessError(f"{out_dir}: exists and is a file; give a folder for the PNGs")
    out_dir.mkdir(parents=True, exist_ok=True)
    _claim_folder(out_dir, cfg, resume)
    root_path = Path(root) if root is not None else None
    existing = _read_rows(out_dir) if resume else {}

    jobs: list[tuple[str, str, dict[str, Any]]] = []
    job_meta: dict[str, tuple[str, str, str, str]] = {}   # src → (rel source, patient, image, rel output)
    kept: dict[str, dict[str, Any]] = {}
    errors: list[dict[str, Any]] = []
    claimed: dict[str, str] = {}
    skipped = 0
    for src in (Path(s) for s in sources):
        patient_id, image_id = source_ids(src)
        rel_out = f"{patient_id}/{image_id}.png"
        rel_src = _relative(src, root_path)
        if rel_out in claimed:
            errors.append({"source": rel_src, "patient_id": patient_id, "image_id": image_id, "error": "DuplicateOutput",
                           "message": f"output {rel_out} is already produced by {claimed[rel_out]}"})
            continue
        claimed[rel_out] = rel_src
        old = existing.get(rel_out)
        if (old is not None and str(old.get("settings")) == cfg.key and str(old.get("source")) == rel_src
                and _same_source(old, src) and (out_dir / rel_out).is_file()):
            kept[rel_out] = old
            skipped += 1
            continue
        jobs.append((str(src), str(out_dir / rel_out), asdict(cfg)))
        job_meta[str(src)] = (rel_src, patient_id, image_id, rel_out)

    new_rows: dict[str, dict[str, Any]] = {}
    if jobs:
        journal = open(out_dir / _JOURNAL, "a")  # noqa: SIM115 - kept open across the loop, closed below
        try:
            bar = tqdm(total=len(jobs), desc=f"DICOM → PNG ({cfg.mode})", unit="img", disable=not progress)
            results = _run_jobs(jobs, workers)
            for src, (status, record) in results:
                rel_src, patient_id, image_id, rel_out = job_meta[src]
                if status == "ok" and skip_burned_in and record.get("burned_in_annotation") == "YES":
                    (out_dir / rel_out).unlink(missing_ok=True)
                    status, record = "error", {"error": "BurnedInAnnotation",
                                               "message": "BurnedInAnnotation = YES (skipped: --skip-burned-in)"}
                if status == "ok":
                    record.update(source=rel_src, output=rel_out)
                    new_rows[rel_out] = record
                    journal.write(json.dumps(record) + "\n")
                    journal.flush()
                else:
                    # a PNG an earlier run made from this file must not outlive its (now dropped) manifest row
                    (out_dir / rel_out).unlink(missing_ok=True)
                    errors.append({"source": rel_src, "patient_id": patient_id, "image_id": image_id, **record})
                bar.update(1)
            bar.close()
        finally:
            journal.close()

    rows = {**({k: v for k, v in existing.items() if k not in claimed} if resume else {}), **kept, **new_rows}
    manifest = pd.DataFrame([rows[k] for k in sorted(rows)], columns=list(MANIFEST_COLUMNS))
    manifest = manifest.astype({"image_id": str, "patient_id": str})
    error_table = pd.DataFrame(errors, columns=list(ERROR_COLUMNS))
    _write_if_changed(out_dir / "manifest.csv", manifest)
    _write_if_changed(out_dir / "errors.csv", error_table)
    (out_dir / _JOURNAL).unlink(missing_ok=True)
    return BatchResult(out_dir, len(new_rows), skipped, len(errors), manifest, error_table,
                       time.perf_counter() - start)


def _run_jobs(jobs: list[tuple[str, str, dict[str, Any]]], workers: int):
    """Yield ``(src, (status, record))`` as jobs finish (in a process pool when ``workers > 1``)."""
    if workers <= 1 or len(jobs) == 1:
        for job in jobs:
            yield job[0], _job(job)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # "spawn" behaves the same on Linux, macOS and Windows and is safe after torch / OpenCV started threads.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context,
                             initializer=_worker_init) as pool:
        futures = {pool.submit(_job, job): job[0] for job in jobs}
        for future in as_completed(futures):
            yield futures[future], future.result()


# ----------------------------------------------------------------------------------------------------------------------
# Notebook entry point


def ensure_pngs(ctx: RunContext, datasets: Sequence[str] = ("vindr", "rsna", "reports")) -> dict[str, Path]:
    """Convert the DICOMs of every dataset folder present under ``ctx.data_root`` into ``ctx.png_dir(dataset)``.

    Uses :class:`PreprocessConfig` from the profile's ``preprocess`` section (mode, height, width, bits, workers; the
    ``num_workers`` parameter overrides workers). Each PNG folder is an :class:`~mammoclip_kit.artifacts.Artifact`
    whose record ``png_dir/settings.json`` holds the conversion settings and the last run's counts: with the same
    settings the batch resumes (finished images are skipped, new or changed DICOMs converted); with other settings or
    ``retrain=True`` everything is converted again. Prints one line per dataset and returns ``{dataset: png_dir}``.
    """
    ctx.require_data(complete=False)  # images are enough here; the table builders check the CSVs
    cfg = PreprocessConfig.from_context(ctx)
    data_root = Path(ctx.data_root)
    dirs: dict[str, Path] = {}
    for name in datasets:
        if name not in IMAGE_SOURCES:
            raise ValueError(f"unknown dataset {name!r}: expected one of {', '.join(IMAGE_SOURCES)}")
        if not (data_root / name).is_dir():
            continue
        sources = sorted(data_root.glob(IMAGE_SOURCES[name]))
        png_dir = Path(ctx.png_dir(name))
        if not sources:
            print(f"{name:<8} no DICOMs found under {IMAGE_SOURCES[name]}; skipped")
            continue
        artifact = Artifact(png_dir, cfg.conversion, record=png_dir / "settings.json")
        same = artifact.is_current()
        result = preprocess_many(sources, png_dir, workers=cfg.workers, resume=same and not ctx.retrain,
                                 root=data_root, **cfg.conversion)
        if result.converted or result.failed or not same:
            artifact.commit(last_run={"converted": result.converted, "skipped": result.skipped,
                                      "failed": result.failed, "seconds": round(result.seconds, 3),
                                      "workers": cfg.workers, "images": len(result.manifest)})
        where = ctx.relpath(png_dir)
        if result.converted or result.failed or not same or env.verbose():  # silent when all PNGs were there
            print(f"{name:<8} {result.summary()} → {where}"
                  + (f"; see {where}/errors.csv" if result.failed else ""))
        dirs[name] = png_dir
    return dirs
