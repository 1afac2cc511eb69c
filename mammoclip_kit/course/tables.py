"""The kit's numbers laid out as the paper's tables, next to the paper's own numbers (notebook 10).

Inputs are the metrics each notebook wrote with ``ctx.write_metrics`` — merged by the runner into
``<output_dir>/summary.json`` — and the paper's numbers of :mod:`mammoclip_kit.course.paper_results`. Every table carries two
labels, so that nobody mistakes cohort numbers for paper numbers: the kit's ("kit, classroom profile, embedded
cohort (classroom)") and the paper's ("reported by the paper, VinDr-Mammo"). A notebook that did not run gives a table
whose kit side is ``None`` with the reason.

Each notebook's metrics record the checkpoint it evaluated (``RunContext.write_metrics``: path, kind and a 12-hex
SHA-256, :func:`mammoclip_kit.artifacts.checkpoint_identity`); the kit label of a table names it. When the notebooks
behind the tables used different checkpoints (e.g. notebook 05 rerun with a released ``.tar``, or notebook 04 retrained
in between), :func:`checkpoint_warning` says which notebook used which, and :func:`all_tables` adds a ``checkpoint``
column to every kit table, so that no row is read as coming from the same model as its neighbours.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from mammoclip_kit.artifacts import describe_checkpoint
from mammoclip_kit.course.paper_results import PAPER_LABEL, PAPER_TABLES, paper_table

#: notebook stems whose metrics feed the tables
NOTEBOOKS = {
    "zero_shot": "05_zero_shot_and_retrieval",
    "data_efficiency": "06_data_efficiency",
    "detection": "07_localization",
    "robustness": "08_robustness",
    "factor": "09_mammo_factor",
}

#: probe task → (paper table name, metric the paper reports, data named by the paper label)
PROBE_TASKS = {
    "mass": ("VinDr mass (AUC, image level)", "auc", "VinDr-Mammo"),
    "calcification": ("VinDr suspicious calcification (AUC, image level)", "auc", "VinDr-Mammo"),
    "density": ("VinDr density (accuracy, 4 classes)", "accuracy", "VinDr-Mammo"),
    "cancer": ("RSNA malignancy (AUC, breast level)", "auc", "RSNA"),
}

#: zero-shot column → (key written by notebook 05, paper table it comes from)
ZERO_SHOT = {
    "VinDr mass AUC": ("vindr_mass_auc", "VinDr mass (AUC, image level)"),
    "VinDr calcification AUC": ("vindr_suspicious_calcification_auc",
                                "VinDr suspicious calcification (AUC, image level)"),
    "VinDr density accuracy": ("vindr_density_accuracy", "VinDr density (accuracy, 4 classes)"),
    "RSNA malignancy AUC (breast)": ("rsna_malignancy_auc", "RSNA malignancy (AUC, breast level)"),
}


@dataclass
class TableBlock:
    """One paper table: the kit's side (``None`` when its notebook did not run) and the paper's side."""

    title: str
    kit: pd.DataFrame | None
    paper: pd.DataFrame | None
    kit_label: str
    paper_label: str
    note: str = ""

    @property
    def kit_cells(self) -> int:
        """Number of filled (non-missing) kit cells (the ``checkpoint`` column is a label, not a cell)."""
        if self.kit is None:
            return 0
        return int(self.kit.drop(columns=["checkpoint"], errors="ignore").notna().to_numpy().sum())


# ----------------------------------------------------------------------------------------------------------------------
# Reading


def load_summary(output_dir: str | Path) -> dict[str, Any]:
    """``summary.json`` of a run folder, refreshed with the per-notebook metrics files under ``metrics/``.

    The runner writes ``summary.json`` after the whole sequence, so while notebook 10 runs it still describes the
    previous run; the metrics files are newer and win. Returns ``{"profile", "notebooks": {stem: {"metrics", "data",
    "status"}}}`` (empty ``notebooks`` when nothing was run).
    """
    output_dir = Path(output_dir)
    summary: dict[str, Any] = {"profile": None, "notebooks": {}}
    path = output_dir / "summary.json"
    if path.is_file():
        loaded = json.loads(path.read_text())
        if not isinstance(loaded, dict) or not isinstance(loaded.get("notebooks", {}), dict):
            raise ValueError(f"{path}: expected an object with a 'notebooks' mapping")
        summary.update(loaded)
        summary["notebooks"] = dict(loaded.get("notebooks") or {})
    for metrics_file in sorted((output_dir / "metrics").glob("*.json")):
        payload = json.loads(metrics_file.read_text())
        stem = payload.get("notebook") or metrics_file.stem
        entry = dict(summary["notebooks"].get(stem) or {})
        entry.update({"metrics": payload.get("metrics", {}), "data": payload.get("data_root"),
                      "checkpoint": payload.get("checkpoint")})
        entry.setdefault("status", "ok")
        summary["notebooks"][stem] = entry
        summary["profile"] = summary.get("profile") or payload.get("profile")
    return summary


#: Runner status of a notebook that ran to the end but left out inputs missing on disk (its numbers are used, labelled).
MISSING_INPUTS = "missing inputs"
_USABLE = (None, "ok", MISSING_INPUTS)


def _entry(summary: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    entry = (summary.get("notebooks") or {}).get(NOTEBOOKS[key])
    if not entry or entry.get("status") not in _USABLE or not entry.get("metrics"):
        return None
    return entry


def kit_label(summary: Mapping[str, Any], key: str) -> str:
    """"kit, <profile> profile, <data>" for the notebook behind table ``key`` (or why it is missing)."""
    entry = (summary.get("notebooks") or {}).get(NOTEBOOKS[key])
    profile = summary.get("profile") or "unknown"
    status = (entry or {}).get("status")
    if entry is None or not entry.get("metrics") or status not in _USABLE:
        why = f"status {status}" if status and status != "ok" else "not run"
        return f"kit, {profile} profile: {NOTEBOOKS[key]} {why}"
    data = entry.get("data") or "unknown data"
    checkpoint = entry.get("checkpoint")
    used = f", checkpoint {describe_checkpoint(checkpoint)}" if checkpoint else ""
    inputs = " (inputs missing on disk were left out)" if status == MISSING_INPUTS else ""
    return f"kit, {profile} profile, {data}{used}{inputs}"


def checkpoint_label(summary: Mapping[str, Any], notebook: str) -> str:
    """The checkpoint a notebook's metrics record (``name (kind, sha256 …)``), or why there is none."""
    entry = (summary.get("notebooks") or {}).get(notebook) or {}
    if not entry.get("metrics"):
        return "not run"
    return describe_checkpoint(entry.get("checkpoint")) if entry.get("checkpoint") else "not recorded"


