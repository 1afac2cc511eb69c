"""Data efficiency: cached frozen features, linear probes, fine-tuning and label-fraction sweeps (paper §3, spec §4.3).

The paper measures how much labelled data each image encoder needs: a linear probe (LP) on frozen features and a
fine-tune (FT) of the whole tower, at 10 / 50 / 100 % of the training labels, on RSNA malignancy (breast-level AUC),
VinDr mass and suspicious calcification (image-level AUC) and VinDr density (accuracy; the kit adds balanced accuracy
and macro-F1). This module does the same, with three deliberate differences from the reference (spec §4.3, §8):

* the linear probe is a *true* frozen-feature probe: the encoder runs once, in eval mode under ``inference_mode`` (no
  batch-norm statistic moves, no dropout), its pooled features are cached on disk keyed by (model fingerprint, table,
  image size, augmentation = off, shift), and the probe is a scikit-learn logistic regression fitted in seconds;
* labelled subsets are drawn by patient (all images of a patient stay together), stratified by the patient's label,
  with a seed, instead of ``DataFrame.sample(frac, random_state=1)`` over finding rows;
* every reported number comes with a bootstrap 95 % confidence interval that resamples patients.

Public API: :data:`TASKS` / :func:`get_task` / :func:`split_for_task`, :func:`model_fingerprint`,
:func:`extract_features`, :func:`cached_features`, :class:`LinearProbeCfg` / :func:`fit_linear_probe`,
:func:`evaluate_predictions`, :func:`subsample_by_patient`, :class:`FineTuneCfg` / :func:`fine_tune`,
:class:`SweepCfg` / :func:`run_sweep`, :func:`sweep_table`, :func:`plot_sweep`. Notebook ``06_data_efficiency``
teaches them; :mod:`mammoclip_kit.eval.robustness` reuses the cache and the probe.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from mammoclip_kit.config import reject_unknown
from mammoclip_kit.data.transforms import load_image, resize_to, to_model_input
from mammoclip_kit.eval.metrics import ConfidenceInterval, bootstrap_ci, breast_level_scores, roc_auc

__all__ = [
    "TASKS", "TaskSpec", "get_task", "split_for_task", "task_labels",
    "model_fingerprint", "extract_features", "FeatureSet", "cached_features",
    "LinearProbeCfg", "LinearProbe", "fit_linear_probe", "evaluate_predictions", "subsample_by_patient",
    "FineTuneCfg", "FineTuneResult", "ImageClassifier", "fine_tune",
    "EncoderSpec", "SweepCfg", "run_sweep", "scores_csv_path", "paired_comparison", "sweep_table", "plot_sweep", "SWEEP_KEY",
    "cap_training_patients", "load_task_tables", "encoder_specs", "sweep_cfg_from_settings",
]

CACHE_VERSION = 1  # bump when the cached feature recipe changes


# ----------------------------------------------------------------------------------------------------------------------
# Tasks
# ----------------------------------------------------------------------------------------------------------------------


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
    trains on folds 1–2 and validates on fold 0 (spec §4.3).
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


# ----------------------------------------------------------------------------------------------------------------------
# Feature extraction and the on-disk cache
# ----------------------------------------------------------------------------------------------------------------------


def model_fingerprint(module: nn.Module) -> str:
    """SHA-1 of a module's class, parameter and buffer names, shapes, dtypes and values (same weights, same key)."""
    digest = hashlib.sha1(type(module).__name__.encode())
    for name, tensor in module.state_dict().items():
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes()
                      if tensor.numel() else b"")
    return digest.hexdigest()


class _ImageFiles(torch.utils.data.Dataset):
    """Images of a list of files → model inputs, with an optional per-image transform of the 2-D array."""

    def __init__(self, paths: Sequence[Path], image_size: tuple[int, int] | None,
                 transform: Callable[[np.ndarray, str], np.ndarray] | None = None,
                 keys: Sequence[str] | None = None) -> None:
        self.paths, self.image_size, self.transform = list(paths), image_size, transform
        self.keys = list(keys) if keys is not None else [str(p) for p in self.paths]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = load_image(self.paths[index])
        if self.image_size is not None:
            image = resize_to(image, *self.image_size)
        if self.transform is not None:
            image = self.transform(image, self.keys[index])
        return to_model_input(image)


def extract_features(encoder: nn.Module, paths: Sequence[str | Path], *, image_size: tuple[int, int] | None = None,
                     batch_size: int = 16, device: Any = None, num_workers: int = 0,
                     transform: Callable[[np.ndarray, str], np.ndarray] | None = None,
                     keys: Sequence[str] | None = None, progress: bool = True, desc: str = "features") -> np.ndarray:
    """Pooled features ``(N, D)`` of the images at ``paths``, with the encoder frozen.

    The encoder runs in eval mode under ``torch.inference_mode`` (batch-norm statistics and dropout are not used in
    training mode, and no parameter or buffer changes); its previous train/eval mode is restored afterwards. The
    images go through :func:`~mammoclip_kit.data.transforms.to_model_input` after an optional resize to
    ``image_size`` (H, W) and an optional ``transform(image, key)`` (e.g. a robustness shift).
    """
    from tqdm.auto import tqdm

    device = torch.device(device) if device is not None else next(encoder.parameters()).device
    loader = torch.utils.data.DataLoader(_ImageFiles([Path(p) for p in paths], image_size, transform, keys),
                                         batch_size=batch_size, shuffle=False, num_workers=num_workers)
    was_training = encoder.training
    encoder.eval()
    outputs = []
    use_amp = device.type == "cuda"
    # channels-last memory layout: same values, ~1.8x faster depthwise convolutions on CPU (measured on the classroom
    # tower); the layout is switched back afterwards
    encoder.to(memory_format=torch.channels_last)
    try:
        with torch.inference_mode():
            for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
                with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_amp):
                    features = encoder(batch.to(device).contiguous(memory_format=torch.channels_last))
                if features.ndim != 2:
                    raise ValueError(f"extract_features: the encoder returned shape {tuple(features.shape)}; "
                                     "expected pooled (B, D) features")
                outputs.append(features.float().cpu().numpy())
    finally:
        encoder.to(memory_format=torch.contiguous_format)
        encoder.train(was_training)
    if not outputs:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(outputs).astype(np.float32)


@dataclass
class FeatureSet:
    """Cached features of one table under one encoder (rows in the order of the table given)."""

    features: np.ndarray  # (N, D) float32
    image_ids: list[str]  # one per row
    key: str  # cache key (hex)
    path: Path  # the .npz file
    from_cache: bool  # True when loaded instead of computed
    seconds: float  # time of this call
    compute_seconds: float  # time the encoder pass took when the cache was written


