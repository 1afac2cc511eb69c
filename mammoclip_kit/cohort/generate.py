"""The embedded teaching cohort: seeded synthetic screening mammograms and reports in the real datasets' formats.

Students have no credentialed data and no GPU, so the kit generates its own cohort, deterministic from a seed, and
writes it exactly like the real data so that the same ``data_prep`` tools and notebooks run on both::

    <root>/vindr/images/<study_id>/<image_id>.dicom, breast-level_annotations.csv, finding_annotations.csv
    <root>/rsna/train_images/<patient_id>/<image_id>.dcm, train.csv
    <root>/reports/images/<patient_id>/<image_id>.dcm, reports.csv      (one row per image,
    docs/reference-notes.md §9.4 raw table) <root>/truth/images.csv, lesions.csv,
    masks/<dataset>/<image_id>.png (lesion labels), cohort.json (written last)

The three parts have disjoint patients, like the real, separate datasets. Each patient has a four-view exam (L/R × CC/MLO).

Presets (``PRESETS``; ``--n-patients``, ``--image-scale``, ``--prevalence``, ``--vendors`` override them):

- ``smoke``: 4 patients per part (48 images) at ``image_scale`` 0.07 (about 290 × 230 px): seconds, for CI.
- ``classroom``: 400 report, 500 VinDr and 150 RSNA patients (4,200 images) at ``image_scale`` 0.2 — the vendors'
  real matrices shrunk five-fold (pixels of 0.35–0.5 mm; a Hologic image is 820 × 666 px). Why this size: the classroom
  profile crops the breast and resizes to 320 × 192, so a raw image only needs to be about 2–3× that size to keep masses
  (8–30 mm = 16–85 raw px) and calcification specks (1–3 raw px, a faint bright patch after resizing) visible, and 2,800
  images of this size cost about 60 ms of CPU each (measured: 165 CPU-seconds for the whole preset), i.e. about 1.5
  minutes with two workers on an idle 2-core laptop; the cohort takes about 1.5 GB on disk (most files are
  uncompressed 12–16-bit DICOM, as in VinDr). The counts give the contrastive pretraining about 600 report breasts
  and the zero-shot / probe evaluations about 500 VinDr breasts.

Prevalence: real screening data are far rarer in findings (VinDr: about 5 % of images with a mass, 2 % with suspicious
calcification; RSNA: 2 % cancer). The cohort presets use per-breast quotas of about 28 % mass, 18 % suspicious
calcification, 6 % architectural distortion, 6 % focal asymmetry and 20 % benign incidental findings, so that a few
hundred breasts hold enough positives to learn from and to evaluate with tight confidence intervals. Density is drawn
15/35/35/15 % (A/B/C/D) instead of the real 10/40/40/10 so that every class has examples. Quotas are exact per part
(largest remainder), placed on random breasts with the master seed.

Determinism: every patient is rendered from its own seed, derived from (master seed, part, patient index), so the
output is byte-identical for a seed whatever the number of workers; a different seed gives a different cohort.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mammoclip_kit.artifacts import Artifact
from mammoclip_kit.cohort import dicom_writer as dw
from mammoclip_kit.cohort.config import (
    GENERATOR_VERSION,
    PART_VENDORS,
    PARTS,
    PRESETS,
    REPORT_COLUMNS,
    RSNA_COLUMNS,
    TRUTH_IMAGE_COLUMNS,
    VINDR_BREAST_COLUMNS,
    VINDR_FINDING_COLUMNS,
    CohortConfig,
    CohortSectionConfig,
    resolve_config,
)
from mammoclip_kit.cohort.patient import TRUTH_LESION_COLUMNS, render_patient
from mammoclip_kit.cohort.patient import hex_id as _hex_id
from mammoclip_kit.errors import cli_errors

if TYPE_CHECKING:
    from mammoclip_kit.context import RunContext

#: The completion record of a cohort folder (written last; see :func:`cohort_artifact`).
RECORD_NAME = "cohort.json"

# --------------------------------------------------------------------------------------------------- planning

def _quota(weights: dict[str, float], n: int, rng: np.random.Generator) -> list[str]:
    """Exactly apportioned labels (largest remainder), shuffled: the realised mix matches the weights."""
    keys = list(weights)
    w = np.array([max(0.0, float(weights[k])) for k in keys])
    if n == 0 or w.sum() == 0:
        return [keys[0]] * n if keys else []
    exact = w / w.sum() * n
    counts = np.floor(exact).astype(int)
    for idx in np.argsort(-(exact - counts), kind="stable")[: n - counts.sum()]:
        counts[idx] += 1
    labels = [k for k, c in zip(keys, counts, strict=True) for _ in range(c)]
    return [labels[i] for i in rng.permutation(n)]


def plan_cohort(cfg: CohortConfig, seed: int) -> list[dict[str, Any]]:
    """One task per patient (ids, density, vendor, findings per breast, seeds), deterministic from ``seed``."""
    tasks: list[dict[str, Any]] = []
    for part_index, part in enumerate(PARTS):
        n = int(cfg.n_patients.get(part, 0))
        if n == 0:
            continue
        rng = np.random.default_rng([seed, part_index, 999])
        densities = _quota(cfg.density_distribution, n, rng)
        weights = {k: v for k, v in PART_VENDORS[part].items() if k in cfg.vendors} or \
            {k: 1.0 for k in cfg.vendors}
        vendors = _quota(weights, n, rng)
        findings: list[dict[str, list[str]]] = [{"L": [], "R": []} for _ in range(n)]
        for name, p in cfg.prevalence.items():
            k = int(round(p * 2 * n))
            for breast in rng.permutation(2 * n)[:k]:
                findings[breast // 2]["LR"[breast % 2]].append(name)
        n_test = int(round(cfg.vindr_test_fraction * n))
        test = set(rng.permutation(n)[:n_test].tolist())
        rsna_ids = 10000 + rng.choice(55000, size=n, replace=False)
        rsna_image_ids = 100_000_000 + rng.choice(2_000_000_000, size=4 * n, replace=False)
        for i in range(n):
            if part == "vindr":
                patient_id = _hex_id("vindr-study", seed, i)
                image_ids = [_hex_id("vindr-image", seed, i, v) for v in range(4)]
            elif part == "rsna":
                patient_id = str(int(rsna_ids[i]))
                image_ids = [str(int(x)) for x in rsna_image_ids[4 * i:4 * i + 4]]
            else:
                patient_id = f"RP{i + 1:05d}"
                image_ids = [_hex_id("report-image", seed, i, v)[:20] for v in range(4)]
            tasks.append({
                "part": part, "index": i, "patient_id": patient_id, "image_ids": image_ids,
                "density": densities[i], "vendor": vendors[i], "findings": findings[i],
                "split": "test" if i in test else "training", "fold": i % 4,
                "seed": int(np.random.SeedSequence([seed, part_index, i]).generate_state(1)[0]),
                "name_tag": f"{part[0].upper()}{i + 1:04d}",
            })
    return tasks


# --------------------------------------------------------------------------------------------------- driver

def _render_star(args: tuple) -> dict[str, list[dict[str, Any]]]:
    return render_patient(*args)


def make_cohort(out_dir: str | Path, preset: str = "smoke", seed: int = 0, workers: int = 1, progress: bool = True,
                **overrides: Any) -> dict[str, Any]:
    """Generate a cohort into ``out_dir`` (replaced if it holds a previous cohort); returns a summary dict.

    ``overrides`` are :class:`CohortConfig` fields (``n_patients``, ``image_scale``, ``prevalence``, ``vendors``, …).
    ``cohort.json`` (:func:`cohort_artifact`'s record: parameters + summary) is written last, as the completion marker
    :func:`ensure_cohort` checks.
    """
    import pandas as pd

    from mammoclip_kit.env import progress_bar as tqdm

    cfg = resolve_config(preset, **overrides)
    final_dir = Path(out_dir)
    if final_dir.exists():
        _check_cohort_folder(final_dir)
    # Build in a private sibling folder and move it into place at the end: a reader never sees half a cohort, and two
    # builders never write into the same files.
    out_dir = final_dir.parent / f".{final_dir.name}.partial-{os.getpid()}"
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    _write_marker(out_dir)
    started, cpu_started = time.perf_counter(), _cpu_seconds()
    tasks = plan_cohort(cfg, seed)
    args = [(task, cfg, str(out_dir)) for task in tasks]
    workers = max(1, int(workers))
    results: list[dict[str, list[dict[str, Any]]]] = []
    bar = tqdm(total=len(tasks), desc=f"cohort {cfg.preset}", unit="patient", disable=not progress)
    if workers == 1 or len(tasks) < 2:
        for item in args:
            results.append(_render_star(item))
            bar.update(1)
    else:
        import multiprocessing as mp

        method = "fork" if sys.platform.startswith("linux") else None
        with mp.get_context(method).Pool(workers) as pool:
            for result in pool.imap(_render_star, args, chunksize=1):
                results.append(result)
                bar.update(1)
    bar.close()

    tables = {key: [row for result in results for row in result[key]] for key in results[0]} if results else {}
    written = []
    if tables.get("vindr_breast"):
        (out_dir / "vindr").mkdir(exist_ok=True)
        pd.DataFrame(tables["vindr_breast"], columns=VINDR_BREAST_COLUMNS).to_csv(
            out_dir / "vindr" / "breast-level_annotations.csv", index=False)
        pd.DataFrame(tables["vindr_finding"], columns=VINDR_FINDING_COLUMNS).to_csv(
            out_dir / "vindr" / "finding_annotations.csv", index=False)
        written += ["vindr/breast-level_annotations.csv", "vindr/finding_annotations.csv"]
    if tables.get("rsna"):
        pd.DataFrame(tables["rsna"], columns=RSNA_COLUMNS).to_csv(out_dir / "rsna" / "train.csv", index=False)
        written.append("rsna/train.csv")
    if tables.get("reports"):
        pd.DataFrame(tables["reports"], columns=REPORT_COLUMNS).to_csv(out_dir / "reports" / "reports.csv",
                                                                       index=False)
        written.append("reports/reports.csv")
    (out_dir / "truth").mkdir(exist_ok=True)
    images = pd.DataFrame(tables.get("images", []), columns=TRUTH_IMAGE_COLUMNS)
    lesions = pd.DataFrame(tables.get("lesions", []), columns=TRUTH_LESION_COLUMNS)
    images.to_csv(out_dir / "truth" / "images.csv", index=False)
    lesions.to_csv(out_dir / "truth" / "lesions.csv", index=False)
    elapsed = time.perf_counter() - started
    summary = summarize(images, lesions)
    summary.update({"seconds": round(elapsed, 2), "cpu_seconds": round(_cpu_seconds() - cpu_started, 2),
                    "workers": workers,
                    "images_per_second": round(len(images) / elapsed, 2) if elapsed > 0 else None,
                    "disk_mb": round(_disk_bytes(out_dir) / 1e6, 1), "files": written})
    cohort_artifact(out_dir, cfg, seed).commit(summary=summary)
    if final_dir.exists():
        _clear_cohort(final_dir)
        final_dir.rmdir()
    out_dir.rename(final_dir)
    return summary


def summarize(images, lesions) -> dict[str, Any]:
    """Cohort counts: patients and images per part, per-breast prevalence per finding, density mix, image sizes."""
    out: dict[str, Any] = {"patients": {}, "images": {}, "prevalence": {}, "density": {}, "image_sizes": {},
                           "vendors": {}, "malignant_breasts": {}}
    for part, group in images.groupby("dataset", sort=False):
        out["patients"][part] = int(group["patient_id"].nunique())
        out["images"][part] = int(len(group))
        breasts = group.drop_duplicates(["patient_id", "laterality"])
        out["density"][part] = {k: int(v) for k, v in breasts["density"].value_counts().sort_index().items()}
        out["malignant_breasts"][part] = int(breasts["malignant"].sum())
        out["vendors"][part] = {k: int(v) for k, v in group["vendor"].value_counts().sort_index().items()}
        sizes = group.groupby(["height", "width"]).size()
        out["image_sizes"][part] = {f"{h}x{w}": int(n) for (h, w), n in sizes.items()}
        part_lesions = lesions[lesions["dataset"] == part]
        n_breasts = len(breasts)
        out["prevalence"][part] = {
            finding: round(sub.drop_duplicates(["patient_id", "laterality"]).shape[0] / max(n_breasts, 1), 4)
            for finding, sub in part_lesions.groupby("finding")}
    out["total_images"] = int(len(images))
    out["total_patients"] = int(sum(out["patients"].values()))
    return out


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the worker pool), in seconds."""
    try:
        import resource
    except ImportError:  # Windows
        return time.process_time()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _disk_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


#: The file the generator writes first into every cohort it builds: only folders holding it are ever replaced.
MARKER_NAME = ".mammoclip-cohort"
_MARKER_TEXT = "written by mammoclip_kit.cohort.generate; this folder is a generated teaching cohort\n"
_COHORT_ENTRIES = {"vindr", "rsna", "reports", "truth", "cohort.json", "cohort.json.tmp", MARKER_NAME}


def _write_marker(out_dir: Path) -> None:
    (out_dir / MARKER_NAME).write_text(_MARKER_TEXT)


def is_generated_cohort(folder: str | Path) -> bool:
    """True when ``folder`` holds the marker the generator writes into every cohort it builds."""
    marker = Path(folder) / MARKER_NAME
    try:
        if marker.is_file() and marker.read_text() == _MARKER_TEXT:
            return True
        # A cohort finished before the marker existed: the generator's own cohort.json is the proof.
        record = json.loads((Path(folder) / "cohort.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and {"generator_version", "seed", "config", "summary"} <= set(record)


def _check_cohort_folder(out_dir: Path) -> None:
    """Refuse to replace a folder unless it is empty or a cohort this generator wrote (its marker file is there).

    The folder names alone prove nothing: ``vindr/``, ``rsna/`` and ``reports/`` are also the real-data layout.
    """
    if not out_dir.is_dir():
        raise NotADirectoryError(f"{out_dir}: exists and is not a folder; choose a new folder for the cohort")
    entries = {p.name for p in out_dir.iterdir()}
    if not entries:
        return
    if not is_generated_cohort(out_dir):
        raise FileExistsError(f"{out_dir}: not empty and not a cohort folder the kit generated (no {MARKER_NAME} marker; "
                              f"found "
                              f"{sorted(entries)[:5]}); refusing to replace it — choose an empty or new folder")
    if entries - _COHORT_ENTRIES:
        raise FileExistsError(f"{out_dir}: a generated cohort that also holds other files "
                              f"{sorted(entries - _COHORT_ENTRIES)[:5]}; move them out or choose another folder")


def _clear_cohort(out_dir: Path) -> None:
    """Remove a previous (possibly partial) cohort; refuses folders that do not look like one."""
    _check_cohort_folder(out_dir)
    for name in {p.name for p in out_dir.iterdir()}:
        path = out_dir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def cohort_artifact(root: str | Path, cfg: CohortConfig, seed: int) -> Artifact:
    """The cohort at ``root`` as an :class:`~mammoclip_kit.artifacts.Artifact` whose parameters are the generator
    version, the seed and the resolved :class:`CohortConfig`; its record is ``root/cohort.json``."""
    params = {"generator_version": GENERATOR_VERSION, "seed": int(seed), "config": cfg.to_json()}
    return Artifact(root, params, record=Path(root) / RECORD_NAME)


def cohort_record(root: str | Path) -> dict[str, Any] | None:
    """The parsed ``cohort.json`` of a finished cohort (``params``, ``complete``, ``summary``), or None."""
    path = Path(root) / RECORD_NAME
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def cohort_metrics(root: str | Path) -> dict[str, Any]:
    """The numbers a notebook reports about a cohort: counts, prevalence, density mix, sizes, generation time."""
    record = cohort_record(root)
    if record is None:
        raise FileNotFoundError(f"{root}: no cohort.json (not a finished cohort; run ensure_cohort or make_cohort)")
    summary, params = record["summary"], record["params"]
    keys = ("patients", "images", "total_patients", "total_images", "prevalence", "density", "image_sizes",
            "vendors", "malignant_breasts", "disk_mb")
    out = {key: summary[key] for key in keys if key in summary}
    out.update({"preset": params["config"]["preset"], "cohort_seed": params["seed"],
                "image_scale": params["config"]["image_scale"], "generation_seconds": summary.get("seconds"),
                "generation_workers": summary.get("workers")})
    return out


def ensure_cohort(ctx: RunContext) -> Path:
    """Return the data root of ``ctx``; build the embedded cohort there first if it is missing or outdated.

    The ``cohort`` section of the profile (:class:`~mammoclip_kit.cohort.config.CohortSectionConfig`: ``preset``,
    ``seed`` — a fixed cohort seed, default 0, independent of the notebook seed —, ``workers``, which the
    ``num_workers`` parameter overrides, and optional overrides ``n_patients``, ``image_scale``, ``prevalence``,
    ``vendors``, ``conspicuity``) decides the cohort. It is rebuilt when ``cohort.json`` is missing or records
    different parameters.
    """
    root = Path(ctx.data_root)
    if not ctx.is_cohort:
        raise ValueError(f"ensure_cohort: {root} is user data, not the embedded cohort; use ctx.require_data()")
    settings = CohortSectionConfig.from_context(ctx)
    return ensure_cohort_at(root, preset=settings.preset or ctx.profile, seed=settings.seed, workers=settings.workers,
                            **settings.overrides())


def ensure_cohort_at(root: str | Path, preset: str = "smoke", seed: int = 0, workers: int = 1,
                     **overrides: Any) -> Path:
    """Build a cohort at ``root`` unless ``cohort.json`` there records exactly these parameters; returns ``root``.

    Safe to call from several processes at once: one builds (under a lock next to ``root``), the others wait and reuse.
    """
    root = Path(root)
    artifact = cohort_artifact(root, resolve_config(preset, **overrides), seed)
    if artifact.is_current():
        return root
    # One builder at a time (notebooks, the runner and CLIs may call this concurrently): the others wait, then reuse.
    with _build_lock(root):
        if artifact.is_current():
            return root
        _remove_stale_partials(root)
        print(f"building the {preset} teaching cohort (seed {seed}, {workers} worker(s)) ...")
        summary = make_cohort(root, preset=preset, seed=seed, workers=workers, **overrides)
    print(f"cohort ready: {summary['total_patients']} patients, {summary['total_images']} images in "
          f"{summary['seconds']:.1f} s")
    return root


def _remove_stale_partials(root: Path) -> None:
    """Delete ``.<name>.partial-<pid>`` folders left by builders that no longer run (a crash or Ctrl-C)."""
    for partial in root.parent.glob(f".{root.name}.partial-*"):
        try:
            pid = int(partial.name.rsplit("-", 1)[1])
            os.kill(pid, 0)                   # raises if no such process
        except ProcessLookupError:
            shutil.rmtree(partial, ignore_errors=True)
        except (ValueError, PermissionError, OSError):
            continue


@contextlib.contextmanager
def _build_lock(root: Path):
    """An exclusive advisory lock on ``.<name>.lock`` next to ``root`` (no-op where ``fcntl`` is missing)."""
    root.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; concurrent builds remain safe but duplicate work
        yield
        return
    with open(root.parent / f".{root.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------------- CLI + bench

def build_parser(prog: str = "python -m data_prep.make_cohort") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Generate the seeded synthetic teaching cohort "
                                     "(VinDr, RSNA and report parts + truth) as DICOM files and CSVs.")
    parser.add_argument("--preset", default="smoke", choices=sorted(PRESETS))
    parser.add_argument("--out", required=True, help="output folder (replaced if it holds a previous cohort)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-patients", default=None,
                        help="patients per part: one number for every part, or vindr=250,rsna=150,reports=300")
    parser.add_argument("--image-scale", type=float, default=None,
                        help="fraction of each vendor's native matrix (0.2 = five times fewer pixels per side)")
    parser.add_argument("--prevalence", default=None,
                        help="per-breast finding prevalence: a factor (0.5) or mass=0.3,calcification=0.2,"
                             "distortion=0.05,asymmetry=0.05,benign=0.2")
    parser.add_argument("--vendors", default=None, help=f"comma-separated subset of {','.join(dw.VENDORS)}")
    parser.add_argument("--conspicuity", type=float, default=None,
                        help="extra brightness of masses and distortions over glandular tissue (preset: 0.12)")
    parser.add_argument("--calcification-scale", type=float, default=None,
                        help="size multiplier of suspicious calcification specks (1 = realistic 0.1-1 mm)")
    parser.add_argument("--calcification-contrast", type=float, default=None,
                        help="brightness multiplier of suspicious calcification specks (1 = realistic)")
    parser.add_argument("--calcification-count", type=float, default=None,
                        help="number multiplier of suspicious calcification specks (1 = 10-30 per cluster)")
    parser.add_argument("--calcification-extent", type=float, default=None,
                        help="extent multiplier of suspicious calcification clusters (1 = 5-15 mm)")
    parser.add_argument("--no-compress", action="store_true", help="store every file uncompressed")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def parse_n_patients(value: str | None) -> int | dict[str, int] | None:
    try:
        return _parse_n_patients(value)
    except ValueError:
        raise ValueError(f"--n-patients {value!r}: expected a number (4) or part=number pairs "
                         "(vindr=250,rsna=150,reports=300)") from None


def _parse_n_patients(value: str | None) -> int | dict[str, int] | None:
    if value is None:
        return None
    if "=" not in value:
        return int(value)
    out = {}
    for item in value.split(","):
        key, number = item.split("=", 1)
        out[key.strip()] = int(number)
    return out


@cli_errors
def main(argv: list[str] | None = None) -> dict[str, Any]:
    """CLI entry: generate a cohort and print its summary."""
    args = build_parser().parse_args(argv)
    summary = make_cohort(args.out, preset=args.preset, seed=args.seed, workers=args.workers,
                          progress=not args.quiet, n_patients=parse_n_patients(args.n_patients),
                          image_scale=args.image_scale, prevalence=args.prevalence, vendors=args.vendors,
                          conspicuity=args.conspicuity, calcification_scale=args.calcification_scale,
                          calcification_contrast=args.calcification_contrast,
                          calcification_count=args.calcification_count,
                          calcification_extent=args.calcification_extent,
                          compress=False if args.no_compress else None)
    print(json.dumps(summary, indent=2))
    return summary


def benchmark(argv: list[str] | None = None) -> float:
    """``python -m mammoclip_kit.bench cohort [--preset smoke] [--workers 2]``: prints images/s of the generator."""
    import tempfile

    parser = argparse.ArgumentParser(prog="python -m mammoclip_kit.bench cohort")
    parser.add_argument("--preset", default="smoke", choices=sorted(PRESETS))
    parser.add_argument("--n-patients", default=None)
    parser.add_argument("--image-scale", type=float, default=None)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        summary = make_cohort(Path(tmp) / "cohort", preset=args.preset, workers=args.workers, progress=False,
                              n_patients=parse_n_patients(args.n_patients), image_scale=args.image_scale)
    rate = summary["total_images"] / summary["seconds"]
    per_core = summary["total_images"] / max(summary["cpu_seconds"], 1e-6)
    print(f"cohort {args.preset}: {summary['total_images']} images in {summary['seconds']:.2f} s with "
          f"{args.workers} worker(s) = {rate:.1f} images/s wall; {summary['cpu_seconds']:.1f} CPU-s = "
          f"{per_core:.1f} images/s per busy core")
    return rate