def checkpoints_used(summary: Mapping[str, Any]) -> dict[str, str]:
    """``{notebook: checkpoint label}`` for the notebooks behind the tables that have metrics."""
    return {stem: checkpoint_label(summary, stem) for stem in NOTEBOOKS.values()
            if ((summary.get("notebooks") or {}).get(stem) or {}).get("metrics")}


def checkpoint_warning(summary: Mapping[str, Any]) -> str | None:
    """A warning listing which notebook used which checkpoint when the tables' notebooks used more than one (a
    notebook that recorded none counts as another one: nobody can tell); None when they all used the same."""
    used = checkpoints_used(summary)
    if len(set(used.values())) <= 1:
        return None
    return ("WARNING: these tables mix results of different checkpoints; compare rows across tables with care:\n"
            + "\n".join(f"  {notebook}: {label}" for notebook, label in used.items()))


def _number(value: Any) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if number != number else number


def _paper(names: list[str], columns: list[str] | None = None) -> pd.DataFrame:
    frame = pd.concat([paper_table(n) for n in names], axis=1) if len(names) > 1 else paper_table(names[0])
    return frame[columns] if columns is not None else frame


# ----------------------------------------------------------------------------------------------------------------------
# Tables


def zero_shot_table(summary: Mapping[str, Any]) -> TableBlock:
    """Zero-shot AUC / accuracy per task: the kit's model under the paper's and the kit's prompt protocols."""
    paper = pd.DataFrame({column: paper_table(name)["zero-shot"] for column, (_, name) in ZERO_SHOT.items()})
    paper.index.name = f"model ({PAPER_LABEL})"
    entry = _entry(summary, "zero_shot")
    kit = None
    if entry is not None:
        metrics = entry["metrics"]
        rows = {}
        for protocol, label in (("paper_protocol", "paper prompts"), ("kit_protocol", "kit prompt ensembles")):
            found = metrics.get(protocol) or {}
            rows[f"{metrics.get('model', 'kit model')} · {label}"] = [_number(found.get(k)) for k, _ in
                                                                     ZERO_SHOT.values()]
        kit = pd.DataFrame.from_dict(rows, orient="index", columns=list(ZERO_SHOT))
        kit.index.name = "model (kit)"
    return TableBlock("Zero-shot classification", kit, paper, kit_label(summary, "zero_shot"),
                      f"{PAPER_LABEL}, VinDr-Mammo test split / RSNA fold 0")