def cached_features(encoder: nn.Module, df: pd.DataFrame, *, root: str | Path, cache_dir: str | Path, table: str,
                    image_size: tuple[int, int] | None = None, path_col: str = "png_path", id_col: str = "image_id",
                    transform: Callable[[np.ndarray, str], np.ndarray] | None = None, transform_key: str = "none",
                    batch_size: int = 16, device: Any = None, num_workers: int = 0, retrain: bool = False,
                    progress: bool = True, fingerprint: str | None = None) -> FeatureSet:
    """Features of every row of ``df``, computed once and then loaded from ``cache_dir/features``.

    The cache key covers the encoder's weights (:func:`model_fingerprint`), the table name, the ordered image ids,
    ``image_size``, the augmentation (always off) and ``transform_key`` (name a non-``None`` ``transform`` there),
    so a retrained checkpoint or another shift never reads stale features. ``retrain=True`` recomputes.
    Image paths in ``path_col`` are relative to ``root`` (the run's output folder) unless absolute.
    """
    for column in (path_col, id_col):
        if column not in df.columns:
            raise ValueError(f"{table} table: no column {column!r} (columns: {list(df.columns)})")
    if transform is not None and transform_key == "none":
        raise ValueError("cached_features: name the transform with transform_key so that the cache key differs")
    start = time.perf_counter()
    ids = df[id_col].astype(str).tolist()
    fingerprint = fingerprint or model_fingerprint(encoder)
    spec = {"version": CACHE_VERSION, "model": fingerprint, "table": table,
            "ids": hashlib.sha1("\n".join(ids).encode()).hexdigest(),
            "image_size": list(image_size) if image_size else None, "augmentation": "off", "transform": transform_key}
    key = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()
    folder = Path(cache_dir) / "features"
    path = folder / f"{table}-{key[:20]}.npz"
    if path.is_file() and not retrain:
        with np.load(path, allow_pickle=False) as stored:
            features, stored_ids = stored["features"], stored["image_ids"].tolist()
            compute_seconds = float(stored["compute_seconds"])
        if stored_ids == ids:
            return FeatureSet(features, ids, key, path, True, time.perf_counter() - start, compute_seconds)
    root = Path(root)
    paths = [p if Path(p).is_absolute() else root / p for p in df[path_col].astype(str)]
    features = extract_features(encoder, paths, image_size=image_size, batch_size=batch_size, device=device,
                                num_workers=num_workers, transform=transform, keys=ids, progress=progress,
                                desc=f"features {table} ({transform_key})")
    compute_seconds = time.perf_counter() - start
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, features=features, image_ids=np.array(ids), compute_seconds=np.array(compute_seconds))
    tmp.replace(path)
    path.with_suffix(".json").write_text(json.dumps({**spec, "rows": len(ids), "dim": int(features.shape[1]),
                                                     "compute_seconds": compute_seconds}, indent=2))
    return FeatureSet(features, ids, key, path, False, compute_seconds, compute_seconds)


# ----------------------------------------------------------------------------------------------------------------------
# Linear probe and evaluation
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class LinearProbeCfg:
    """Settings of the frozen-feature logistic-regression probe."""

    C: float = 1.0  # inverse L2 strength of scikit-learn's LogisticRegression
    class_weight: str | None = "pos_weight"  # "pos_weight" (binary: positives weighted negatives/positives, as the
    # paper's weighted BCE; multiclass: unweighted, as its CE), "balanced", or None
    max_iter: int = 2000  # L-BFGS iterations
    standardize: bool = True  # z-score features with the training subset's mean and std


class LinearProbe:
    """A fitted probe: ``predict_scores(X)`` gives P(positive) ``(N,)`` or class probabilities ``(N, C)``."""

    def __init__(self, pipeline: Any, task: TaskSpec, classes: np.ndarray) -> None:
        self.pipeline, self.task, self.classes = pipeline, task, classes

    def predict_scores(self, features: np.ndarray) -> np.ndarray:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):
            proba = self.pipeline.predict_proba(np.asarray(features, dtype=np.float64))
        if self.task.kind == "binary":
            return proba[:, list(self.classes).index(1)]
        full = np.zeros((len(features), self.task.num_classes), dtype=np.float64)
        full[:, self.classes.astype(int)] = proba  # classes absent from a small training subset keep probability 0
        return full


def fit_linear_probe(features: np.ndarray, labels: np.ndarray, task: str | TaskSpec,
                     cfg: LinearProbeCfg | None = None, seed: int = 0) -> LinearProbe:
    """Fit a logistic-regression (binary) or softmax (multiclass) probe on frozen features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    task, cfg = get_task(task), cfg or LinearProbeCfg()
    labels = np.asarray(labels).astype(int)
    classes = np.unique(labels)
    if len(classes) < 2:
        raise ValueError(f"linear probe for {task.name!r}: the training subset has only class {classes.tolist()} "
                         f"({len(labels)} images); use a larger fraction or more shots")
    if cfg.class_weight == "pos_weight":
        if task.kind == "binary":
            negatives, positives = int((labels == 0).sum()), int((labels == 1).sum())
            class_weight: Any = {0: 1.0, 1: negatives / positives}
        else:
            class_weight = None
    elif cfg.class_weight in ("balanced", None):
        class_weight = cfg.class_weight
    else:
        raise ValueError(f"LinearProbeCfg.class_weight: {cfg.class_weight!r} is not pos_weight, balanced or None")
    steps = [StandardScaler()] if cfg.standardize else []
    model = LogisticRegression(C=cfg.C, class_weight=class_weight, max_iter=cfg.max_iter, random_state=seed)
    pipeline = make_pipeline(*steps, model)
    import warnings

    from threadpoolctl import threadpool_limits

    # One BLAS/OpenMP thread: the problem is small, the result is bit-for-bit reproducible, and scikit-learn's
    # multithreaded loss was measured 30x slower (multinomial, 480 x 640 features) on a busy 2-core machine.
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore")  # convergence warnings on tiny subsets are expected and not actionable here
        pipeline.fit(np.asarray(features, dtype=np.float64), labels)
    return LinearProbe(pipeline, task, classes)


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


# ----------------------------------------------------------------------------------------------------------------------
# Label subsets
# ----------------------------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------------------------
# Fine-tuning
# ----------------------------------------------------------------------------------------------------------------------


class ImageClassifier(nn.Module):
    """An image tower (pooled ``forward``) with a linear head, as the reference's ``BreastClipClassifier``."""

    def __init__(self, encoder: nn.Module, num_features: int, num_outputs: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(num_features, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.encoder(x)))


