"""The paper's downstream tasks: label tables per task, train / test splits, labelled subsets and task metrics.

The paper measures its image encoders on RSNA malignancy (breast-level AUC), VinDr mass and suspicious calcification
(image-level AUC) and VinDr density (accuracy; the kit adds balanced accuracy and macro-F1). This module holds what
every consumer of those tasks shares — the linear probe (:mod:`mammoclip_kit.eval.linear_probe`), fine-tuning
(:mod:`mammoclip_kit.eval.finetune`), the data-efficiency sweep (:mod:`mammoclip_kit.eval.sweep`) and robustness
(:mod:`mammoclip_kit.eval.robustness`):

* :data:`TASKS` / :func:`get_task`, :func:`task_labels` (checked integer labels), :func:`split_for_task`;
* :func:`load_task_tables` (the built tables a run needs) and :func:`cap_training_patients`;
* :func:`subsample_by_patient`: labelled subsets drawn by patient, stratified, seeded (the paper sampled finding rows);
* :func:`evaluate_predictions`: the paper's metrics of a task with patient-bootstrap 95 % confidence intervals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mammoclip_kit.eval.metrics import ConfidenceInterval, bootstrap_ci, breast_level_scores, roc_auc

if TYPE_CHECKING:
    from mammoclip_kit.context import RunContext

__all__ = [
    "TASKS", "TaskSpec", "breast_ids_of", "cap_training_patients", "evaluate_predictions", "get_task",
    "load_task_tables", "split_for_task", "split_train_val", "subsample_by_patient", "task_labels",
]


@dataclass(frozen=True)
class TaskSpec:
    """One downstream task of the paper."""

    name: str  # short name used in tables: mass, calcification, density, cancer
    table: str  # built table it reads: "vindr" -> vindr_images.csv, "rsna" -> rsna_images.csv
    label: str  # label column of that table
    kind: str  # "binary" or "multiclass"
    num_classes: int  # 1 for binary, 4 for density
    level: str  # "image" or "breast" (mean image probability per patient x laterality)
    metrics: tuple[str, ...]  # reported metrics, primary first


#: The paper's downstream tasks: name -> spec.
TASKS: dict[str, TaskSpec] = {
    "mass": TaskSpec("mass", "vindr", "Mass", "binary", 1, "image", ("auc",)),
    "calcification": TaskSpec("calcification", "vindr", "Suspicious_Calcification", "binary", 1, "image", ("auc",)),
    "density": TaskSpec("density", "vindr", "density", "multiclass", 4, "image",
                        ("accuracy", "balanced_accuracy", "macro_f1")),
    "cancer": TaskSpec("cancer", "rsna", "cancer", "binary", 1, "breast", ("auc",)),
}


def get_task(name: str | TaskSpec) -> TaskSpec:
    """The :class:`TaskSpec` called ``name`` (raises ``ValueError`` naming the known tasks)."""
    if isinstance(name, TaskSpec):
        return name
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}: expected one of {', '.join(TASKS)}")
    return TASKS[name]


def task_labels(df: pd.DataFrame, task: str | TaskSpec, source: str = "table") -> np.ndarray:
    """Integer labels of ``task`` from ``df``, checked: 0/1 for binary tasks, 0..num_classes-1 for multiclass.

    Raises ``ValueError`` naming ``source``, the row and the value when a label is missing or out of range.
    """
    task = get_task(task)
    if task.label not in df.columns:
        raise ValueError(f"{source}: no column {task.label!r} for task {task.name!r} (columns: {list(df.columns)})")
    values = pd.to_numeric(df[task.label], errors="coerce")
    allowed = {0, 1} if task.kind == "binary" else set(range(task.num_classes))
    bad = values.isna() | ~values.isin(allowed)
    if bad.any():
        row = df.index[bad.to_numpy()][0]
        raise ValueError(f"{source}: row {row!r}, column {task.label!r}: value {str(df.loc[row, task.label])!r} is not "
                         f"a valid label for task {task.name!r} (expected one of {sorted(allowed)})")
    return values.to_numpy().astype(int)


def split_for_task(df: pd.DataFrame, task: str | TaskSpec, *, test_fold: int = 0,
                   train_folds: Sequence[int] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train and test rows of a built table for ``task``.

    VinDr tables use their ``split`` column (``training`` / ``test``), as the paper. RSNA tables use ``fold``:
    ``test_fold`` is the test set and ``train_folds`` (default: every other fold) the training set; the reference
    trains on folds 1–2 and validates on fold 0.
    """
    task = get_task(task)
    if task.table == "vindr":
        if "split" not in df.columns:
            raise ValueError(f"vindr table: no 'split' column (columns: {list(df.columns)})")
        unknown = set(df["split"].unique()) - {"training", "test"}
        if unknown:
            raise ValueError(f"vindr table: column 'split' has unexpected values {sorted(map(str, unknown))}")
        return df[df["split"] == "training"], df[df["split"] == "test"]
    if "fold" not in df.columns:
        raise ValueError(f"{task.table} table: no 'fold' column (columns: {list(df.columns)})")
    folds = df["fold"].astype(int)
    test = df[folds == test_fold]
    train = df[folds != test_fold] if train_folds is None else df[folds.isin(list(train_folds))]
    if test.empty:
        raise ValueError(f"{task.table} table: test fold {test_fold} has no rows (folds: {sorted(folds.unique())})")
    return train, test