def probe_table(summary: Mapping[str, Any], task: str) -> TableBlock:
    """Linear probe (LP) and fine-tune (FT) by label fraction for one task, as the paper's figure columns."""
    if task not in PROBE_TASKS:
        raise ValueError(f"probe_table: unknown task {task!r}; known: {sorted(PROBE_TASKS)}")
    name, metric, data = PROBE_TASKS[task]
    paper = _paper([name])
    entry = _entry(summary, "data_efficiency")
    kit = None
    if entry is not None:
        records = [r for r in entry["metrics"].get("table") or [] if r.get("task") == task and r.get("metric") == metric]
        if records:
            frame = pd.DataFrame(records)
            frame["column"] = frame["method"].map({"linear_probe": "LP", "finetune": "FT"}).fillna(frame["method"]) \
                + " " + frame["budget"].astype(str)
            kit = frame.pivot_table(index="encoder", columns="column", values="value", aggfunc="mean")
            ordered = [c for c in paper.columns if c in kit.columns] + sorted(c for c in kit.columns
                                                                             if c not in paper.columns)
            kit = kit[ordered]
            kit.columns.name = None
            kit.index.name = f"encoder (kit, {metric})"
    note = "" if kit is not None or entry is None else f"06_data_efficiency ran without the {task} task"
    return TableBlock(f"{name.split(' (')[0]}: linear probe and fine-tune by label fraction", kit, paper,
                      kit_label(summary, "data_efficiency"), f"{PAPER_LABEL}, {data}", note)


def detection_table(summary: Mapping[str, Any], finding: str = "Mass") -> TableBlock:
    """Supervised localisation (RetinaNet on the image tower), VOC mAP@0.5, frozen / fine-tuned encoders."""
    short = {"Mass": "mass", "Suspicious_Calcification": "calcification"}.get(finding, finding.lower())
    paper_name = f"VinDr localization, {short} (RetinaNet mAP@0.5)"
    paper = _paper([paper_name])
    entry = _entry(summary, "detection")
    kit = None
    if entry is not None:
        prefix = f"{finding.lower()}_"
        rows: dict[str, dict[str, float | None]] = {}
        for key, value in entry["metrics"].items():
            if not (key.startswith(prefix) and key.endswith("_voc_map50")):
                continue
            encoder, _, mode = key[len(prefix):-len("_voc_map50")].rpartition("_")
            column = {"frozen": "frozen 100%", "finetune": "FT 100%"}.get(mode, mode)
            rows.setdefault(encoder, {})[column] = _number(value)
        if rows:
            kit = pd.DataFrame.from_dict(rows, orient="index")
            kit = kit[[c for c in paper.columns if c in kit.columns] + [c for c in kit.columns if c not in paper.columns]]
            kit.index.name = "encoder (kit, VOC mAP@0.5)"
    note = "" if kit is not None or entry is None else f"07_localization ran without {finding}"
    return TableBlock(f"Supervised localization, {short} (RetinaNet)", kit, paper, kit_label(summary, "detection"),
                      f"{PAPER_LABEL}, VinDr-Mammo images with a {short} box", note)


def factor_table(summary: Mapping[str, Any]) -> TableBlock:
    """Mammo-FActOR weak localisation, mAP at IoU 0.25 / 0.5 (+ pointing game), FActOR and the Grad-CAM baseline."""
    paper = _paper(["Mammo-FActOR weak localization (mAP)"])
    entry = _entry(summary, "factor")
    kit = None
    if entry is not None:
        metrics = entry["metrics"]
        columns = {"mass @0.25": "mass_map25", "mass @0.5": "mass_map50", "calc @0.25": "calc_map25",
                   "calc @0.5": "calc_map50", "mass pointing": "mass_pointing", "calc pointing": "calc_pointing"}
        rows = {f"{metrics.get('model', 'kit model')} · FActOR": {c: _number(metrics.get(k)) for c, k in
                                                                  columns.items()},
                "same model · Grad-CAM": {c: _number(metrics.get(f"gradcam_{k}")) for c, k in columns.items()}}
        # the ceilings notebook 09 measures on FActOR's heatmap grid (an earlier stage's map, or the stitched last map,
        # when it used one): mass only, boxes used
        ceiling = metrics.get("ceiling") or {}
        grid_key = next((g for g in ("fine", "stitched") if f"oracle_map25_{g}" in ceiling), "tower")
        grid = "×".join(str(v) for v in metrics.get("grid") or []) or "tower"
        for label, key in (("box oracle", "oracle_map25"), ("box-supervised channel weights", "supervised_map25")):
            if f"{key}_{grid_key}" in ceiling:
                pointing = ceiling.get(f"{key.split('_')[0]}_pointing_{grid_key}")
                rows[f"ceiling · {label} ({grid} grid, uses boxes)"] = {
                    "mass @0.25": _number(ceiling[f"{key}_{grid_key}"]), "mass pointing": _number(pointing)}
        kit = pd.DataFrame.from_dict(rows, orient="index")
        kit.index.name = "method (kit)"
    return TableBlock("Mammo-FActOR weakly supervised localization", kit, paper, kit_label(summary, "factor"),
                      f"{PAPER_LABEL}, VinDr-Mammo test images with a box")


