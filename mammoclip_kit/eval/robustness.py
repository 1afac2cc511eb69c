"""Robustness of frozen encoders under controlled shifts and vendor / site hold-out (issue 8, paper's robustness claim).

A linear probe is fitted once per (encoder, task) on *clean* training features (the data-efficiency cache of
:mod:`mammoclip_kit.eval.features` is reused, so notebook 08 costs no extra encoder pass on the clean images) and then
evaluated on test images shifted by :mod:`mammoclip_kit.data.shifts` at each severity. A second experiment holds out one
acquisition group at a time — a vendor profile of the cohort, or an RSNA ``site_id`` / ``machine_id`` in the paper
profile — training on the others and testing on the held-out group, next to the in-distribution probe trained on every
group. Results are tidy rows with bootstrap 95 % CIs, the clean value and the drop (absolute and relative).

Every encoder sees the images at its own input size unless :attr:`RobustnessConfig.image_size` is set (then printed):
the shifts act on the image the encoder receives.

Public API: :class:`RobustnessConfig`, :func:`run_shift_grid`, :func:`run_group_holdout`, :func:`attach_groups`,
:func:`plot_shift_curves`, :func:`plot_holdout`, :func:`summarise_drops`.
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
from mammoclip_kit.eval.features import cached_features, model_fingerprint
from mammoclip_kit.eval.linear_probe import LinearProbeConfig, fit_linear_probe
from mammoclip_kit.eval.tasks import (
    breast_ids_of,
    evaluate_predictions,
    get_task,
    split_for_task,
    subsample_by_patient,
    task_labels,
)

__all__ = ["ROBUSTNESS_COLUMNS", "RobustnessConfig", "attach_groups", "main", "plot_holdout", "plot_shift_curves",
           "run_group_holdout", "run_shift_grid", "summarise_drops"]

#: Columns of the tidy robustness table.
ROBUSTNESS_COLUMNS = ("encoder", "fingerprint", "experiment", "task", "metric", "shift", "severity", "parameter",
                      "group", "value", "ci_low", "ci_high", "clean_value", "drop", "relative_drop", "n_train", "n_test")


@dataclass
class RobustnessConfig(StageConfig):
    """What to shift, how hard, and how to score it (a profile's ``robustness`` section; ``linear_probe:`` gives
    :attr:`probe`; ``encoders`` and ``holdout`` are read by notebook 08 and :func:`main`). The notebook parameters
    ``seed`` and ``batch_size`` override the profile."""

    SECTION = "robustness"
    PARAMETERS = {"seed": "seed", "batch_size": "batch_size"}
    IGNORED = frozenset({"encoders", "holdout"})

    tasks: list[str] = field(default_factory=lambda: ["mass", "density"])
    shifts: dict[str, list[int]] = field(default_factory=lambda: {name: list(range(1, spec.max_severity + 1))
                                                                   for name, spec in SHIFTS.items()})
    seed: int = 0  # seed of the noise shifts, the test subset and the bootstrap
    n_boot: int = 500
    max_test_patients: int | None = None  # stratified patient subset of the test split (None = all)
    probe: LinearProbeConfig = field(default_factory=LinearProbeConfig)
    image_size: tuple[int, int] | None = None  # encoder input (H, W); None = each encoder's own input size
    batch_size: int = 16
    rsna_test_fold: int = 0
    rsna_train_folds: list[int] | None = None

    def __post_init__(self) -> None:
        if self.image_size is not None:
            self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        self.shifts = {str(k): [int(v) for v in levels] for k, levels in dict(self.shifts).items()}
        unknown = [name for name in self.shifts if name not in SHIFTS]
        if unknown:
            raise ValueError(f"robustness shifts: unknown shift(s) {unknown} (known: {', '.join(SHIFTS)})")

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

    Raises ``ValueError`` naming the first image of ``table`` that has no value in ``truth``.
    """
    if column not in truth.columns:
        raise ValueError(f"truth table: no column {column!r} (columns: {list(truth.columns)})")
    if dataset is not None and "dataset" in truth.columns:
        truth = truth[truth["dataset"] == dataset]
    lookup = truth.drop_duplicates(id_col).set_index(truth.drop_duplicates(id_col)[id_col].astype(str))[column]
    values = table[id_col].astype(str).map(lookup)
    if values.isna().any():
        row = table.index[values.isna().to_numpy()][0]
        raise ValueError(f"truth table has no {column!r} for image {table.loc[row, id_col]!r} (table row {row!r})")
    return table.assign(**{column: values.to_numpy()})