@dataclass
class FineTuneCfg:
    """Settings of whole-tower fine-tuning (defaults: the paper's optimiser; epochs and lr set by the profile)."""

    epochs: int = 3  # passes over the labelled subset (the paper: 30 VinDr, 20 RSNA)
    lr: float = 5e-5  # AdamW learning rate (the paper's)
    weight_decay: float = 1e-4  # AdamW weight decay (the paper's)
    warmup_epochs: float = 1.0  # linear warm-up, then cosine decay to 0, stepped per batch
    batch_size: int = 8
    image_size: tuple[int, int] | None = None  # (H, W) resize of the PNGs; None keeps their size
    weighted_loss: bool = True  # BCE pos_weight = negatives / positives (binary tasks)
    augment: bool = True  # the paper's training augmentation (flips, affine, elastic)
    amp: bool = True  # mixed precision, used on CUDA only
    val_fraction: float = 0.2  # patients of the labelled subset held out to pick the best epoch
    max_steps: int | None = None  # cap on optimisation steps (smoke runs)
    num_workers: int = 0
    progress: bool = True


@dataclass
class FineTuneResult:
    """What :func:`fine_tune` returns."""

    model: ImageClassifier  # with the best epoch's weights, in eval mode
    best_epoch: int  # 1-based; 0 when no epoch could be scored (then the last weights are kept)
    best_metric: float  # validation metric of the best epoch
    history: list[dict[str, float]] = field(default_factory=list)  # per epoch: loss, val metric, seconds
    checkpoint: Path | None = None  # saved best weights (safetensors) when a folder was given


class _LabelledImages(_ImageFiles):
    def __init__(self, paths: Sequence[Path], labels: np.ndarray, image_size: tuple[int, int] | None,
                 augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None, seed: int) -> None:
        super().__init__(paths, image_size)
        self.labels, self.augment, self.seed, self.epoch = labels, augment, seed, 0

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = load_image(self.paths[index])
        if self.image_size is not None:
            image = resize_to(image, *self.image_size)
        if self.augment is not None:
            image = self.augment(image, np.random.default_rng([self.seed, self.epoch, index]))
        return to_model_input(image), torch.tensor(self.labels[index])


def _warmup_cosine(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return factor


def _resolve_augment(augment: bool | Callable) -> Callable[[np.ndarray, np.random.Generator], np.ndarray] | None:
    if callable(augment):
        return augment
    if not augment:
        return None
    from mammoclip_kit.data.transforms import augment as paper_augment

    return paper_augment


def _predict(model: nn.Module, loader: torch.utils.data.DataLoader, device: torch.device, kind: str) -> np.ndarray:
    model.eval()
    outputs = []
    with torch.inference_mode():
        for images, _ in loader:
            logits = model(images.to(device).contiguous(memory_format=torch.channels_last)).float()
            outputs.append((logits.softmax(1) if kind == "multiclass" else logits[:, 0].sigmoid()).cpu().numpy())
    return np.concatenate(outputs) if outputs else np.zeros(0)


def fine_tune(encoder: nn.Module, num_features: int, train_df: pd.DataFrame, task: str | TaskSpec, *,
              root: str | Path, cfg: FineTuneCfg | None = None, device: Any = None, seed: int = 0,
              checkpoint_dir: str | Path | None = None, path_col: str = "png_path",
              patient_col: str = "patient_id") -> FineTuneResult:
    """Fine-tune a copy of ``encoder`` with a linear head on ``train_df`` (the encoder itself is not modified).

    ``cfg.val_fraction`` of the subset's patients (stratified) are held out to choose the best epoch by the task's
    primary metric (the reference chooses it on the test split, which flatters the result, spec §4.3). Weighted BCE for
    binary tasks (``pos_weight`` = negatives / positives), cross-entropy for density; AdamW, linear warm-up then cosine,
    AMP on CUDA only. The best weights are written to ``checkpoint_dir/model.safetensors`` with a ``meta.json``.
    """
    from tqdm.auto import tqdm

    task, cfg = get_task(task), cfg or FineTuneCfg()
    device = torch.device(device) if device is not None else torch.device("cpu")
    labels = task_labels(train_df, task, "fine-tune subset")
    torch.manual_seed(seed)
    fit_df, val_df = train_df, train_df.iloc[:0]
    if cfg.val_fraction > 0:
        val_df = subsample_by_patient(train_df, labels, fraction=cfg.val_fraction, kind=task.kind, seed=seed + 1,
                                      patient_col=patient_col)
        if len(val_df) < len(train_df):
            fit_df = train_df.drop(index=val_df.index)
        else:
            val_df = train_df.iloc[:0]
    fit_labels = task_labels(fit_df, task, "fine-tune subset")
    root = Path(root)

    def paths(frame: pd.DataFrame) -> list[Path]:
        return [p if Path(p).is_absolute() else root / p for p in frame[path_col].astype(str)]

    dtype = np.float32 if task.kind == "binary" else np.int64
    train_set = _LabelledImages(paths(fit_df), fit_labels.astype(dtype), cfg.image_size, _resolve_augment(cfg.augment),
                                seed)
    generator = torch.Generator().manual_seed(seed)
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, drop_last=False,
                                               num_workers=cfg.num_workers, generator=generator)
    val_loader = None
    if len(val_df):
        val_set = _LabelledImages(paths(val_df), task_labels(val_df, task).astype(dtype), cfg.image_size, None, seed)
        val_loader = torch.utils.data.DataLoader(val_set, batch_size=cfg.batch_size, num_workers=cfg.num_workers)

    model = ImageClassifier(copy.deepcopy(encoder), num_features, task.num_classes).to(device)
    model.to(memory_format=torch.channels_last)  # faster convolutions on CPU, same maths
    if task.kind == "binary":
        positives = max(1, int((fit_labels == 1).sum()))
        weight = (len(fit_labels) - positives) / positives if cfg.weighted_loss else 1.0
        loss_fn: nn.Module = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([weight], device=device))
    else:
        loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = len(train_loader)
    total = steps_per_epoch * cfg.epochs if cfg.max_steps is None else min(cfg.max_steps, steps_per_epoch * cfg.epochs)
    warmup = max(1, int(round(cfg.warmup_epochs * steps_per_epoch)))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(min(warmup, total), total))
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    best = FineTuneResult(model, 0, float("nan"))
    best_state = None
    step = 0
    val_ids = val_df[patient_col].astype(str).tolist() if len(val_df) else None
    for epoch in range(1, cfg.epochs + 1):
        if step >= total:
            break
        start, losses = time.perf_counter(), []
        model.train()
        train_set.epoch = epoch
        for images, targets in tqdm(train_loader, desc=f"fine-tune {task.name} epoch {epoch}/{cfg.epochs}",
                                    disable=not cfg.progress, leave=False):
            images, targets = images.to(device).contiguous(memory_format=torch.channels_last), targets.to(device)
            with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_amp):
                logits = model(images)
                loss = loss_fn(logits[:, 0], targets) if task.kind == "binary" else loss_fn(logits, targets)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            losses.append(float(loss.detach()))
            step += 1
            if step >= total:
                break
        record = {"epoch": epoch, "loss": float(np.mean(losses)), "steps": step}
        if val_loader is not None:
            scores = _predict(model, val_loader, device, task.kind)
            val_labels = task_labels(val_df, task)
            breast_ids = val_df["breast_id"].tolist() if task.level == "breast" and "breast_id" in val_df else None
            if task.level == "breast" and breast_ids is None:
                breast_ids = (val_df[patient_col].astype(str) + "_" + val_df["laterality"].astype(str)).tolist()
            metric = evaluate_predictions(task, val_labels, scores, patient_ids=val_ids, breast_ids=breast_ids,
                                          n_boot=0)[task.metrics[0]].point
            record["val_" + task.metrics[0]] = metric
            if math.isfinite(metric) and not (metric <= best.best_metric):
                best.best_epoch, best.best_metric = epoch, metric
                best_state = copy.deepcopy(model.state_dict())
        record["seconds"] = time.perf_counter() - start
        best.history.append(record)
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    if checkpoint_dir is not None:
        from safetensors.torch import save_file

        folder = Path(checkpoint_dir)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
                  str(folder / "model.safetensors"))
        (folder / "meta.json").write_text(json.dumps({"task": task.name, "best_epoch": best.best_epoch,
                                                      "best_metric": best.best_metric, "history": best.history,
                                                      "cfg": {k: v for k, v in asdict(cfg).items()}, "seed": seed},
                                                     indent=2, default=str))
        best.checkpoint = folder / "model.safetensors"
    return best