def robustness_table(summary: Mapping[str, Any]) -> TableBlock:
    """Drop of the main metric at the strongest severity of each shift (clean − shifted), per task and encoder.

    The paper states robustness qualitatively and prints no table to compare with, so the paper side is ``None``.
    """
    entry = _entry(summary, "robustness")
    kit = None
    if entry is not None:
        records = entry["metrics"].get("drops_at_max_severity") or []
        if records:
            frame = pd.DataFrame(records)
            kit = frame.pivot_table(index=["task", "encoder"], columns="shift", values="drop", aggfunc="mean")
            kit.columns.name = "drop (clean − shifted; positive = worse)"
    return TableBlock("Robustness: metric drop at the strongest shift", kit, None, kit_label(summary, "robustness"),
                      f"{PAPER_LABEL}: no numeric robustness table (a qualitative claim)")


def all_tables(summary: Mapping[str, Any]) -> list[TableBlock]:
    """Every table of the paper the kit reproduces, in the paper's order, plus the robustness summary.

    When the notebooks behind them used different checkpoints (:func:`checkpoint_warning`), every kit table gets a
    first column ``checkpoint`` naming the checkpoint of its rows.
    """
    blocks = [zero_shot_table(summary)]
    blocks += [probe_table(summary, task) for task in PROBE_TASKS]
    blocks += [detection_table(summary, "Mass"), detection_table(summary, "Suspicious_Calcification"),
               factor_table(summary), robustness_table(summary)]
    if checkpoint_warning(summary) is not None:
        for block, key in zip(blocks, _BLOCK_SOURCES, strict=True):
            if block.kit is not None:
                block.kit.insert(0, "checkpoint", checkpoint_label(summary, NOTEBOOKS[key]))
    return blocks


#: The notebook behind each block of :func:`all_tables`, in its order.
_BLOCK_SOURCES = ("zero_shot", *["data_efficiency"] * len(PROBE_TASKS), "detection", "detection", "factor",
                  "robustness")


def show_block(block: TableBlock, digits: int = 3) -> None:
    """Display one table in a notebook (or print it): title, the kit side with its label, the paper side with its."""
    try:
        from IPython.display import Markdown, display
    except ImportError:  # plain Python: print
        display, Markdown = print, str
    import pandas as pd

    display(Markdown(f"### {block.title}"))
    display(Markdown(f"**{block.kit_label}**" + (f" — {block.note}" if block.note else "")))
    with pd.option_context("display.max_colwidth", None, "display.width", 250):  # whole row labels, never "en..."
        if block.kit is None:
            display(Markdown("*not run: no kit numbers for this table*"))
        else:
            display(block.kit.round(digits))
        display(Markdown(f"**{block.paper_label}**"))
        if block.paper is not None:
            display(block.paper)


def tables_metrics(blocks: list[TableBlock], summary: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What notebook 10 records: tables rendered, kit cells filled per table, why a table has no kit numbers, and
    (with ``summary``) the checkpoint of each notebook and whether they differ."""
    metrics = {"n_tables": len(blocks), "n_tables_with_kit_numbers": sum(b.kit is not None for b in blocks),
               "kit_cells": {b.title: b.kit_cells for b in blocks},
               "without_kit_numbers": {b.title: b.note or b.kit_label for b in blocks if b.kit is None}}
    if summary is not None:
        metrics["checkpoints"] = checkpoints_used(summary)
        metrics["mixed_checkpoints"] = checkpoint_warning(summary) is not None
    return metrics


__all__ = ["NOTEBOOKS", "PAPER_TABLES", "TableBlock", "all_tables", "checkpoint_label", "checkpoint_warning",
           "checkpoints_used", "detection_table", "factor_table", "kit_label", "load_summary", "probe_table",
           "robustness_table", "show_block", "tables_metrics", "zero_shot_table"]