def _rows(encoder: str, fingerprint: str, experiment: str, task: Any, metrics: dict, *, shift: str, severity: int,
          parameter: float, group: str, clean: dict | None, n_train: int, n_test: int) -> list[dict[str, Any]]:
    out = []
    for name, ci in metrics.items():
        clean_value = clean[name].point if clean is not None else ci.point
        drop = clean_value - ci.point
        out.append({"encoder": encoder, "fingerprint": fingerprint, "experiment": experiment, "task": task.name,
                    "metric": name, "shift": shift, "severity": severity, "parameter": parameter, "group": group,
                    "value": ci.point, "ci_low": ci.low, "ci_high": ci.high, "clean_value": clean_value, "drop": drop,
                    "relative_drop": drop / clean_value if clean_value else float("nan"), "n_train": n_train,
                    "n_test": n_test})
    return out


def run_shift_grid(encoders: Sequence[EncoderSpec], tables: dict[str, pd.DataFrame], cfg: RobustnessConfig, *,
                   root: str | Path, cache_dir: str | Path, csv_path: str | Path | None = None, device: Any = None,
                   num_workers: int = 0, retrain: bool = False, progress: bool = True) -> pd.DataFrame:
    """Encoders × tasks × shifts × severities, with probes trained on clean data → tidy DataFrame (and CSV).

    For each encoder: clean features of each whole table (shared with the data-efficiency sweep's cache), one probe
    per task on the clean training split (all labels), the clean test score (severity 0), then the test images (or a
    stratified patient subset of them, ``cfg.max_test_patients``) re-encoded under every shift and severity — each
    shifted feature set is cached too, keyed by the shift, severity and seed. Timing is in ``result.attrs["timing"]``.
    """
    from mammoclip_kit.env import progress_bar as tqdm

    device = torch.device(device) if device is not None else torch.device("cpu")
    tasks = [get_task(t) for t in cfg.tasks]
    missing = sorted({t.table for t in tasks} - set(tables))
    if missing:
        print(f"note: no {', '.join(missing)} table; skipping tasks {[t.name for t in tasks if t.table in missing]}")
        tasks = [t for t in tasks if t.table in tables]
    rows: list[dict[str, Any]] = []
    timing = {"clean_features_seconds": 0.0, "shifted_features_seconds": 0.0, "shifted_from_cache": 0,
              "shifted_computed": 0}
    for spec in encoders:
        encoder = spec.load()
        fingerprint = model_fingerprint(encoder)
        for table_name in dict.fromkeys(t.table for t in tasks):
            table = tables[table_name]
            table_tasks = [t for t in tasks if t.table == table_name]
            clean = cached_features(encoder, table, root=root, cache_dir=cache_dir, table=table_name,
                                    image_size=cfg.image_size, batch_size=cfg.batch_size, device=device,
                                    num_workers=num_workers, retrain=retrain, progress=progress,
                                    fingerprint=fingerprint)
            timing["clean_features_seconds"] += clean.seconds
            position = pd.Series(np.arange(len(table)), index=table.index)
            train_df, test_df = split_for_task(table, table_tasks[0], test_fold=cfg.rsna_test_fold,
                                               train_folds=cfg.rsna_train_folds)
            if cfg.max_test_patients is not None and test_df["patient_id"].nunique() > cfg.max_test_patients:
                labels = task_labels(test_df, table_tasks[0])
                fraction = cfg.max_test_patients / test_df["patient_id"].nunique()
                test_df = subsample_by_patient(test_df, labels, fraction=fraction, kind=table_tasks[0].kind,
                                               seed=cfg.seed)
            probes, clean_metrics, test_info = {}, {}, {}
            for task in list(table_tasks):
                try:
                    probe = fit_linear_probe(clean.features[position[train_df.index].to_numpy()],
                                             task_labels(train_df, task), task, cfg.probe, cfg.seed)
                except ValueError as error:  # a training split with one class (tiny smoke cohorts)
                    print(f"note: {spec.name} / {task.name}: {error}; task skipped")
                    table_tasks.remove(task)
                    continue
                labels = task_labels(test_df, task)
                breast_ids = breast_ids_of(test_df) if task.level == "breast" else None
                info = (labels, test_df["patient_id"].tolist(), breast_ids)
                scores = probe.predict_scores(clean.features[position[test_df.index].to_numpy()])
                metrics = evaluate_predictions(task, labels, scores, patient_ids=info[1], breast_ids=info[2],
                                               n_boot=cfg.n_boot, seed=cfg.seed)
                probes[task.name], clean_metrics[task.name], test_info[task.name] = probe, metrics, info
                for shift in cfg.shifts:
                    rows += _rows(spec.name, fingerprint, "shift", task, metrics, shift=shift, severity=0,
                                  parameter=SHIFTS[shift].levels[0], group="all", clean=None, n_train=len(train_df),
                                  n_test=len(test_df))
            grid = [(shift, severity) for shift, severities in cfg.shifts.items() for severity in severities
                    if severity != 0]
            for shift, severity in tqdm(grid, desc=f"{spec.name} shifts", disable=not progress):
                transform = ShiftTransform(shift, int(severity), cfg.seed)
                start = time.perf_counter()
                shifted = cached_features(encoder, test_df, root=root, cache_dir=cache_dir, table=f"{table_name}-test",
                                          image_size=cfg.image_size, transform=transform, transform_key=transform.key,
                                          batch_size=cfg.batch_size, device=device, num_workers=num_workers,
                                          retrain=retrain, progress=False, fingerprint=fingerprint)
                timing["shifted_features_seconds"] += time.perf_counter() - start
                timing["shifted_from_cache" if shifted.from_cache else "shifted_computed"] += 1
                for task in table_tasks:
                    labels, patients, breast_ids = test_info[task.name]
                    metrics = evaluate_predictions(task, labels, probes[task.name].predict_scores(shifted.features),
                                                   patient_ids=patients, breast_ids=breast_ids, n_boot=cfg.n_boot,
                                                   seed=cfg.seed)
                    rows += _rows(spec.name, fingerprint, "shift", task, metrics, shift=shift, severity=int(severity),
                                  parameter=SHIFTS[shift].levels[int(severity)], group="all",
                                  clean=clean_metrics[task.name], n_train=len(train_df), n_test=len(test_df))
        del encoder
    result = pd.DataFrame(rows, columns=list(ROBUSTNESS_COLUMNS))
    result.attrs["timing"] = timing
    if csv_path is not None:
        Path(csv_path).parent.mkdir(parents=True, exist_ok=True)
        result.to_csv(csv_path, index=False)
    return result