def _predict_table(model: nn.Module, df: pd.DataFrame, task: TaskSpec, *, root: Path, image_size: tuple | None,
                   batch_size: int, device: torch.device, num_workers: int, path_col: str = "png_path") -> np.ndarray:
    paths = [p if Path(p).is_absolute() else root / p for p in df[path_col].astype(str)]
    dataset = _LabelledImages(paths, np.zeros(len(paths), dtype=np.float32), image_size, None, 0)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)
    return _predict(model, loader, device, task.kind)


# ----------------------------------------------------------------------------------------------------------------------
# The data-efficiency sweep
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class EncoderSpec:
    """An image tower to compare: ``load()`` returns an ``nn.Module`` with pooled ``forward`` and ``num_features``."""

    name: str  # row label: random, clip, mammoclip, mammoclip_vindr, released, imagenet
    load: Callable[[], nn.Module]  # called lazily, once per sweep


@dataclass
class SweepCfg:
    """What :func:`run_sweep` runs: linear probes for every encoder, fine-tunes for a few."""

    tasks: list[str] = field(default_factory=lambda: ["mass", "calcification", "density", "cancer"])
    fractions: list[float] = field(default_factory=lambda: [0.1, 0.5, 1.0])  # label fractions (by patient)
    shots: list[int] = field(default_factory=list)  # few-shot budgets: patients per stratum
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # subsample (and fine-tune) seeds
    probe: LinearProbeCfg = field(default_factory=LinearProbeCfg)
    finetune: FineTuneCfg = field(default_factory=FineTuneCfg)
    finetune_encoders: list[str] = field(default_factory=list)  # encoders that are also fine-tuned
    finetune_fractions: list[float] = field(default_factory=lambda: [0.1])
    finetune_seeds: list[int] = field(default_factory=lambda: [0])
    finetune_tasks: list[str] | None = None  # None = all tasks
    image_size: tuple[int, int] | None = None  # features at this (H, W); None = the PNG size
    batch_size: int = 16  # feature-extraction batch
    n_boot: int = 1000  # bootstrap replicates per reported metric
    rsna_test_fold: int = 0
    rsna_train_folds: list[int] | None = None  # None = every fold but the test fold


#: Columns identifying one sweep point; a resumed sweep skips points whose key is already in the CSV.
SWEEP_KEY = ("encoder", "fingerprint", "method", "task", "budget", "seed")


def _budget_label(fraction: float | None, shots: int | None) -> str:
    return f"{shots}-shot" if shots is not None else f"{fraction:.0%}"


