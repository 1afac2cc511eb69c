"""The data-efficiency sweep: encoders × methods × tasks × label budgets × seeds, resumable, with 95 % CIs.

The paper compares how much labelled data each image encoder needs: a linear probe (LP, :mod:`.linear_probe`) on frozen
features and a fine-tune (FT, :mod:`.finetune`) of the whole tower, at 10 / 50 / 100 % of the training labels. The kit
differs on purpose in three ways: the probe is a true frozen-feature probe (features cached once per encoder), labelled
subsets are drawn by patient and stratified (:func:`mammoclip_kit.eval.tasks.subsample_by_patient`), and every number
comes with a patient-bootstrap 95 % confidence interval.

:func:`run_sweep` writes one CSV row per metric as soon as a point finishes; :class:`SweepLog` is the bookkeeping of that
file (points already done, per-image scores, the settings it was computed with), so an interrupted sweep resumes and a
sweep with other settings starts a new file. :func:`paired_comparison`, :func:`sweep_table` and :func:`plot_sweep` read
the results. CLI: ``python -m mammoclip_kit.eval.sweep --profile paper --data-root DATA --checkpoint b5.tar``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from mammoclip_kit.artifacts import Artifact
from mammoclip_kit.config import StageConfig
from mammoclip_kit.eval.encoders import EncoderSpec
from mammoclip_kit.eval.features import FeatureSet, TrunkMemo, cached_features, model_fingerprint
from mammoclip_kit.eval.finetune import FineTuneConfig, fine_tune, predict_table
from mammoclip_kit.eval.linear_probe import LinearProbeConfig, fit_linear_probe
from mammoclip_kit.eval.metrics import ConfidenceInterval, bootstrap_ci, roc_auc
from mammoclip_kit.eval.tasks import (
    TASKS,
    TaskSpec,
    breast_ids_of,
    evaluate_predictions,
    get_task,
    split_for_task,
    subsample_by_patient,
    task_labels,
)

if TYPE_CHECKING:
    from mammoclip_kit.context import RunContext

__all__ = [
    "SWEEP_KEY", "SweepConfig", "SweepLog", "cli_inputs", "context_from_args", "main", "paired_comparison", "plot_sweep",
    "run_sweep", "scores_csv_path", "sweep_table",
]


@dataclass
class SweepConfig(StageConfig):
    """What :func:`run_sweep` runs: linear probes for every encoder, fine-tunes for a few (a profile's
    ``data_efficiency`` section; its ``finetune:`` sub-section gives :attr:`finetune` and, through its ``encoders`` /
    ``fractions`` / ``seeds`` / ``tasks`` keys, the ``finetune_*`` fields; ``linear_probe:`` gives :attr:`probe`)."""

    SECTION = "data_efficiency"
    PARAMETERS = {"batch_size": "batch_size"}
    IGNORED = frozenset({"encoders", "max_train_patients", "random_preset", "imagenet_weights"})

    tasks: list[str] = field(default_factory=lambda: ["mass", "calcification", "density", "cancer"])
    fractions: list[float] = field(default_factory=lambda: [0.1, 0.5, 1.0])  # label fractions (by patient)
    shots: list[int] = field(default_factory=list)  # few-shot budgets: patients per stratum
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # subsample (and fine-tune) seeds
    probe: LinearProbeConfig = field(default_factory=LinearProbeConfig)
    finetune: FineTuneConfig = field(default_factory=FineTuneConfig)
    finetune_encoders: list[str] = field(default_factory=list)  # encoders that are also fine-tuned
    # encoders that get linear probes (None = every encoder given); the others are only fine-tuned (the classroom's
    # random tower is the paper's fine-tuned baseline; its probe would cost a feature pass)
    probe_encoders: list[str] | None = None
    finetune_fractions: list[float] = field(default_factory=lambda: [0.1])
    finetune_seeds: list[int] = field(default_factory=lambda: [0])
    finetune_tasks: list[str] | None = None  # None = all tasks
    image_size: tuple[int, int] | None = None  # features at this (H, W); None = each encoder's own input size
    batch_size: int = 16  # feature-extraction batch
    n_boot: int = 1000  # bootstrap replicates per reported metric
    rsna_test_fold: int = 0
    rsna_train_folds: list[int] | None = None  # None = every fold but the test fold
    # stages whose maps encoders with equal trunks share on a CPU (features.TrunkMemo; 0 = off): same features
    shared_trunk: int = 3

    def __post_init__(self) -> None:
        if self.image_size is not None:
            self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        if self.shared_trunk < 0:
            raise ValueError(f"data_efficiency shared_trunk must be >= 0, got {self.shared_trunk}")
        if self.probe_encoders is not None:  # "mammoclip_vindr?" (optional) names the encoder mammoclip_vindr
            self.probe_encoders = [str(name).rstrip("?") for name in self.probe_encoders]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None, where: str | None = None) -> SweepConfig:
        """A ``data_efficiency`` section → config (``linear_probe:`` and ``finetune:`` become the nested configs)."""
        values = dict(values or {})
        where = where or cls._where()
        probe = values.pop("linear_probe", None)
        finetune = dict(values.pop("finetune", None) or {})
        for key in ("encoders", "fractions", "seeds", "tasks"):
            if key in finetune:
                values[f"finetune_{key}"] = finetune[key]
        config = super().from_dict(values, where=where)
        if probe is not None:
            config.probe = LinearProbeConfig.from_dict(probe, where=f"{where}.linear_probe")
        if finetune:
            config.finetune = FineTuneConfig.from_dict(finetune, where=f"{where}.finetune")
        return config

    @classmethod
    def from_context(cls, ctx: RunContext, *, subsection: str | None = None, **overrides: Any) -> SweepConfig:
        """:meth:`StageConfig.from_context`, with the fine-tune settings also taking the vocabulary parameters
        (``batch_size``, ``max_steps``, ``num_workers``)."""
        config = super().from_context(ctx, subsection=subsection, **overrides)
        if overrides.get("finetune") is None:
            config.finetune = FineTuneConfig.from_context(ctx, subsection="finetune")
        return config

    def result_settings(self) -> dict[str, Any]:
        """The settings that change a sweep point's numbers (its key aside): a sweep CSV holds one set of them."""
        finetune = {k: v for k, v in asdict(self.finetune).items() if k not in ("num_workers", "progress")}
        return {"probe": asdict(self.probe), "finetune": finetune, "n_boot": self.n_boot,
                "image_size": self.image_size, "rsna_test_fold": self.rsna_test_fold,
                "rsna_train_folds": self.rsna_train_folds}