def run_group_holdout(encoders: Sequence[EncoderSpec], table: pd.DataFrame, table_name: str, group_col: str,
                      cfg: RobustnessConfig, *, root: str | Path, cache_dir: str | Path, csv_path: str | Path | None = None,
                      device: Any = None, num_workers: int = 0, retrain: bool = False,
                      progress: bool = True) -> pd.DataFrame:
    """Leave-one-group-out: for each value ``g`` of ``group_col`` (vendor, site_id, machine_id), train the probe on the
    training images of every other group and test on the test images of ``g``; severity 0 is the in-distribution
    probe (trained on all groups) on the same test images, severity 1 the held-out probe.

    Tasks of ``cfg`` that read another table are skipped. Groups with no test image are skipped.
    """
    if group_col not in table.columns:
        raise ValueError(f"{table_name} table: no column {group_col!r} to hold out (columns: {list(table.columns)})")
    device = torch.device(device) if device is not None else torch.device("cpu")
    tasks = [t for t in (get_task(t) for t in cfg.tasks) if t.table == table_name]
    rows: list[dict[str, Any]] = []
    for spec in encoders:
        encoder = spec.load()
        fingerprint = model_fingerprint(encoder)
        features = cached_features(encoder, table, root=root, cache_dir=cache_dir, table=table_name,
                                   image_size=cfg.image_size, batch_size=cfg.batch_size, device=device,
                                   num_workers=num_workers, retrain=retrain, progress=progress,
                                   fingerprint=fingerprint).features
        position = pd.Series(np.arange(len(table)), index=table.index)
        for task in tasks:
            train_df, test_df = split_for_task(table, task, test_fold=cfg.rsna_test_fold,
                                               train_folds=cfg.rsna_train_folds)
            try:
                everyone = fit_linear_probe(features[position[train_df.index].to_numpy()],
                                            task_labels(train_df, task), task, cfg.probe, cfg.seed)
            except ValueError as error:
                print(f"note: {spec.name} / {task.name}: {error}; task skipped")
                continue
            for group in sorted(table[group_col].astype(str).unique()):
                held_test = test_df[test_df[group_col].astype(str) == group]
                others = train_df[train_df[group_col].astype(str) != group]
                if held_test.empty or others.empty:
                    continue
                labels = task_labels(held_test, task)
                breast_ids = breast_ids_of(held_test) if task.level == "breast" else None
                test_features = features[position[held_test.index].to_numpy()]
                kwargs = dict(patient_ids=held_test["patient_id"].tolist(), breast_ids=breast_ids, n_boot=cfg.n_boot,
                              seed=cfg.seed)
                inside = evaluate_predictions(task, labels, everyone.predict_scores(test_features), **kwargs)
                rows += _rows(spec.name, fingerprint, f"holdout:{group_col}", task, inside, shift=f"{group_col} hold-out",
                              severity=0, parameter=0.0, group=group, clean=None, n_train=len(train_df),
                              n_test=len(held_test))
                try:
                    held_probe = fit_linear_probe(features[position[others.index].to_numpy()],
                                                  task_labels(others, task), task, cfg.probe, cfg.seed)
                except ValueError as error:  # the other groups hold a single class: report, don't crash
                    print(f"note: {spec.name} / {task.name} / {group_col}={group}: {error}")
                    continue
                outside = evaluate_predictions(task, labels, held_probe.predict_scores(test_features), **kwargs)
                rows += _rows(spec.name, fingerprint, f"holdout:{group_col}", task, outside,
                              shift=f"{group_col} hold-out", severity=1, parameter=1.0, group=group, clean=inside,
                              n_train=len(others), n_test=len(held_test))
        del encoder
    result = pd.DataFrame(rows, columns=list(ROBUSTNESS_COLUMNS))
    if csv_path is not None:
        Path(csv_path).parent.mkdir(parents=True, exist_ok=True)
        result.to_csv(csv_path, index=False)
    return result