def run_sweep(encoders: Sequence[EncoderSpec], tables: dict[str, pd.DataFrame], cfg: SweepCfg, *,
              root: str | Path, cache_dir: str | Path, csv_path: str | Path | None = None, device: Any = None,
              num_workers: int = 0, retrain: bool = False, checkpoint_root: str | Path | None = None,
              progress: bool = True) -> pd.DataFrame:
    """Encoders × methods × tasks × label budgets × seeds → a tidy table (one row per metric).

    ``tables`` maps a table name (``vindr``, ``rsna``) to its built table; tasks whose table is missing are skipped with
    a note. Features come from :func:`cached_features` (once per encoder and table). With ``csv_path`` each finished
    point is appended at once and points already in the file (same :data:`SWEEP_KEY`) are skipped, so an interrupted
    sweep resumes; ``retrain=True`` starts a new file. Timing (feature extraction, probes, fine-tunes, cache hits) is in
    ``result.attrs["timing"]``.

    Columns: encoder, fingerprint, method (``linear_probe`` / ``finetune``), task, budget, fraction, shots, seed,
    n_train_images, n_train_patients, n_train_positive, n_test, metric, value, ci_low, ci_high, seconds, note (why a
    value is missing: a subset with a single class). A task whose test set has a single class gets NaN AUCs.

    With ``csv_path``, the test scores of every binary-task point are appended to ``<stem>_scores.csv`` next to it
    (:data:`SWEEP_KEY` + ``row`` = position in the task's test split + ``score``): :func:`paired_comparison` reads them to
    compare two encoders on the same test images.
    """
    from tqdm.auto import tqdm

    root, device = Path(root), torch.device(device) if device is not None else torch.device("cpu")
    csv_path = Path(csv_path) if csv_path is not None else None
    done: pd.DataFrame | None = None
    if csv_path is not None and csv_path.is_file() and not retrain:
        done = pd.read_csv(csv_path, dtype={"encoder": str, "fingerprint": str, "method": str, "task": str,
                                            "budget": str})
    if csv_path is not None and retrain and csv_path.is_file():
        csv_path.unlink()
    scores_path = scores_csv_path(csv_path) if csv_path is not None else None
    if scores_path is not None and retrain and scores_path.is_file():
        scores_path.unlink()
    if done is not None and scores_path is not None:
        # a binary-task point finished before scores were kept (or whose scores were deleted) is computed again
        scored = set()
        if scores_path.is_file():
            kept = pd.read_csv(scores_path, usecols=list(SWEEP_KEY), dtype=str).drop_duplicates()
            scored = {tuple(row) for row in kept.to_numpy()}
        binary = done["task"].map(lambda name: name in TASKS and TASKS[name].kind == "binary")
        keys = [tuple(str(v) for v in row) for row in done[list(SWEEP_KEY)].to_numpy()]
        stale = (binary.to_numpy() & done["value"].notna().to_numpy()
                 & np.array([key not in scored for key in keys], dtype=bool))
        if stale.any():
            done = done[~stale]
            done.to_csv(csv_path, index=False)
    done_keys = set() if done is None else {tuple(str(v) for v in row) for row in done[list(SWEEP_KEY)].to_numpy()}
    timing = {"features_seconds": 0.0, "features_from_cache": 0, "features_computed": 0,
              "features_compute_seconds_when_cached": 0.0, "probe_seconds": 0.0, "finetune_seconds": 0.0}
    tasks = [get_task(t) for t in cfg.tasks]
    missing = sorted({t.table for t in tasks} - set(tables))
    if missing:
        print(f"note: no {', '.join(missing)} table; skipping tasks {[t.name for t in tasks if t.table in missing]}")
        tasks = [t for t in tasks if t.table in tables]
    rows: list[dict[str, Any]] = []

    def emit(new_rows: list[dict[str, Any]]) -> None:
        rows.extend(new_rows)
        if csv_path is not None and new_rows:
            csv_path.parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame(new_rows).to_csv(csv_path, mode="a", header=not csv_path.is_file(), index=False)

    budgets = [(f, None) for f in cfg.fractions] + [(None, s) for s in cfg.shots]
    fingerprints: list[str] = []
    for spec in encoders:
        encoder = spec.load()
        fingerprint = model_fingerprint(encoder)
        fingerprints.append(fingerprint)
        features: dict[str, FeatureSet] = {}
        for task in tasks:
            table = tables[task.table]
            train_df, test_df = split_for_task(table, task, test_fold=cfg.rsna_test_fold,
                                               train_folds=cfg.rsna_train_folds)
            plan = [("linear_probe", f, s, seed) for f, s in budgets for seed in cfg.seeds]
            if spec.name in cfg.finetune_encoders and (cfg.finetune_tasks is None or task.name in cfg.finetune_tasks):
                plan += [("finetune", f, None, seed) for f in cfg.finetune_fractions for seed in cfg.finetune_seeds]
            plan = [p for p in plan if (spec.name, fingerprint, p[0], task.name, _budget_label(p[1], p[2]), str(p[3]))
                    not in done_keys]
            if not plan:
                continue
            train_labels = task_labels(train_df, task, f"{task.table} table")
            test_labels = task_labels(test_df, task, f"{task.table} table")
            breast_ids = None
            if task.level == "breast":
                breast_ids = (test_df["breast_id"] if "breast_id" in test_df else
                              test_df["patient_id"].astype(str) + "_" + test_df["laterality"].astype(str)).tolist()
            for method, fraction, shots, seed in tqdm(plan, desc=f"{spec.name} / {task.name}", disable=not progress):
                start = time.perf_counter()
                subset = subsample_by_patient(train_df, train_labels, fraction=fraction, shots=shots, kind=task.kind,
                                              seed=seed)
                sub_labels = task_labels(subset, task)
                note = ""
                if len(np.unique(sub_labels)) < 2:
                    note = f"the labelled subset has a single class ({len(subset)} images): no model fitted"
                    metrics = {name: ConfidenceInterval(float("nan"), float("nan"), float("nan")) for name in task.metrics}
                elif method == "linear_probe":
                    if task.table not in features:
                        fs = cached_features(encoder, table, root=root, cache_dir=cache_dir, table=task.table,
                                             image_size=cfg.image_size, batch_size=cfg.batch_size, device=device,
                                             num_workers=num_workers, retrain=retrain, progress=progress,
                                             fingerprint=fingerprint)
                        features[task.table] = fs
                        timing["features_seconds"] += fs.seconds
                        timing["features_from_cache" if fs.from_cache else "features_computed"] += 1
                        timing["features_compute_seconds_when_cached"] += fs.compute_seconds
                        start = time.perf_counter()
                    position = pd.Series(np.arange(len(table)), index=table.index)
                    feats = features[task.table].features
                    probe = fit_linear_probe(feats[position[subset.index].to_numpy()], sub_labels, task, cfg.probe,
                                             seed)
                    scores = probe.predict_scores(feats[position[test_df.index].to_numpy()])
                else:
                    folder = None
                    if checkpoint_root is not None:
                        folder = Path(checkpoint_root) / f"{spec.name}-{task.name}-{_budget_label(fraction, shots)}" \
                                                         f"-seed{seed}".replace("%", "pct")
                    result = fine_tune(encoder, int(encoder.num_features), subset, task, root=root, cfg=cfg.finetune,
                                       device=device, seed=seed, checkpoint_dir=folder)
                    scores = _predict_table(result.model, test_df, task, root=root, image_size=cfg.finetune.image_size,
                                            batch_size=cfg.batch_size, device=device, num_workers=num_workers)
                    del result
                if not note:
                    metrics = evaluate_predictions(task, test_labels, scores,
                                                   patient_ids=test_df["patient_id"].tolist(), breast_ids=breast_ids,
                                                   n_boot=cfg.n_boot, seed=seed)
                seconds = time.perf_counter() - start
                timing["probe_seconds" if method == "linear_probe" else "finetune_seconds"] += seconds
                if scores_path is not None and not note and task.kind == "binary":
                    scores_path.parent.mkdir(parents=True, exist_ok=True)
                    pd.DataFrame({"encoder": spec.name, "fingerprint": fingerprint, "method": method,
                                  "task": task.name, "budget": _budget_label(fraction, shots), "seed": seed,
                                  "row": np.arange(len(test_df)), "score": np.asarray(scores, dtype=np.float64)}
                                 ).to_csv(scores_path, mode="a", header=not scores_path.is_file(), index=False)
                emit([{"encoder": spec.name, "fingerprint": fingerprint, "method": method, "task": task.name,
                       "budget": _budget_label(fraction, shots), "fraction": fraction, "shots": shots, "seed": seed,
                       "n_train_images": len(subset), "n_train_patients": subset["patient_id"].nunique(),
                       "n_train_positive": int((sub_labels == 1).sum()) if task.kind == "binary" else None,
                       "n_test": len(test_df), "metric": name, "value": ci.point, "ci_low": ci.low,
                       "ci_high": ci.high, "seconds": seconds, "note": note}
                      for name, ci in metrics.items()])
        del encoder
    new = pd.DataFrame(rows)
    if done is not None and len(done):
        # rows of earlier runs that this configuration still asks for (other encoders, tasks or budgets stay in the
        # CSV but are not returned)
        lp_budgets = {_budget_label(f, s) for f, s in budgets}
        ft_budgets = {_budget_label(f, None) for f in cfg.finetune_fractions}
        wanted = (done["encoder"].isin([e.name for e in encoders]) & done["fingerprint"].isin(fingerprints)
                  & done["task"].isin([t.name for t in tasks])
                  & (((done["method"] == "linear_probe") & done["budget"].isin(lp_budgets)
                      & done["seed"].isin(cfg.seeds))
                     | ((done["method"] == "finetune") & done["budget"].isin(ft_budgets)
                        & done["seed"].isin(cfg.finetune_seeds) & done["encoder"].isin(cfg.finetune_encoders))))
        done = done[wanted]
    result = pd.concat([d for d in (done, new) if d is not None and len(d)], ignore_index=True) \
        if (done is not None and len(done)) or len(new) else new
    result.attrs["timing"] = timing
    return result