#: Columns identifying one sweep point; a resumed sweep skips points whose key is already in the CSV.
SWEEP_KEY = ("encoder", "fingerprint", "method", "task", "budget", "seed")


def scores_csv_path(csv_path: str | Path) -> Path:
    """Where :func:`run_sweep` keeps the per-image test scores of the sweep written to ``csv_path``."""
    csv_path = Path(csv_path)
    return csv_path.with_name(f"{csv_path.stem}_scores.csv")


class SweepLog:
    """The resumable files of one sweep: ``csv_path`` (one row per metric), its ``_scores.csv`` (per-image test scores
    of binary tasks) and a record of the settings (``<csv>.params.json``, :class:`mammoclip_kit.artifacts.Artifact`).

    Opening the log reads the points already done. The files start afresh with ``retrain=True`` or when the recorded
    settings differ from ``settings`` (a message names them). A binary-task point whose scores are missing (finished
    before scores were kept, or deleted) is dropped so that it is computed again. Without ``csv_path`` nothing is
    written and nothing is done.
    """

    def __init__(self, csv_path: str | Path | None, settings: Mapping[str, Any], retrain: bool = False) -> None:
        self.csv_path = Path(csv_path) if csv_path is not None else None
        self.scores_path = scores_csv_path(self.csv_path) if self.csv_path is not None else None
        self.done: pd.DataFrame | None = None
        self.keys: set[tuple[str, ...]] = set()
        if self.csv_path is None:
            return
        record = Artifact(self.csv_path, settings)
        recorded = record.recorded().get("params")
        changed = recorded is not None and recorded != record.params
        if changed and not retrain:
            print(f"{self.csv_path.name}: settings changed ({', '.join(record.differences())}); starting a new sweep")
        if retrain or changed:
            for path in (self.csv_path, self.scores_path):
                path.unlink(missing_ok=True)
        elif self.csv_path.is_file():
            self.done = pd.read_csv(self.csv_path, dtype={"encoder": str, "fingerprint": str, "method": str,
                                                          "task": str, "budget": str})
            self._drop_unscored()
            self.keys = {tuple(str(v) for v in row) for row in self.done[list(SWEEP_KEY)].to_numpy()}
        record.commit(resumable=True)

    def _drop_unscored(self) -> None:
        assert self.done is not None and self.csv_path is not None and self.scores_path is not None
        scored: set[tuple[str, ...]] = set()
        if self.scores_path.is_file():
            kept = pd.read_csv(self.scores_path, usecols=list(SWEEP_KEY), dtype=str).drop_duplicates()
            scored = {tuple(row) for row in kept.to_numpy()}
        binary = self.done["task"].map(lambda name: name in TASKS and TASKS[name].kind == "binary")
        keys = [tuple(str(v) for v in row) for row in self.done[list(SWEEP_KEY)].to_numpy()]
        stale = (binary.to_numpy() & self.done["value"].notna().to_numpy()
                 & np.array([key not in scored for key in keys], dtype=bool))
        if stale.any():
            self.done = self.done[~stale]
            self.done.to_csv(self.csv_path, index=False)

    def is_done(self, key: Sequence[Any]) -> bool:
        """True when the point with this :data:`SWEEP_KEY` tuple is already in the CSV."""
        return tuple(str(v) for v in key) in self.keys

    def append(self, rows: list[dict[str, Any]]) -> None:
        """Append finished rows to the CSV at once (a crash after this keeps them)."""
        if self.csv_path is not None and rows:
            self.csv_path.parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame(rows).to_csv(self.csv_path, mode="a", header=not self.csv_path.is_file(), index=False)

    def append_scores(self, key: Mapping[str, Any], scores: np.ndarray) -> None:
        """Append one point's test scores (``row`` = position in the task's test split)."""
        if self.scores_path is None:
            return
        self.scores_path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({**key, "row": np.arange(len(scores)), "score": np.asarray(scores, dtype=np.float64)}
                     ).to_csv(self.scores_path, mode="a", header=not self.scores_path.is_file(), index=False)

    def previous(self, encoders: Sequence[EncoderSpec], fingerprints: Sequence[str], tasks: Sequence[TaskSpec],
                 cfg: SweepConfig) -> pd.DataFrame | None:
        """Rows of earlier runs that this configuration still asks for (other encoders, tasks or budgets stay in the
        CSV but are not returned)."""
        done = self.done
        if done is None or not len(done):
            return None
        lp_budgets = {_budget_label(f, s) for f, s in _budgets(cfg)}
        ft_budgets = {_budget_label(f, None) for f in cfg.finetune_fractions}
        finetuned = [e.name for e in encoders if e.matches(cfg.finetune_encoders)]
        wanted = (done["encoder"].isin([e.name for e in encoders]) & done["fingerprint"].isin(fingerprints)
                  & done["task"].isin([t.name for t in tasks])
                  & (((done["method"] == "linear_probe") & done["budget"].isin(lp_budgets)
                      & done["seed"].isin(cfg.seeds))
                     | ((done["method"] == "finetune") & done["budget"].isin(ft_budgets)
                        & done["seed"].isin(cfg.finetune_seeds) & done["encoder"].isin(finetuned))))
        return done[wanted]


