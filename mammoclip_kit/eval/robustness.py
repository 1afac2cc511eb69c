"""Robustness of frozen encoders under scanner-like shifts and a vendor hold-out (notebook 08; the paper's claim that
Mammo-CLIP's features degrade less under distribution shift than the baselines').

One linear probe per (encoder, task) is fitted on the *clean* training features (the data-efficiency cache of
:mod:`mammoclip_kit.eval.features` is reused) and scores:

* the clean test images (the reference condition);
* every test image re-encoded under each shift and severity of :mod:`mammoclip_kit.data.shifts` (each shifted test set
  is encoded once per encoder and cached, keyed by shift, severity, parameter and seed);
* a **group hold-out** (``vendor`` on the cohort, ``site_id`` / ``machine_id`` on RSNA): each test image is scored by
  the probe trained on the training images of every *other* group — leave-one-group-out, pooled over the groups, so
  the hold-out condition covers the whole test set like the shifts do.

Everything is decided by one **paired patient bootstrap**: the same resampled patients (shared by every encoder and
condition of a task) give the metric of each (encoder, condition), so the drop ``clean − shifted`` of one encoder and
the difference of drops between two encoders have honest, narrow intervals (the image-to-image noise is shared).
:func:`compare_drops` and :func:`claim_verdict` turn them into the answer to the paper's claim.

Public API: :class:`RobustnessConfig`, :class:`RobustnessRun`, :func:`run_robustness`, :func:`attach_groups`,
:func:`compare_drops`, :func:`claim_verdict`, :func:`lesion_contrast`, :func:`plot_drops`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mammoclip_kit.config import StageConfig
from mammoclip_kit.data.shifts import SHIFTS, ShiftTransform
from mammoclip_kit.eval.encoders import EncoderSpec
from mammoclip_kit.eval.features import TrunkMemo, cached_features, model_fingerprint
from mammoclip_kit.eval.linear_probe import LinearProbeConfig, fit_linear_probe
from mammoclip_kit.eval.metrics import percentile_interval, roc_auc
from mammoclip_kit.eval.tasks import (
    TaskSpec,
    breast_ids_of,
    get_task,
    split_for_task,
    subsample_by_patient,
    task_labels,
)

__all__ = ["CLEAN", "DROP_COLUMNS", "RobustnessConfig", "RobustnessRun", "attach_groups", "claim_verdict",
           "compare_drops", "lesion_contrast", "main", "plot_drops", "primary_metric", "run_robustness"]

#: The reference condition of every drop.
CLEAN = ("clean", 0)
#: Columns of :meth:`RobustnessRun.drops`.
DROP_COLUMNS = ("encoder", "task", "metric", "condition", "shift", "severity", "parameter", "clean_value",
                "clean_ci_low", "clean_ci_high", "value", "ci_low", "ci_high", "drop", "drop_ci_low", "drop_ci_high",
                "drop_half_width", "relative_drop", "n_train", "n_test", "n_patients")


@dataclass
class RobustnessConfig(StageConfig):
    """What to shift, how hard, and how to score it (a profile's ``robustness`` section; ``linear_probe:`` gives
    :attr:`probe`; ``encoders`` is read by notebook 08 and :func:`main`). The notebook parameters ``seed`` and
    ``batch_size`` override the profile."""

    SECTION = "robustness"
    PARAMETERS = {"seed": "seed", "batch_size": "batch_size"}
    IGNORED = frozenset({"encoders"})

    tasks: list[str] = field(default_factory=lambda: ["mass", "density"])
    shifts: dict[str, list[int]] = field(default_factory=lambda: {name: [spec.max_severity // 2 or 1]
                                                                   for name, spec in SHIFTS.items()})
    holdout: list[str] = field(default_factory=lambda: ["vendor"])  # group columns held out (leave-one-group-out)
    seed: int = 0  # seed of the noise shifts, the test subset and the bootstrap
    n_boot: int = 1000  # paired bootstrap replicates (shared by every encoder and condition of a task)
    max_test_patients: int | None = None  # stratified patient subset of the test split (None = all, the default)
    probe: LinearProbeConfig = field(default_factory=LinearProbeConfig)
    image_size: tuple[int, int] | None = None  # encoder input (H, W); None = each encoder's own input size
    batch_size: int = 16
    rsna_test_fold: int = 0
    rsna_train_folds: list[int] | None = None
    subject: str = "mammoclip"  # the encoder the paper's claim is about
    baselines: list[str] = field(default_factory=lambda: ["imagenet", "clip"])  # what it must degrade less than
    max_half_width: float = 0.05  # target CI half-width of every drop (the notebook reports the ones above it)
    # stages whose maps encoders with equal trunks share on a CPU (features.TrunkMemo; 0 = off): the classroom's
    # three towers share their frozen ImageNet stem + stages 1-3, about 3/4 of a forward pass
    shared_trunk: int = 3

    def __post_init__(self) -> None:
        if self.image_size is not None:
            self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        self.shifts = {str(k): [int(v) for v in levels] for k, levels in dict(self.shifts or {}).items()}
        unknown = [name for name in self.shifts if name not in SHIFTS]
        if unknown:
            raise ValueError(f"robustness shifts: unknown shift(s) {unknown} (known: {', '.join(SHIFTS)})")
        for name, levels in self.shifts.items():
            for severity in levels:
                SHIFTS[name].parameter(severity)  # names the shift and the bad severity
        self.holdout = [str(c) for c in (self.holdout or [])]
        if self.n_boot < 1:
            raise ValueError(f"robustness n_boot must be at least 1, got {self.n_boot}")
        if self.shared_trunk < 0:
            raise ValueError(f"robustness shared_trunk must be >= 0, got {self.shared_trunk}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None, where: str | None = None) -> RobustnessConfig:
        """A ``robustness`` section → config (``linear_probe:`` becomes :attr:`probe`)."""
        values = dict(values or {})
        probe = values.pop("linear_probe", None)
        config = super().from_dict(values, where=where)
        if probe is not None:
            config.probe = LinearProbeConfig.from_dict(probe, where=f"{where or cls._where()}.linear_probe")
        return config


def attach_groups(table: pd.DataFrame, truth: pd.DataFrame, column: str = "vendor", dataset: str | None = None,
                  id_col: str = "image_id") -> pd.DataFrame:
    """Add ``column`` (e.g. the cohort's per-image ``vendor``) from a truth table, matched on ``id_col``.

    ``dataset`` filters a truth table that covers several datasets (the cohort's ``truth/images.csv`` has a
    ``dataset`` column). Raises naming the first image without a value.
    """
    if column not in truth.columns:
        raise ValueError(f"truth table has no column {column!r} (columns: {list(truth.columns)})")
    if dataset is not None and "dataset" in truth.columns:
        truth = truth[truth["dataset"] == dataset]
    unique = truth.drop_duplicates(id_col)
    lookup = unique.set_index(unique[id_col].astype(str))[column]
    values = table[id_col].astype(str).map(lookup)
    if values.isna().any():
        row = table.index[values.isna().to_numpy()][0]
        raise ValueError(f"truth table has no {column!r} for image {table.loc[row, id_col]!r} (table row {row!r})")
    return table.assign(**{column: values.to_numpy()})


def primary_metric(task: str | TaskSpec) -> str:
    """The metric robustness is judged on: AUC for binary tasks, balanced accuracy for density."""
    return "auc" if get_task(task).kind == "binary" else "balanced_accuracy"


def _metric(task: TaskSpec, labels: np.ndarray, scores: np.ndarray) -> float:
    if task.kind == "binary":
        return roc_auc(labels, scores, warn=False)
    predicted = scores.argmax(axis=1)
    present = np.unique(labels)
    return float(np.mean([np.mean(predicted[labels == c] == c) for c in present]))


@dataclass
class _TestUnits:
    """The scored units of one task (images, or breasts for breast-level tasks) and their bootstrap resamples."""

    labels: np.ndarray
    patients: np.ndarray  # integer patient code per unit
    breast_of_row: np.ndarray | None  # per test row: its breast's unit index (breast-level tasks only)
    resamples: list[np.ndarray] = field(default_factory=list)

    def units(self, row_scores: np.ndarray) -> np.ndarray:
        """Row (image) scores → unit scores (breast means for breast-level tasks)."""
        if self.breast_of_row is None:
            return row_scores
        sums = np.zeros((len(self.labels),) + row_scores.shape[1:])
        np.add.at(sums, self.breast_of_row, row_scores)
        return sums / np.bincount(self.breast_of_row, minlength=len(self.labels)).reshape((-1,) + (1,) * (
            row_scores.ndim - 1))


def _units(task: TaskSpec, test_df: pd.DataFrame, n_boot: int, seed: int) -> _TestUnits:
    labels = task_labels(test_df, task)
    patients = pd.factorize(test_df["patient_id"].astype(str))[0]
    breast_of_row = None
    if task.level == "breast":
        breast_codes, _ = pd.factorize(pd.Series(breast_ids_of(test_df)))
        breast_of_row = breast_codes
        n = int(breast_codes.max()) + 1
        unit_labels = np.zeros(n, dtype=int)
        np.maximum.at(unit_labels, breast_codes, labels)
        unit_patients = np.zeros(n, dtype=int)
        unit_patients[breast_codes] = patients
        labels, patients = unit_labels, unit_patients
    units = _TestUnits(labels, patients, breast_of_row)
    order = np.argsort(patients, kind="stable")
    members = np.split(order, np.cumsum(np.bincount(patients))[:-1])
    rng = np.random.default_rng(seed)
    units.resamples = [np.concatenate([members[g] for g in rng.integers(0, len(members), size=len(members))])
                       for _ in range(n_boot)]
    return units


@dataclass
class RobustnessRun:
    """Per-image test scores of every (encoder, task, condition) and the paired bootstrap over them.

    ``scores[(encoder, task, shift, severity)]`` holds the probe's scores on the task's test rows; the clean condition is
    ``CLEAN`` (``"clean", 0``), a group hold-out ``("<column> hold-out", 1)``.
    """

    scores: dict[tuple[str, str, str, int], np.ndarray] = field(default_factory=dict)
    units: dict[str, _TestUnits] = field(default_factory=dict)
    n_train: dict[tuple[str, str, str, int], int] = field(default_factory=dict)
    timing: dict[str, Any] = field(default_factory=dict)
    _replicates: dict[tuple[str, str, str, int], tuple[float, np.ndarray]] = field(default_factory=dict)

    def encoders(self) -> list[str]:
        return list(dict.fromkeys(key[0] for key in self.scores))

    def conditions(self, task: str) -> list[tuple[str, int]]:
        """The non-clean conditions of ``task``, in run order."""
        return list(dict.fromkeys((k[2], k[3]) for k in self.scores if k[1] == task and (k[2], k[3]) != CLEAN))

    def replicates(self, key: tuple[str, str, str, int]) -> tuple[float, np.ndarray]:
        """(point value, bootstrap replicates) of the primary metric of one (encoder, task, shift, severity)."""
        if key not in self._replicates:
            task, units = get_task(key[1]), self.units[key[1]]
            scores = units.units(self.scores[key])
            point = _metric(task, units.labels, scores)
            values = np.array([_metric(task, units.labels[i], scores[i]) for i in units.resamples])
            self._replicates[key] = (point, values)
        return self._replicates[key]

    def drops(self) -> pd.DataFrame:
        """One row per (encoder, task, condition): clean and shifted metric with 95 % CIs, the drop
        ``clean − shifted`` with its paired 95 % CI and half-width, and the relative drop (columns
        :data:`DROP_COLUMNS`)."""
        rows = []
        for key in self.scores:
            encoder, task, shift, severity = key
            if (shift, severity) == CLEAN:
                continue
            clean_point, clean_reps = self.replicates((encoder, task, *CLEAN))
            point, reps = self.replicates(key)
            differences = clean_reps - reps
            low, high = percentile_interval(differences)
            clean_low, clean_high = percentile_interval(clean_reps)
            value_low, value_high = percentile_interval(reps)
            drop = clean_point - point
            units = self.units[task]
            rows.append({"encoder": encoder, "task": task, "metric": primary_metric(task),
                         "condition": _condition_name(shift, severity), "shift": shift, "severity": severity,
                         "parameter": SHIFTS[shift].parameter(severity) if shift in SHIFTS else float("nan"),
                         "clean_value": clean_point, "clean_ci_low": clean_low, "clean_ci_high": clean_high,
                         "value": point, "ci_low": value_low, "ci_high": value_high, "drop": drop,
                         "drop_ci_low": low, "drop_ci_high": high, "drop_half_width": (high - low) / 2,
                         "relative_drop": drop / clean_point if clean_point else float("nan"),
                         "n_train": self.n_train.get(key, self.n_train.get((encoder, task, *CLEAN), 0)),
                         "n_test": len(self.scores[key]), "n_patients": int(units.patients.max()) + 1})
        return pd.DataFrame(rows, columns=list(DROP_COLUMNS))


def _condition_name(shift: str, severity: int) -> str:
    if shift in SHIFTS:
        spec = SHIFTS[shift]
        return f"{shift} {spec.parameter(severity):g}" if spec.max_severity > 1 else shift
    return shift


def run_robustness(encoders: Sequence[EncoderSpec], tables: dict[str, pd.DataFrame], cfg: RobustnessConfig, *,
                   root: str | Path, cache_dir: str | Path, device: Any = None, num_workers: int = 0,
                   retrain: bool = False, progress: bool = True,
                   trunk_memo: TrunkMemo | None = None) -> RobustnessRun:
    """Encoders × tasks × (clean, shifts × severities, group hold-outs) → per-image test scores and timing.

    For each encoder: clean features of each whole table (cached), one probe per task on the clean training split (all
    labels), the clean test scores, then the test images re-encoded once per shift and severity (cached) and scored by
    the same probe; then, for each ``cfg.holdout`` column present in the table, every test image scored by a probe
    trained without its group. ``run.timing`` records the seconds and the encode throughput per encoder.

    Each shifted test set is read and run through the shared trunk once for all encoders whose trunks are equal
    (``trunk_memo``, else a new :class:`~mammoclip_kit.eval.features.TrunkMemo` of ``cfg.shared_trunk`` stages).
    """
    from mammoclip_kit.env import progress_bar as tqdm

    device = torch.device(device) if device is not None else torch.device("cpu")
    tasks = [get_task(t) for t in cfg.tasks]
    missing = sorted({t.table for t in tasks} - set(tables))
    if missing:
        print(f"note: no {', '.join(missing)} table; skipping tasks {[t.name for t in tasks if t.table in missing]}")
        tasks = [t for t in tasks if t.table in tables]
    if trunk_memo is None:
        trunk_memo = TrunkMemo.create(cfg.shared_trunk)
    run = RobustnessRun()
    timing: dict[str, Any] = {"clean_features_seconds": 0.0, "shifted_features_seconds": 0.0, "shifted_computed": 0,
                              "shifted_from_cache": 0, "encode_images_per_second": {}, "probe_seconds": 0.0}
    for spec in encoders:
        encoder = spec.load()
        fingerprint = model_fingerprint(encoder)
        computed_images, computed_seconds = 0, 0.0
        for table_name in dict.fromkeys(t.table for t in tasks):
            table = tables[table_name]
            clean = cached_features(encoder, table, root=root, cache_dir=cache_dir, table=table_name,
                                    image_size=cfg.image_size, batch_size=cfg.batch_size, device=device,
                                    num_workers=num_workers, retrain=retrain, progress=progress,
                                    fingerprint=fingerprint, trunk_memo=trunk_memo)
            timing["clean_features_seconds"] += clean.seconds
            if not clean.from_cache:
                computed_images, computed_seconds = computed_images + len(table), computed_seconds + clean.seconds
            position = pd.Series(np.arange(len(table)), index=table.index)
            table_tasks = [t for t in tasks if t.table == table_name]
            train_df, test_df = split_for_task(table, table_tasks[0], test_fold=cfg.rsna_test_fold,
                                               train_folds=cfg.rsna_train_folds)
            if cfg.max_test_patients is not None and test_df["patient_id"].nunique() > cfg.max_test_patients:
                fraction = cfg.max_test_patients / test_df["patient_id"].nunique()
                test_df = subsample_by_patient(test_df, task_labels(test_df, table_tasks[0]), fraction=fraction,
                                               kind=table_tasks[0].kind, seed=cfg.seed)
            train_x = clean.features[position[train_df.index].to_numpy()]
            test_x = clean.features[position[test_df.index].to_numpy()]
            start = time.perf_counter()
            probes = {}
            for task in table_tasks:
                try:
                    probes[task.name] = fit_linear_probe(train_x, task_labels(train_df, task), task, cfg.probe,
                                                         cfg.seed)
                except ValueError as error:  # a training split with one class (tiny smoke cohorts)
                    print(f"note: {spec.name} / {task.name}: {error}; task skipped")
                    continue
                if task.name not in run.units:
                    run.units[task.name] = _units(task, test_df, cfg.n_boot, cfg.seed)
                run.scores[(spec.name, task.name, *CLEAN)] = probes[task.name].predict_scores(test_x)
                run.n_train[(spec.name, task.name, *CLEAN)] = len(train_df)
            timing["probe_seconds"] += time.perf_counter() - start
            grid = [(shift, severity) for shift, severities in cfg.shifts.items() for severity in severities
                    if severity != 0]
            for shift, severity in tqdm(grid, desc=f"{spec.name} shifts", disable=not progress or not probes):
                if not probes:
                    break
                transform = ShiftTransform(shift, int(severity), cfg.seed)
                shifted = cached_features(encoder, test_df, root=root, cache_dir=cache_dir, table=f"{table_name}-test",
                                          image_size=cfg.image_size, transform=transform, transform_key=transform.key,
                                          batch_size=cfg.batch_size, device=device, num_workers=num_workers,
                                          retrain=retrain, progress=False, fingerprint=fingerprint,
                                          trunk_memo=trunk_memo)
                timing["shifted_features_seconds"] += shifted.seconds
                timing["shifted_from_cache" if shifted.from_cache else "shifted_computed"] += 1
                if not shifted.from_cache:
                    computed_images, computed_seconds = computed_images + len(test_df), computed_seconds + shifted.seconds
                for name, probe in probes.items():
                    run.scores[(spec.name, name, shift, int(severity))] = probe.predict_scores(shifted.features)
            start = time.perf_counter()
            for column in cfg.holdout:
                if column in table.columns:
                    _group_holdout(run, spec.name, table_tasks, probes, column, train_df, test_df, train_x, test_x,
                                   cfg)
            timing["probe_seconds"] += time.perf_counter() - start
        if computed_images:
            timing["encode_images_per_second"][spec.name] = computed_images / max(computed_seconds, 1e-9)
        del encoder
    run.timing = timing
    return run


def _group_holdout(run: RobustnessRun, encoder: str, tasks: Sequence[TaskSpec], probes: Mapping[str, Any],
                   column: str, train_df: pd.DataFrame, test_df: pd.DataFrame, train_x: np.ndarray,
                   test_x: np.ndarray, cfg: RobustnessConfig) -> None:
    """Leave-one-group-out scores of every test image (the probe never saw its group), pooled over the groups."""
    train_groups = train_df[column].astype(str).to_numpy()
    test_groups = test_df[column].astype(str).to_numpy()
    for task in tasks:
        if task.name not in probes:
            continue
        clean = run.scores[(encoder, task.name, *CLEAN)]
        scores = np.full_like(clean, np.nan, dtype=np.float64)
        train_labels = task_labels(train_df, task)
        for group in sorted(set(test_groups)):
            others = train_groups != group
            try:
                probe = fit_linear_probe(train_x[others], train_labels[others], task, cfg.probe, cfg.seed)
            except ValueError as error:
                print(f"note: {encoder} / {task.name} / {column}={group}: {error}; hold-out skipped")
                break
            scores[test_groups == group] = probe.predict_scores(test_x[test_groups == group])
        else:
            run.scores[(encoder, task.name, f"{column} hold-out", 1)] = scores
            run.n_train[(encoder, task.name, f"{column} hold-out", 1)] = int(np.mean(
                [np.sum(train_groups != g) for g in set(test_groups)]))


def compare_drops(run: RobustnessRun, subject: str, baselines: Sequence[str]) -> pd.DataFrame:
    """``drop(subject) − drop(baseline)`` per task, condition and baseline, with its paired 95 % CI.

    Negative = the subject degrades *less*. ``outcome`` is ``"less"`` (CI below 0), ``"more"`` (CI above 0) or
    ``"unresolved"``. Rows only for encoders present in ``run``.
    """
    rows = []
    present = run.encoders()
    for task in dict.fromkeys(k[1] for k in run.scores):
        for baseline in baselines:
            if subject not in present or baseline not in present:
                continue
            for shift, severity in run.conditions(task):
                keys = [(e, task, shift, severity) for e in (subject, baseline)]
                if any(k not in run.scores for k in keys):
                    continue
                drops = []
                for encoder in (subject, baseline):
                    clean_point, clean_reps = run.replicates((encoder, task, *CLEAN))
                    point, reps = run.replicates((encoder, task, shift, severity))
                    drops.append((clean_point - point, clean_reps - reps))
                difference = drops[0][1] - drops[1][1]
                low, high = percentile_interval(difference)
                outcome = "less" if high < 0 else "more" if low > 0 else "unresolved"
                rows.append({"task": task, "condition": _condition_name(shift, severity), "shift": shift,
                             "severity": severity, "baseline": baseline, "subject_drop": drops[0][0],
                             "baseline_drop": drops[1][0], "difference": drops[0][0] - drops[1][0],
                             "ci_low": low, "ci_high": high, "outcome": outcome})
    return pd.DataFrame(rows, columns=["task", "condition", "shift", "severity", "baseline", "subject_drop",
                                       "baseline_drop", "difference", "ci_low", "ci_high", "outcome"])


def claim_verdict(comparison: pd.DataFrame, subject: str = "mammoclip") -> dict[str, Any]:
    """The paper's claim ("``subject`` degrades less under shift than each baseline") judged per task.

    Per task and baseline it counts the conditions where the subject's drop is significantly smaller (``less``),
    larger (``more``) or not resolved. ``holds`` when, against every baseline, ``less`` covers at least half of the
    conditions and ``more`` none; ``contradicted`` when against some baseline ``more`` outnumbers ``less``; otherwise
    ``not shown``. Returns ``{"per_task": {task: {"verdict", "counts": {baseline: {...}}}}, "overall", "text"}``; the
    overall verdict is ``holds`` only when it holds for every task, ``contradicted`` when it is contradicted for any.
    """
    per_task: dict[str, Any] = {}
    lines = []
    if comparison.empty:
        return {"per_task": {}, "overall": "not tested",
                "text": f"not tested: {subject} or its baselines are missing from the run"}
    for task, part in comparison.groupby("task", sort=False):
        counts = {}
        for baseline, rows in part.groupby("baseline", sort=False):
            counts[baseline] = {k: int((rows["outcome"] == k).sum()) for k in ("less", "more", "unresolved")}
            counts[baseline]["conditions"] = len(rows)
        holds = all(c["less"] * 2 >= c["conditions"] and c["more"] == 0 for c in counts.values())
        contradicted = any(c["more"] > c["less"] for c in counts.values())
        verdict = "holds" if holds else "contradicted" if contradicted else "not shown"
        per_task[task] = {"verdict": verdict, "counts": counts}
        detail = "; ".join(f"vs {b}: smaller drop in {c['less']}, larger in {c['more']}, unresolved in "
                           f"{c['unresolved']} of {c['conditions']} conditions" for b, c in counts.items())
        lines.append(f"{task}: the claim {verdict} ({detail})")
    verdicts = [v["verdict"] for v in per_task.values()]
    overall = ("holds" if all(v == "holds" for v in verdicts) else
               "contradicted" if "contradicted" in verdicts else "not shown")
    return {"per_task": per_task, "overall": overall, "text": "\n".join(lines)}


def lesion_contrast(image: np.ndarray, boxes: np.ndarray) -> float:
    """Mean contrast of the lesions in ``boxes`` (x0, y0, x1, y1 pixels) in the model's view (image min–max scaled):
    mean inside the box minus the mean of a surrounding ring half a box wide. A shift that raises it makes lesions
    *more* conspicuous, which a scanner difference should not do."""
    unit = image.astype(np.float64)
    low, high = unit.min(), unit.max()
    unit = (unit - low) / (high - low) if high > low else np.zeros_like(unit)
    values = []
    for x0, y0, x1, y1 in np.round(np.asarray(boxes, dtype=float).reshape(-1, 4)).astype(int):
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(max(x1, x0 + 1), unit.shape[1]), min(max(y1, y0 + 1), unit.shape[0])
        pad_x, pad_y = max(2, (x1 - x0) // 2), max(2, (y1 - y0) // 2)
        ry0, ry1 = max(0, y0 - pad_y), min(unit.shape[0], y1 + pad_y)
        rx0, rx1 = max(0, x0 - pad_x), min(unit.shape[1], x1 + pad_x)
        ring = np.ones((ry1 - ry0, rx1 - rx0), dtype=bool)
        ring[y0 - ry0:y1 - ry0, x0 - rx0:x1 - rx0] = False
        if ring.any():
            values.append(unit[y0:y1, x0:x1].mean() - unit[ry0:ry1, rx0:rx1][ring].mean())
    return float(np.mean(values)) if values else float("nan")


def plot_drops(drops: pd.DataFrame, task: str, path: str | Path | None = None, max_half_width: float | None = None):
    """Horizontal bars: the drop (clean − shifted) of each encoder per condition, with its paired 95 % CI."""
    import matplotlib.pyplot as plt

    frame = drops[drops["task"] == task]
    conditions = list(dict.fromkeys(frame["condition"]))
    encoders = list(dict.fromkeys(frame["encoder"]))
    height = 0.8 / max(1, len(encoders))
    fig, ax = plt.subplots(figsize=(6.4, 0.5 + 0.32 * len(conditions) * max(1, len(encoders)) ** 0.5))
    colours = plt.get_cmap("tab10")
    for i, encoder in enumerate(encoders):
        part = frame[frame["encoder"] == encoder].set_index("condition").reindex(conditions)
        y = np.arange(len(conditions)) + (i - (len(encoders) - 1) / 2) * height
        err = np.vstack([part["drop"] - part["drop_ci_low"], part["drop_ci_high"] - part["drop"]])
        ax.barh(y, part["drop"], height, xerr=err, capsize=2, color=colours(i), label=encoder)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(range(len(conditions)), conditions, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"drop of {primary_metric(task)} (clean − shifted; > 0 = worse), paired 95 % CI")
    ax.set_ylabel("shift (severity) or hold-out", fontsize=8)
    ax.set_title(f"{task}: probes trained on clean images", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
    return fig


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mammoclip_kit.eval.robustness --profile paper --data-root DATA --checkpoint b5.tar ...``

    Runs the profile's shift grid and group hold-outs (notebook 08 without the narrative): the drops with paired CIs at
    ``<output>/sweeps/robustness_drops.csv``, the encoder comparison at ``robustness_comparison.csv``, and the verdict
    on the paper's claim printed.
    """
    from mammoclip_kit.eval.sweep import cli_inputs

    ctx, cfg, tables, encoders, workers = cli_inputs(
        argv, "Robustness: probes trained on clean data, evaluated under shifts / group hold-outs.", RobustnessConfig,
        "robustness")
    if ctx.is_cohort and "vendor" in cfg.holdout and "vindr" in tables:
        truth = pd.read_csv(ctx.data_root / "truth" / "images.csv", dtype={"image_id": str})
        tables["vindr"] = attach_groups(tables["vindr"], truth, "vendor", dataset="vindr")
    run = run_robustness(encoders, tables, cfg, root=ctx.output_dir, cache_dir=ctx.cache_dir, device=ctx.device,
                         num_workers=workers, retrain=ctx.retrain)
    out = ctx.output_dir / "sweeps"
    out.mkdir(parents=True, exist_ok=True)
    drops = run.drops()
    drops.to_csv(out / "robustness_drops.csv", index=False)
    comparison = compare_drops(run, cfg.subject, cfg.baselines)
    comparison.to_csv(out / "robustness_comparison.csv", index=False)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(drops[["encoder", "task", "condition", "clean_value", "value", "drop", "drop_ci_low", "drop_ci_high"]]
              .round(3))
    print(claim_verdict(comparison, cfg.subject)["text"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