def scores_csv_path(csv_path: str | Path) -> Path:
    """Where :func:`run_sweep` keeps the per-image test scores of the sweep written to ``csv_path``."""
    csv_path = Path(csv_path)
    return csv_path.with_name(f"{csv_path.stem}_scores.csv")


def paired_comparison(scores: pd.DataFrame, test_df: pd.DataFrame, task: str | TaskSpec, first: dict[str, str],
                      second: dict[str, str], *, n_boot: int = 1000, seed: int = 0,
                      patient_col: str = "patient_id") -> ConfidenceInterval:
    """Paired bootstrap of the AUC difference ``first − second`` on the same test images.

    ``scores`` is a sweep's scores table (:func:`scores_csv_path`), ``test_df`` the task's test split in the order the
    sweep used (:func:`split_for_task`), ``first`` / ``second`` select sweep points by column (e.g.
    ``{"encoder": "mammoclip", "method": "linear_probe", "budget": "10%"}``); each side's AUC is the mean over its
    seeds. Every replicate resamples whole patients once and scores both sides on that resample, so the interval is
    the one to read when asking "is A better than B?" — two separate intervals can overlap while the paired
    difference is clearly positive, because both models err on the same hard images. Breast-level tasks
    (RSNA cancer) first average image scores per breast. When an encoder was retrained, only the scores of its latest
    weights (the last fingerprint written) are used.
    """
    task = get_task(task)
    if task.kind != "binary":
        raise ValueError(f"paired_comparison: task {task.name!r} is not binary (AUC only)")
    labels = task_labels(test_df, task, "test split")
    sides = []
    for selection in (first, second):
        mask = (scores["task"] == task.name)
        for column, value in selection.items():
            if column not in scores:
                raise ValueError(f"paired_comparison: the scores table has no column {column!r}")
            mask &= scores[column].astype(str) == str(value)
        part = scores[mask]
        if part.empty:
            raise ValueError(f"paired_comparison: no scores for {selection} on task {task.name!r}")
        if "fingerprint" in part:
            part = part[part["fingerprint"] == part["fingerprint"].iloc[-1]]
        matrix = part.pivot_table(index="row", columns="seed", values="score", aggfunc="first").sort_index()
        if len(matrix) != len(test_df) or matrix.isna().any().any():
            raise ValueError(f"paired_comparison: {selection} has scores for {len(matrix)} test rows, the test split "
                             f"has {len(test_df)}")
        sides.append(matrix.to_numpy())
    groups = test_df[patient_col].astype(str).to_numpy()
    if task.level == "breast":  # one row per breast: mean image score, the breast's label, its patient
        breast = (test_df["breast_id"] if "breast_id" in test_df else
                  test_df[patient_col].astype(str) + "_" + test_df["laterality"].astype(str)).to_numpy()
        codes, _ = pd.factorize(pd.Series(breast))
        first_row = np.unique(codes, return_index=True)[1]
        sides = [pd.DataFrame(m).groupby(codes).mean().to_numpy() for m in sides]
        labels, groups = labels[first_row], groups[first_row]

    def difference(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
        return float(np.mean([roc_auc(y, a[:, c], warn=False) for c in range(a.shape[1])])
                     - np.mean([roc_auc(y, b[:, c], warn=False) for c in range(b.shape[1])]))

    return bootstrap_ci(difference, labels, sides[0], sides[1], n_boot=n_boot, seed=seed, groups=groups)


def sweep_table(results: pd.DataFrame, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Encoder × method × budget rows, task/metric columns: mean over seeds with the mean CI, as ``0.71 [0.62, 0.80]``.

    The interval shown is the average of the per-seed bootstrap intervals (test-set uncertainty); ``seed_sd`` columns are
    not added to keep the table readable — :func:`plot_sweep` shows the spread over seeds.
    """
    frame = results if metrics is None else results[results["metric"].isin(metrics)]
    grouped = frame.groupby(["encoder", "method", "budget", "task", "metric"], sort=False)
    summary = grouped.agg(value=("value", "mean"), ci_low=("ci_low", "mean"), ci_high=("ci_high", "mean"),
                          seeds=("seed", "nunique")).reset_index()
    summary["cell"] = [f"{v:.3f} [{lo:.3f}, {hi:.3f}]" for v, lo, hi in
                       summary[["value", "ci_low", "ci_high"]].to_numpy()]
    summary["column"] = summary["task"] + " " + summary["metric"]
    return summary.pivot_table(index=["encoder", "method", "budget"], columns="column", values="cell",
                               aggfunc="first", sort=False)


def plot_sweep(results: pd.DataFrame, metrics: Sequence[str] = ("auc", "balanced_accuracy"), path: str | Path | None = None):
    """Seaborn figure: metric vs labelled training patients, one panel per task, one line per encoder × method, 95 % CIs.

    Each budget sits at its real number of training patients (mean over seeds of ``n_train_patients``, log scale) and
    is labelled with its name: a few-shot budget ("4-shot" = 4 patients per class) can hold more patients than a small
    fraction, and then sits to its right. Results without ``n_train_patients`` fall back to the budgets' order. The
    shaded band is the mean bootstrap CI over seeds; points show the mean over seeds. Returns the figure.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    frame = results[results["metric"].isin(metrics)].copy()
    frame["model"] = frame["encoder"] + " · " + frame["method"].map({"linear_probe": "LP", "finetune": "FT"})
    order = list(dict.fromkeys(sorted(frame["budget"].unique(), key=_budget_order)))
    by_patients = "n_train_patients" in frame.columns and frame["n_train_patients"].notna().all()
    panels = list(dict.fromkeys(frame["task"] + " " + frame["metric"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.8), squeeze=False)
    palette = dict(zip(sorted(frame["model"].unique()), sns.color_palette("tab10"), strict=False))
    for ax, panel in zip(axes[0], panels, strict=False):
        part = frame[(frame["task"] + " " + frame["metric"]) == panel].copy()
        if by_patients:
            patients = part.groupby("budget")["n_train_patients"].mean()
            part["x"] = part["budget"].map(patients)
            ticks = sorted((float(patients[b]), b) for b in patients.index)
        else:
            part["x"] = part["budget"].map({b: i for i, b in enumerate(order)})
            ticks = [(float(i), b) for i, b in enumerate(order) if b in set(part["budget"])]
        mean = part.groupby(["model", "x"], as_index=False)[["value", "ci_low", "ci_high"]].mean()
        for model, curve in mean.groupby("model"):
            ax.fill_between(curve["x"], curve["ci_low"], curve["ci_high"], alpha=0.15, color=palette[model])
        sns.lineplot(data=part, x="x", y="value", hue="model", palette=palette, marker="o", errorbar=None, ax=ax)
        if by_patients:
            ax.set_xscale("log")
            ax.minorticks_off()
            labels, previous, lowered = [], None, False
            for x, b in ticks:  # a tick close to the previous one (e.g. 8 and 10 patients) goes one row lower
                lowered = previous is not None and x / previous < 1.5 and not lowered
                labels.append(("\n\n" if lowered else "") + f"{b}\n{x:.0f}")
                previous = x
            ax.set_xticks([x for x, _ in ticks], labels, fontsize=8)
            ax.set_xlabel("labelled training patients (log scale)")
        else:
            ax.set_xticks([x for x, _ in ticks], [b for _, b in ticks])
            ax.set_xlabel("labelled training data")
        ax.set_ylabel(panel)
        ax.set_title(panel)
        if "auc" in panel:
            ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        ax.legend(fontsize=7)
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


def _budget_order(budget: str) -> tuple[int, float]:
    if budget.endswith("-shot"):
        return (0, float(budget.split("-")[0]))
    return (1, float(budget.rstrip("%")))


# ----------------------------------------------------------------------------------------------------------------------
# Run-context glue (notebooks 06 and 08, the paper profile)
# ----------------------------------------------------------------------------------------------------------------------


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


def load_task_tables(ctx: Any, tasks: Sequence[str], max_train_patients: dict[str, int] | None = None,
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


def _image_tower(model: nn.Module) -> nn.Module:
    tower = getattr(model, "image_encoder", model)
    if not hasattr(tower, "num_features"):
        raise TypeError(f"{type(tower).__name__}: an image tower needs a num_features attribute")
    return tower.eval()


def encoder_specs(ctx: Any, names: Sequence[str], random_preset: str | None = None,
                  imagenet_weights: str | None = None) -> list[EncoderSpec]:
    """Image towers to compare, by name, loaded lazily on ``ctx.device``.

    * ``random``: ``create_model(random_preset)`` with ``ctx.seed`` (no training).
    * ``shapes``: the same tower after the formula-driven pretraining that the profile's contrastive pretraining starts
      from (:func:`mammoclip_kit.train.ensure_shapes_tower`, the kit's ImageNet stand-in); skipped when the profile
      has none. Comparing it with ``mammoclip`` shows what the image–report pretraining adds.
    * ``clip``, ``mammoclip``, ``mammoclip_vindr``: the classroom pretraining ablation
      (:func:`mammoclip_kit.train.ensure_pretrained`, trained when missing). A name ending in ``?`` is optional: it is
      used only when its checkpoint folder already exists (``mammoclip_vindr?``).
    * ``released``: the ``checkpoint`` parameter (a kit folder or a released ``.tar``; skipped when not given).
    * ``imagenet``: ``random_preset``'s tower initialised from the local state-dict file ``imagenet_weights`` (skipped
      when not given).
    """
    specs: list[EncoderSpec] = []
    preset = random_preset or ("paper-b5" if ctx.profile == "paper" else ctx.profile)

    def random_tower() -> nn.Module:
        from mammoclip_kit.models.factory import create_model

        torch.manual_seed(ctx.seed)
        return _image_tower(create_model(preset)).to(ctx.device)

    for raw in names:
        name, optional = raw.rstrip("?"), raw.endswith("?")
        if name == "random":
            specs.append(EncoderSpec("random", random_tower))
        elif name == "shapes":
            from mammoclip_kit.train import ensure_shapes_tower, pretrain_config

            if pretrain_config(ctx, "mammoclip").image_init != "shapes":
                print("note: encoder 'shapes' skipped (this profile's pretraining does not start from the shapes init)")
                continue

            def shapes_tower() -> nn.Module:
                from mammoclip_kit.train.shapes import load_shapes_init

                folder = ensure_shapes_tower(ctx)
                return _image_tower(load_shapes_init(random_tower(), folder)).to(ctx.device)

            specs.append(EncoderSpec("shapes", shapes_tower))
        elif name in ("clip", "mammoclip", "mammoclip_vindr"):
            if optional and not (Path(ctx.checkpoint_dir(name)) / "config.json").is_file():
                print(f"note: encoder {name!r} skipped (no checkpoint at checkpoints/{name})")
                continue

            def pretrained(variant: str = name) -> nn.Module:
                from mammoclip_kit.models.clip import from_pretrained
                from mammoclip_kit.train import ensure_pretrained

                return _image_tower(from_pretrained(ensure_pretrained(ctx, variant))).to(ctx.device)

            specs.append(EncoderSpec(name, pretrained))
        elif name == "released":
            checkpoint = ctx.params.get("checkpoint")
            if not checkpoint:
                print("note: encoder 'released' skipped (pass checkpoint= a released .tar or a kit folder)")
                continue

            def released(path: str = str(checkpoint)) -> nn.Module:
                if Path(path).is_dir():
                    from mammoclip_kit.models.clip import from_pretrained

                    return _image_tower(from_pretrained(path)).to(ctx.device)
                from mammoclip_kit.models.reference import load_reference_checkpoint

                model = load_reference_checkpoint(path, text_encoder=ctx.params.get("text_encoder"), image_only=True)
                return _image_tower(model).to(ctx.device)

            specs.append(EncoderSpec(Path(str(checkpoint)).stem, released))
        elif name == "imagenet":
            if not imagenet_weights:
                print("note: encoder 'imagenet' skipped (set imagenet_weights to a local state-dict file)")
                continue

            def imagenet(path: str = str(imagenet_weights)) -> nn.Module:
                tower = random_tower()
                state = (__import__("safetensors.torch", fromlist=["load_file"]).load_file(path)
                         if path.endswith(".safetensors") else torch.load(path, map_location="cpu", weights_only=True))
                result = tower.load_state_dict(state.get("state_dict", state), strict=False)
                if len(result.missing_keys) == len(tower.state_dict()):
                    raise ValueError(f"{path}: no parameter name matches the {preset} image tower")
                return tower

            specs.append(EncoderSpec("imagenet", imagenet))
        else:
            raise ValueError(f"unknown encoder {raw!r}: expected random, shapes, clip, mammoclip, mammoclip_vindr, "
                             "released or imagenet")
    return specs


def sweep_cfg_from_settings(section: dict[str, Any], seed_offset: int = 0) -> SweepCfg:
    """A :class:`SweepCfg` from a profile's ``data_efficiency`` section (unknown keys are rejected)."""
    section = dict(section)
    probe = LinearProbeCfg(**section.pop("linear_probe", {}) or {})
    finetune_section = dict(section.pop("finetune", {}) or {})
    ft_keys = {k: finetune_section.pop(k) for k in ("encoders", "fractions", "seeds", "tasks")
               if k in finetune_section}
    if "image_size" in finetune_section and finetune_section["image_size"] is not None:
        finetune_section["image_size"] = tuple(finetune_section["image_size"])
    finetune = FineTuneCfg(**finetune_section)
    for key in ("encoders", "optional_encoders", "max_train_patients", "random_preset", "imagenet_weights"):
        section.pop(key, None)
    if section.get("image_size") is not None:
        section["image_size"] = tuple(section["image_size"])
    reject_unknown(section, SweepCfg.__dataclass_fields__, where="data_efficiency settings")
    cfg = SweepCfg(probe=probe, finetune=finetune, finetune_encoders=list(ft_keys.get("encoders", [])),
                   finetune_fractions=list(ft_keys.get("fractions", [0.1])),
                   finetune_seeds=list(ft_keys.get("seeds", [0])), finetune_tasks=ft_keys.get("tasks"), **section)
    cfg.seeds = [s + seed_offset for s in cfg.seeds]
    cfg.finetune_seeds = [s + seed_offset for s in cfg.finetune_seeds]
    return cfg


def _context_from_args(argv: Sequence[str] | None, description: str) -> tuple[Any, Any]:
    """Shared argparse front end of the probe and robustness CLIs: vocabulary parameters → RunContext."""
    import argparse

    from mammoclip_kit.context import make_context

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--profile", choices=("smoke", "classroom", "paper"), default=None)
    parser.add_argument("--data-root", default=None, help="folder holding vindr/ and/or rsna/ (paper profile)")
    parser.add_argument("--output-dir", default=None, help="default: runs/<profile>")
    parser.add_argument("--checkpoint", default=None, help="released .tar or kit folder (encoder 'released')")
    parser.add_argument("--text-encoder", default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--num-workers", type=int, default=None)
    parser.add_argument("--retrain", action="store_true", help="recompute features and sweep rows")
    args = parser.parse_args(argv)
    ctx = make_context(None, profile=args.profile, data_root=args.data_root, output_dir=args.output_dir,
                       checkpoint=args.checkpoint, text_encoder=args.text_encoder, device=args.device, seed=args.seed,
                       batch_size=args.batch_size, num_workers=args.num_workers, retrain=args.retrain)
    return ctx, args


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mammoclip_kit.eval.probe --profile paper --data-root DATA --checkpoint b5.tar --text-encoder BERT``

    Runs the profile's data-efficiency sweep (notebook 06 without the narrative): CSV at
    ``<output>/sweeps/data_efficiency.csv`` (resumable), figure at ``<output>/figures/06_data_efficiency.png``.
    """
    from mammoclip_kit.env import seed_everything

    ctx, _ = _context_from_args(argv, "Data-efficiency sweep: linear probes and fine-tunes at label fractions.")
    seed_everything(ctx.seed)
    settings = ctx.section("data_efficiency")
    cfg = sweep_cfg_from_settings(settings)
    if ctx.params.get("batch_size") is not None:
        cfg.batch_size = cfg.finetune.batch_size = int(ctx.params["batch_size"])
    workers = int(ctx.param("num_workers", default=0) or 0)
    cfg.finetune.num_workers = workers
    tables = load_task_tables(ctx, cfg.tasks, settings.get("max_train_patients"), seed=ctx.seed,
                              test_fold=cfg.rsna_test_fold, train_folds=cfg.rsna_train_folds)
    encoders = encoder_specs(ctx, settings.get("encoders", ["random", "mammoclip"]),
                             random_preset=settings.get("random_preset"),
                             imagenet_weights=settings.get("imagenet_weights"))
    start = time.perf_counter()
    results = run_sweep(encoders, tables, cfg, root=ctx.output_dir, cache_dir=ctx.cache_dir,
                        csv_path=ctx.output_dir / "sweeps" / "data_efficiency.csv", device=ctx.device,
                        num_workers=workers, retrain=ctx.retrain, checkpoint_root=ctx.checkpoint_dir("finetune"))
    print(f"sweep finished in {time.perf_counter() - start:.1f} s: {results.attrs['timing']}")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(sweep_table(results, metrics=["auc", "balanced_accuracy", "accuracy"]))
    plot_sweep(results, path=ctx.figures_dir / "06_data_efficiency.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