def _budgets(cfg: SweepConfig) -> list[tuple[float | None, int | None]]:
    return [(f, None) for f in cfg.fractions] + [(None, s) for s in cfg.shots]


def _budget_label(fraction: float | None, shots: int | None) -> str:
    return f"{shots}-shot" if shots is not None else f"{fraction:.0%}"


def run_sweep(encoders: Sequence[EncoderSpec], tables: dict[str, pd.DataFrame], cfg: SweepConfig, *,
              root: str | Path, cache_dir: str | Path, csv_path: str | Path | None = None, device: Any = None,
              num_workers: int = 0, retrain: bool = False, checkpoint_root: str | Path | None = None,
              progress: bool = True, trunk_memo: TrunkMemo | None = None) -> pd.DataFrame:
    """Encoders × methods × tasks × label budgets × seeds → a tidy table (one row per metric).

    ``tables`` maps a table name (``vindr``, ``rsna``) to its built table; tasks whose table is missing are skipped with
    a note. Features come from :func:`~mammoclip_kit.eval.features.cached_features` (once per encoder and table, at
    the encoder's input size unless ``cfg.image_size`` is set). With ``csv_path`` each finished point is appended at
    once and points already in the file are skipped (:class:`SweepLog`), so an interrupted sweep resumes;
    ``retrain=True`` or other settings start a new file. Timing (feature extraction, probes, fine-tunes, cache hits) is
    in ``result.attrs["timing"]``. Encoders with equal trunks share its maps (``trunk_memo``, else a new
    :class:`~mammoclip_kit.eval.features.TrunkMemo` of ``cfg.shared_trunk`` stages): the same features, less work.

    Columns: encoder, fingerprint, method (``linear_probe`` / ``finetune``), task, budget, fraction, shots, seed,
    n_train_images, n_train_patients, n_train_positive, n_test, metric, value, ci_low, ci_high, seconds, note (why a
    value is missing: a subset with a single class). A task whose test set has a single class gets NaN AUCs.

    With ``csv_path``, the test scores of every binary-task point are appended to ``<stem>_scores.csv`` next to it
    (:data:`SWEEP_KEY` + ``row`` = position in the task's test split + ``score``): :func:`paired_comparison` reads them to
    compare two encoders on the same test images.
    """
    from mammoclip_kit.env import progress_bar as tqdm

    root, device = Path(root), torch.device(device) if device is not None else torch.device("cpu")
    log = SweepLog(csv_path, cfg.result_settings(), retrain=retrain)
    if trunk_memo is None:
        trunk_memo = TrunkMemo.create(cfg.shared_trunk)
    timing = {"features_seconds": 0.0, "features_from_cache": 0, "features_computed": 0,
              "features_compute_seconds_when_cached": 0.0, "probe_seconds": 0.0, "finetune_seconds": 0.0}
    tasks = [get_task(t) for t in cfg.tasks]
    missing = sorted({t.table for t in tasks} - set(tables))
    if missing:
        print(f"note: no {', '.join(missing)} table; skipping tasks {[t.name for t in tasks if t.table in missing]}")
        tasks = [t for t in tasks if t.table in tables]
    rows: list[dict[str, Any]] = []
    budgets = _budgets(cfg)
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
            probed = cfg.probe_encoders is None or spec.matches(cfg.probe_encoders)
            plan = [("linear_probe", f, s, seed) for f, s in budgets for seed in cfg.seeds] if probed else []
            if spec.matches(cfg.finetune_encoders) and (cfg.finetune_tasks is None or task.name in cfg.finetune_tasks):
                plan += [("finetune", f, None, seed) for f in cfg.finetune_fractions for seed in cfg.finetune_seeds]
            plan = [p for p in plan
                    if not log.is_done((spec.name, fingerprint, p[0], task.name, _budget_label(p[1], p[2]), p[3]))]
            if not plan:
                continue
            train_labels = task_labels(train_df, task, f"{task.table} table")
            test_labels = task_labels(test_df, task, f"{task.table} table")
            breast_ids = breast_ids_of(test_df) if task.level == "breast" else None
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
                                             fingerprint=fingerprint, trunk_memo=trunk_memo)
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
                    scores = predict_table(result.model, test_df, task, root=root, image_size=result.image_size,
                                           batch_size=cfg.batch_size, device=device, num_workers=num_workers)
                    del result
                if not note:
                    metrics = evaluate_predictions(task, test_labels, scores,
                                                   patient_ids=test_df["patient_id"].tolist(), breast_ids=breast_ids,
                                                   n_boot=cfg.n_boot, seed=seed)
                seconds = time.perf_counter() - start
                timing["probe_seconds" if method == "linear_probe" else "finetune_seconds"] += seconds
                key = {"encoder": spec.name, "fingerprint": fingerprint, "method": method, "task": task.name,
                       "budget": _budget_label(fraction, shots), "seed": seed}
                if not note and task.kind == "binary":
                    log.append_scores(key, scores)
                new_rows = [{**{k: key[k] for k in SWEEP_KEY[:5]}, "fraction": fraction, "shots": shots, "seed": seed,
                             "n_train_images": len(subset),
                             "n_train_patients": subset["patient_id"].nunique(),
                             "n_train_positive": int((sub_labels == 1).sum()) if task.kind == "binary" else None,
                             "n_test": len(test_df), "metric": name, "value": ci.point, "ci_low": ci.low,
                             "ci_high": ci.high, "seconds": seconds, "note": note}
                            for name, ci in metrics.items()]
                rows.extend(new_rows)
                log.append(new_rows)
        del encoder
    new = pd.DataFrame(rows, columns=_COLUMNS) if rows else pd.DataFrame(columns=_COLUMNS)
    done = log.previous(encoders, fingerprints, tasks, cfg)
    parts = [d for d in (done, new) if d is not None and len(d)]
    result = pd.concat(parts, ignore_index=True) if parts else new
    result.attrs["timing"] = timing
    return result