def breast_ids_of(frame: pd.DataFrame, patient_col: str = "patient_id") -> list[str]:
    """One breast id per row: the table's ``breast_id`` column, else ``<patient>_<laterality>``."""
    if "breast_id" in frame:
        return frame["breast_id"].astype(str).tolist()
    return (frame[patient_col].astype(str) + "_" + frame["laterality"].astype(str)).tolist()


def _class_metrics(truth: np.ndarray, predicted: np.ndarray, num_classes: int) -> dict[str, float]:
    """Accuracy, balanced accuracy and macro-F1 from one confusion matrix.

    Same values as :func:`mammoclip_kit.eval.metrics.density_metrics` with ``labels=range(num_classes)`` (tested), but
    a few microseconds per call instead of milliseconds, which matters inside a 1000-replicate bootstrap.
    """
    truth, predicted = np.asarray(truth, dtype=int), np.asarray(predicted, dtype=int)
    confusion = np.bincount(truth * num_classes + predicted, minlength=num_classes ** 2).reshape(num_classes, -1)
    correct = np.diag(confusion).astype(float)
    support, predicted_count = confusion.sum(axis=1), confusion.sum(axis=0)
    present = support > 0
    recall = np.divide(correct, support, out=np.zeros(num_classes), where=present)
    precision = np.divide(correct, predicted_count, out=np.zeros(num_classes), where=predicted_count > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros(num_classes), where=denominator > 0)
    return {"accuracy": float(correct.sum() / max(1, len(truth))),
            "balanced_accuracy": float(recall[present].mean()) if present.any() else float("nan"),
            "macro_f1": float(f1.mean())}


def evaluate_predictions(task: str | TaskSpec, labels: np.ndarray, scores: np.ndarray, *,
                         patient_ids: Sequence[Any] | None = None, breast_ids: Sequence[Any] | None = None,
                         n_boot: int = 1000, seed: int = 0) -> dict[str, ConfidenceInterval]:
    """The paper's metrics of ``task`` with percentile-bootstrap 95 % CIs (patients resampled when given).

    Binary image-level tasks: ``{"auc"}``. Breast-level tasks (RSNA cancer): image probabilities are averaged per
    ``breast_ids`` (patient × laterality) and a breast is positive if any image is; then ``{"auc"}`` over breasts.
    Multiclass (density): argmax classes → ``{"accuracy", "balanced_accuracy", "macro_f1"}``.
    """
    task = get_task(task)
    labels, scores = np.asarray(labels), np.asarray(scores)
    # integer patient codes (the bootstrap takes numeric groups)
    groups = None if patient_ids is None else pd.factorize(np.asarray([str(p) for p in patient_ids]))[0]
    if task.kind == "multiclass":
        predicted = scores.argmax(axis=1) if scores.ndim == 2 else scores.astype(int)
        return {name: bootstrap_ci(lambda t, p, _n=name: _class_metrics(t, p, task.num_classes)[_n],
                                   labels, predicted, n_boot=n_boot, seed=seed, groups=groups)
                for name in task.metrics}
    if task.level == "breast":
        if breast_ids is None:
            raise ValueError(f"task {task.name!r} is scored per breast: pass breast_ids")
        table = pd.DataFrame({"breast_id": [str(b) for b in breast_ids], "score": scores, "label": labels})
        breasts = breast_level_scores(table, "score", "label")
        if groups is not None:
            patient_of = dict(zip(table["breast_id"], groups, strict=False))
            groups = breasts["breast_id"].map(patient_of).to_numpy().astype(int)
        labels, scores = breasts["label"].to_numpy().astype(int), breasts["score"].to_numpy()
    return {"auc": bootstrap_ci(lambda t, s: roc_auc(t, s, warn=False), labels, scores, n_boot=n_boot, seed=seed,
                                groups=groups)}


def _patient_strata(df: pd.DataFrame, labels: np.ndarray, kind: str, patient_col: str) -> pd.Series:
    """One stratum per patient: any-positive for binary labels, the most frequent (then lowest) class otherwise."""
    frame = pd.DataFrame({"patient": df[patient_col].astype(str).to_numpy(), "label": labels})
    if kind == "binary":
        return frame.groupby("patient")["label"].max()
    return frame.groupby("patient")["label"].agg(lambda s: int(s.value_counts().sort_index().idxmax()))