def summarise_drops(results: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """Per encoder × task × shift: clean value, value at the highest severity, drop, relative drop and mean drop."""
    frame = results if metric is None else results[results["metric"] == metric]
    frame = frame[frame["severity"] > 0]
    top = frame.loc[frame.groupby(["encoder", "task", "metric", "shift", "group"])["severity"].idxmax()]
    mean_drop = frame.groupby(["encoder", "task", "metric", "shift", "group"])["drop"].mean().rename("mean_drop")
    out = top.set_index(["encoder", "task", "metric", "shift", "group"])[
        ["clean_value", "severity", "value", "ci_low", "ci_high", "drop", "relative_drop"]].join(mean_drop)
    return out.reset_index()


def plot_shift_curves(results: pd.DataFrame, task: str, metric: str, path: str | Path | None = None):
    """One panel per shift: ``metric`` vs severity for each encoder, with the bootstrap 95 % CI as a band."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    frame = results[(results["experiment"] == "shift") & (results["task"] == task) & (results["metric"] == metric)]
    shifts = list(dict.fromkeys(frame["shift"]))
    columns = min(4, len(shifts))
    rows = int(np.ceil(len(shifts) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3.4 * columns, 2.9 * rows), squeeze=False, sharey=True)
    encoders = sorted(frame["encoder"].unique())
    palette = dict(zip(encoders, sns.color_palette("tab10"), strict=False))
    for ax, shift in zip(axes.ravel(), shifts, strict=False):
        part = frame[frame["shift"] == shift].sort_values("severity")
        for encoder, curve in part.groupby("encoder"):
            ax.fill_between(curve["severity"], curve["ci_low"], curve["ci_high"], alpha=0.15, color=palette[encoder])
            ax.plot(curve["severity"], curve["value"], marker="o", color=palette[encoder], label=encoder)
        ax.set_title(shift)
        ax.set_xlabel("severity")
        ax.set_xticks(sorted(part["severity"].unique()))
        if metric == "auc":
            ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    for ax in axes.ravel()[len(shifts):]:
        ax.axis("off")
    return _finish_figure(fig, axes, task, metric, path)


def _finish_figure(fig, axes, task: str, metric: str, path: str | Path | None):
    """Shared ending of the robustness figures: axis label, legend, layout, optional save."""
    axes[0, 0].set_ylabel(f"{task} {metric}")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
    return fig


def plot_holdout(results: pd.DataFrame, task: str, metric: str, path: str | Path | None = None):
    """Bars per held-out group: in-distribution vs held-out probe, one bar group per encoder, CIs as error bars."""
    import matplotlib.pyplot as plt

    frame = results[(results["experiment"].str.startswith("holdout")) & (results["task"] == task)
                    & (results["metric"] == metric)]
    groups = sorted(frame["group"].unique())
    encoders = sorted(frame["encoder"].unique())
    fig, axes = plt.subplots(1, len(groups), figsize=(3.2 * len(groups), 3.0), squeeze=False, sharey=True)
    width = 0.38
    for ax, group in zip(axes[0], groups, strict=False):
        part = frame[frame["group"] == group]
        for offset, (severity, label) in zip((-width / 2, width / 2), ((0, "all groups"), (1, "held out")),
                                             strict=False):
            values = part[part["severity"] == severity].set_index("encoder").reindex(encoders)
            err = np.vstack([values["value"] - values["ci_low"], values["ci_high"] - values["value"]])
            ax.bar(np.arange(len(encoders)) + offset, values["value"], width, yerr=err, capsize=3, label=label)
        ax.set_xticks(range(len(encoders)), encoders, rotation=30, fontsize=8)
        ax.set_title(f"test group {group}")
        if metric == "auc":
            ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    return _finish_figure(fig, axes, task, metric, path)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mammoclip_kit.eval.robustness --profile paper --data-root DATA --checkpoint b5.tar ...``

    Runs the profile's shift grid and group hold-outs (notebook 08 without the narrative); CSVs under
    ``<output>/sweeps/`` and figures under ``<output>/figures/``.
    """
    from mammoclip_kit.eval.sweep import cli_inputs

    ctx, cfg, tables, encoders, workers = cli_inputs(
        argv, "Robustness: probes trained on clean data, evaluated under shifts / hold-outs.", RobustnessConfig,
        "robustness")
    settings = ctx.section("robustness")
    results = run_shift_grid(encoders, tables, cfg, root=ctx.output_dir, cache_dir=ctx.cache_dir,
                             csv_path=ctx.output_dir / "sweeps" / "robustness_shifts.csv", device=ctx.device,
                             num_workers=workers, retrain=ctx.retrain)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(summarise_drops(results))
    for column in settings.get("holdout", []):
        for name, table in tables.items():
            if column == "vendor" and column not in table.columns and ctx.is_cohort:
                truth = pd.read_csv(ctx.data_root / "truth" / "images.csv", dtype={"image_id": str})
                table = attach_groups(table, truth, "vendor", dataset=name)
            if column in table.columns:
                held = run_group_holdout(encoders, table, name, column, cfg, root=ctx.output_dir,
                                         cache_dir=ctx.cache_dir, device=ctx.device, num_workers=workers,
                                         csv_path=ctx.output_dir / "sweeps" / f"robustness_holdout_{name}_{column}.csv")
                print(held.groupby(["task", "metric", "group", "severity"])["value"].mean().unstack())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