_COLUMNS = [*SWEEP_KEY[:5], "fraction", "shots", "seed", "n_train_images", "n_train_patients", "n_train_positive",
            "n_test", "metric", "value", "ci_low", "ci_high", "seconds", "note"]


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


def context_from_args(argv: Sequence[str] | None, description: str) -> tuple[RunContext, Any]:
    """Shared argparse front end of the probe and robustness CLIs: vocabulary parameters → RunContext."""
    import argparse

    from mammoclip_kit.context import make_context
    from mammoclip_kit.env import tune_cpu_allocator

    tune_cpu_allocator()  # as the notebooks do (same numbers, faster CPU steps)
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


def cli_inputs(argv: Sequence[str] | None, description: str, config_class: type, section: str) -> tuple:
    """What an evaluation CLI starts from: ``(ctx, config, task tables, encoders, workers)``, seeded.

    ``config_class`` is the stage's :class:`~mammoclip_kit.config.StageConfig` (it names ``tasks`` and the RSNA folds);
    the encoder list comes from the profile's ``section``, the random preset, ImageNet weights and the cap on training
    patients from its ``data_efficiency`` section (shared by every probe-based stage).
    """
    from mammoclip_kit.env import seed_everything
    from mammoclip_kit.eval.encoders import create_encoders
    from mammoclip_kit.eval.tasks import load_task_tables

    ctx, _ = context_from_args(argv, description)
    seed_everything(ctx.seed)
    settings, efficiency = ctx.section(section), ctx.section("data_efficiency")
    cfg = config_class.from_context(ctx)
    workers = int(ctx.param("num_workers", default=0) or 0)
    tables = load_task_tables(ctx, cfg.tasks, efficiency.get("max_train_patients"), seed=ctx.seed,
                              test_fold=cfg.rsna_test_fold, train_folds=cfg.rsna_train_folds)
    encoders = create_encoders(ctx, settings.get("encoders", ["random", "mammoclip"]),
                               random_preset=efficiency.get("random_preset"),
                               imagenet_weights=efficiency.get("imagenet_weights"))
    return ctx, cfg, tables, encoders, workers


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mammoclip_kit.eval.sweep --profile paper --data-root DATA --checkpoint b5.tar --text-encoder BERT``

    Runs the profile's data-efficiency sweep (notebook 06 without the narrative): CSV at
    ``<output>/sweeps/data_efficiency.csv`` (resumable), figure at ``<output>/figures/06_data_efficiency.png``.
    """
    ctx, cfg, tables, encoders, workers = cli_inputs(
        argv, "Data-efficiency sweep: linear probes and fine-tunes at label fractions.", SweepConfig, "data_efficiency")
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