def subsample_by_patient(df: pd.DataFrame, labels: np.ndarray, *, fraction: float | None = None,
                         shots: int | None = None, kind: str = "binary", seed: int = 0,
                         patient_col: str = "patient_id") -> pd.DataFrame:
    """A labelled subset of ``df`` drawn by patient, stratified by the patient's label, seeded.

    Patients are grouped into strata (binary: has any positive image; multiclass: most frequent class). With
    ``fraction`` each stratum keeps ``round(fraction × size)`` patients (at least one); with ``shots`` each stratum keeps
    ``min(shots, size)`` patients (few-shot). Every image of a kept patient is kept, in the table's order.
    """
    if (fraction is None) == (shots is None):
        raise ValueError("subsample_by_patient: give exactly one of fraction or shots")
    if fraction is not None and not 0 < fraction <= 1:
        raise ValueError(f"subsample_by_patient: fraction must lie in (0, 1], got {fraction}")
    if shots is not None and shots < 1:
        raise ValueError(f"subsample_by_patient: shots must be at least 1, got {shots}")
    if patient_col not in df.columns:
        raise ValueError(f"subsample_by_patient: no column {patient_col!r} (columns: {list(df.columns)})")
    if len(labels) != len(df):
        raise ValueError(f"subsample_by_patient: {len(labels)} labels for {len(df)} rows")
    if fraction == 1:
        return df
    strata = _patient_strata(df, np.asarray(labels), kind, patient_col)
    rng = np.random.default_rng(seed)
    kept: list[str] = []
    for _, members in strata.groupby(strata, sort=True):
        patients = np.array(sorted(members.index))
        count = min(len(patients), shots) if shots is not None else max(1, int(round(fraction * len(patients))))
        kept.extend(rng.choice(patients, size=count, replace=False).tolist())
    return df[df[patient_col].astype(str).isin(set(kept))]


def cap_training_patients(table: pd.DataFrame, task: str | TaskSpec, max_patients: int | None, seed: int = 0, *,
                          test_fold: int = 0, train_folds: Sequence[int] | None = None) -> pd.DataFrame:
    """Keep the whole test split and at most ``max_patients`` training patients (stratified by ``task``'s label).

    The classroom profile uses this to fit its CPU budget; the test split, and so the evaluation, is never cut.
    """
    if max_patients is None:
        return table
    task = get_task(task)
    train, _ = split_for_task(table, task, test_fold=test_fold, train_folds=train_folds)
    patients = train["patient_id"].nunique()
    if patients <= max_patients:
        return table
    kept = subsample_by_patient(train, task_labels(train, task), fraction=max_patients / patients, kind=task.kind,
                                seed=seed)
    return table[~table.index.isin(train.index) | table.index.isin(kept.index)]


def load_task_tables(ctx: RunContext, tasks: Sequence[str], max_train_patients: dict[str, int] | None = None,
                     seed: int = 0, test_fold: int = 0, train_folds: Sequence[int] | None = None,
                     build: bool = True) -> dict[str, pd.DataFrame]:
    """The built tables the ``tasks`` read (``vindr_images.csv``, ``rsna_images.csv``), optionally capped.

    Tables are made current with :func:`mammoclip_kit.data.records.ensure_tables` first (``build``). A table that does
    not exist (e.g. real data with VinDr only) is left out. ``max_train_patients`` maps a table name to a cap applied
    with :func:`cap_training_patients` (stratified by the first task of that table).
    """
    from mammoclip_kit.data.records import ensure_tables, read_table

    if build:
        ensure_tables(ctx)
    out: dict[str, pd.DataFrame] = {}
    for task in (get_task(t) for t in tasks):
        if task.table in out:
            continue
        path = Path(ctx.tables_dir) / f"{task.table}_images.csv"
        if not path.is_file():
            continue
        table = read_table(path)
        cap = (max_train_patients or {}).get(task.table)
        out[task.table] = cap_training_patients(table, task, cap, seed, test_fold=test_fold, train_folds=train_folds)
    return out


def split_train_val(images: pd.DataFrame, val_fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out ``val_fraction`` of the patients (all their images together) for model selection, seeded."""
    patients = np.array(sorted(images["patient_id"].astype(str).unique()))
    if val_fraction <= 0 or len(patients) < 2:
        return images.reset_index(drop=True), images.iloc[0:0].copy()
    rng = np.random.default_rng(seed)
    n_val = min(len(patients) - 1, max(1, round(val_fraction * len(patients))))
    val_patients = set(rng.permutation(patients)[:n_val])
    is_val = images["patient_id"].astype(str).isin(val_patients)
    return images[~is_val].reset_index(drop=True), images[is_val].reset_index(drop=True)
