"""The paper's zero-shot evaluation with confidence intervals.

Tasks, as in the paper:

* VinDr-Mammo test split, image level: mass AUC, suspicious-calcification AUC, and 4-class density accuracy (plus balanced
  accuracy and macro-F1, because about three quarters of VinDr test images are density C).
* RSNA, breast level: malignancy AUC of the image probabilities averaged per patient × laterality (``breast_id``).

Every metric comes with a 95 % percentile-bootstrap interval that resamples whole patients. Inputs are the built tables
(``ctx.tables_dir/vindr_images.csv`` and ``rsna_images.csv``, PNG paths relative to ``ctx.output_dir``; DESIGN.md).
Prompts are the kit's prompt ensembles (:data:`mammoclip_kit.data.text.PROMPTS`) or the paper's single prompts
(:data:`~mammoclip_kit.data.text.PAPER_PROMPTS`, which have no density prompts: density then uses the kit's).

Differences from the reference, on purpose: the reference scored one row per *finding* of ``vindr_detection_v1_folds.csv``
(images with several findings counted several times); the kit scores each image once. The reference reported no
intervals.

CLI: ``python -m mammoclip_kit.eval.zero_shot --profile classroom [--checkpoint CKPT --text-encoder DIR]
[--scoring reference --prompts paper]`` prints the metrics and writes ``metrics/zero_shot.json``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from mammoclip_kit.config import StageConfig
from mammoclip_kit.eval import metrics as M

if TYPE_CHECKING:
    from mammoclip_kit.context import RunContext

__all__ = [
    "RSNA_TASKS",
    "VINDR_TASKS",
    "ZeroShotConfig",
    "ZeroShotResult",
    "compare_prompts",
    "embed_table",
    "evaluate_rsna",
    "evaluate_vindr",
    "evaluate_retrieval",
    "eval_tables",
    "load_eval_model",
    "load_prompt_sets",
    "project_2d",
    "retrieval_pairs",
    "run_zero_shot",
]

#: Zero-shot task → label column of ``vindr_images.csv`` (binary tasks).
VINDR_TASKS: dict[str, str] = {"mass": "Mass", "suspicious_calcification": "Suspicious_Calcification"}
#: Zero-shot task → label column of ``rsna_images.csv``.
RSNA_TASKS: dict[str, str] = {"malignancy": "cancer"}
#: Density classes (0–3 = BI-RADS A–D).
DENSITY_CLASSES = ("A", "B", "C", "D")


@dataclass
class ZeroShotConfig(StageConfig):
    """Settings of one zero-shot evaluation (a profile's ``zero_shot`` section; the notebook parameters ``batch_size``
    and ``seed`` override it). ``n_boot_compare``, ``retrieval_folds`` and ``retrieval_ks`` of the section are read by
    notebook 05."""

    SECTION = "zero_shot"
    PARAMETERS = {"batch_size": "batch_size", "seed": "seed"}
    IGNORED = frozenset({"n_boot_compare", "retrieval_folds", "retrieval_ks"})

    prompts: str = "kit"  # "kit" (ensembles of data.text.PROMPTS) or "paper" (the paper's single prompts)
    scoring: str = "ensemble"  # "ensemble" (logit scale) or "reference" (raw cosine softmax, first prompt)
    vindr_split: str = "test"  # VinDr rows evaluated (split column)
    rsna_fold: int | None = 0  # RSNA fold evaluated (the paper's code used fold 0); None = all rows
    n_boot: int = 1000  # bootstrap replicates per metric
    alpha: float = 0.05  # 1 - confidence level
    batch_size: int = 16  # images per embedding batch
    max_images: int | None = None  # cap per dataset (first rows after selection), for quick runs
    seed: int = 0  # bootstrap seed

    def __post_init__(self) -> None:
        if self.prompts not in ("kit", "paper"):
            raise ValueError(f"zero_shot.prompts must be 'kit' or 'paper', got {self.prompts!r}")
        if self.scoring not in ("ensemble", "reference"):
            raise ValueError(f"zero_shot.scoring must be 'ensemble' or 'reference', got {self.scoring!r}")


@dataclass
class ZeroShotResult:
    """Metrics (flat, JSON-ready), per-image predictions and image embeddings per dataset."""

    metrics: dict[str, Any] = field(default_factory=dict)
    predictions: dict[str, pd.DataFrame] = field(default_factory=dict)
    embeddings: dict[str, torch.Tensor] = field(default_factory=dict)


def load_prompt_sets(name: str = "kit") -> dict[str, Any]:
    """The prompt sets ``"kit"`` (:data:`~mammoclip_kit.data.text.PROMPTS`) or ``"paper"`` (+ the kit's density)."""
    from mammoclip_kit.data import text

    if name == "kit":
        return dict(text.PROMPTS)
    if name == "paper":
        prompts = dict(text.PAPER_PROMPTS)
        prompts.setdefault("density", text.PROMPTS["density"])
        return prompts
    raise ValueError(f"unknown prompt set {name!r}: expected 'kit' or 'paper'")


def _require_columns(table: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise KeyError(f"{name}: missing column(s) {missing}; columns present: {list(table.columns)}")


def embed_table(table: pd.DataFrame, model: Any, root: str | Path, batch_size: int = 16, device: Any = None,
                progress: bool = True, path_col: str = "png_path") -> torch.Tensor:
    """Image embeddings of the rows of a built table (``path_col`` relative to ``root``, usually ``ctx.output_dir``)."""
    from mammoclip_kit.inference import embed_images

    _require_columns(table, [path_col], "embed_table")
    root = Path(root)
    paths = []
    for row, value in zip(table.index, table[path_col], strict=True):
        if not isinstance(value, str) or not value:
            raise ValueError(f"embed_table: row {row!r} has no {path_col} ({value!r})")
        path = Path(value) if Path(value).is_absolute() else root / value
        if not path.is_file():
            raise FileNotFoundError(f"embed_table: row {row!r}: {path_col} {value!r} does not exist under the output "
                                    f"folder; rebuild the PNGs (ensure_pngs) and tables (ensure_tables)")
        paths.append(path)
    return embed_images(paths, model, batch_size=batch_size, device=device, progress=progress)


def _binary_metrics(prefix: str, labels: np.ndarray, scores: np.ndarray, groups: np.ndarray,
                    config: ZeroShotConfig) -> dict[str, Any]:
    ci = M.bootstrap_ci(M.roc_auc, labels, scores, n_boot=config.n_boot, seed=config.seed, groups=groups,
                        alpha=config.alpha)
    out = ci.as_dict(f"{prefix}_auc")
    out[f"{prefix}_n"] = int(len(labels))
    out[f"{prefix}_n_positive"] = int(labels.sum())
    return out


def _select(table: pd.DataFrame, column: str, value: Any, name: str) -> pd.DataFrame:
    if value is None:
        return table
    _require_columns(table, [column], name)
    selected = table[table[column].astype(str) == str(value)]
    if selected.empty:
        raise ValueError(f"{name}: no rows with {column} == {value!r} (values present: "
                         f"{sorted(table[column].astype(str).unique())[:10]})")
    return selected


def evaluate_vindr(table: pd.DataFrame, model: Any, image_emb: torch.Tensor, prompts: Mapping[str, Any],
                   config: ZeroShotConfig) -> tuple[dict[str, Any], pd.DataFrame]:
    """VinDr mass / calcification AUC and density metrics at image level on ``table``'s rows (already selected).

    ``image_emb`` holds one embedding per row of ``table``. Returns the metrics (``vindr_*`` keys) and the table's
    identifying columns with the predicted probabilities.
    """
    from mammoclip_kit.inference import zero_shot

    _require_columns(table, ["patient_id", *VINDR_TASKS.values()], "vindr_images.csv")
    if len(image_emb) != len(table):
        raise ValueError(f"evaluate_vindr: {len(image_emb)} embeddings for {len(table)} rows")
    tasks = {t: prompts[t] for t in (*VINDR_TASKS, "density") if t in prompts}
    probs = zero_shot(image_emb, model, tasks, scoring=config.scoring, index=table.index)
    groups = table["patient_id"].astype(str).to_numpy()
    out: dict[str, Any] = {"vindr_n_images": int(len(table)), "vindr_n_patients": int(len(set(groups)))}
    for task, column in VINDR_TASKS.items():
        if task in probs:
            labels = table[column].to_numpy().astype(int)
            out.update(_binary_metrics(f"vindr_{task}", labels, probs[task].to_numpy(), groups, config))
    if "density_pred" in probs and "density" in table.columns:
        known = table["density"].notna().to_numpy()
        y_true = table["density"].to_numpy()[known].astype(int)
        y_pred = probs["density_pred"].to_numpy()[known].astype(int)
        dens = M.density_metrics(y_true, y_pred, labels=list(range(len(DENSITY_CLASSES))))
        accuracy = M.bootstrap_ci(lambda t, p: float(np.mean(t == p)), y_true, y_pred, n_boot=config.n_boot,
                                  seed=config.seed, groups=groups[known], alpha=config.alpha)
        out.update(accuracy.as_dict("vindr_density_accuracy"))
        out["vindr_density_balanced_accuracy"] = dens["balanced_accuracy"]
        out["vindr_density_macro_f1"] = dens["macro_f1"]
        out["vindr_density_majority_rate"] = float(np.bincount(y_true).max() / len(y_true))
        out["vindr_density_n"] = int(known.sum())
    keep = [c for c in ("patient_id", "image_id", "laterality", "view", "density", *VINDR_TASKS.values())
            if c in table.columns]
    return out, pd.concat([table[keep], probs], axis=1)


def evaluate_rsna(table: pd.DataFrame, model: Any, image_emb: torch.Tensor, prompts: Mapping[str, Any],
                  config: ZeroShotConfig) -> tuple[dict[str, Any], pd.DataFrame]:
    """RSNA malignancy AUC at breast level (mean image probability per ``breast_id``), and at image level for reference.

    The bootstrap resamples patients (all breasts of a patient together).
    """
    from mammoclip_kit.inference import zero_shot

    _require_columns(table, ["patient_id", "cancer"], "rsna_images.csv")
    if len(image_emb) != len(table):
        raise ValueError(f"evaluate_rsna: {len(image_emb)} embeddings for {len(table)} rows")
    table = table.copy()
    if "breast_id" not in table.columns:
        _require_columns(table, ["laterality"], "rsna_images.csv")
        table["breast_id"] = table["patient_id"].astype(str) + "_" + table["laterality"].astype(str)
    probs = zero_shot(image_emb, model, {"malignancy": prompts["malignancy"]}, scoring=config.scoring,
                      index=table.index)
    table["malignancy"] = probs["malignancy"]
    breasts = M.breast_level_scores(table, "malignancy", "cancer", "breast_id")
    patient_of = table.groupby("breast_id")["patient_id"].first().astype(str)
    groups = patient_of.loc[breasts["breast_id"]].to_numpy()
    out: dict[str, Any] = {"rsna_n_images": int(len(table)), "rsna_n_breasts": int(len(breasts))}
    out.update(_binary_metrics("rsna_malignancy", breasts["cancer"].to_numpy().astype(int),
                               breasts["malignancy"].to_numpy(), groups, config))
    out["rsna_malignancy_image_auc"] = M.roc_auc(table["cancer"].to_numpy().astype(int),
                                                 table["malignancy"].to_numpy(), warn=False)
    keep = [c for c in ("patient_id", "image_id", "laterality", "view", "breast_id", "cancer", "malignancy")
            if c in table.columns]
    return out, table[keep]


def compare_prompts(image_emb: torch.Tensor, labels: Sequence[int], model: Any, variants: Mapping[str, Any],
                    scorings: Sequence[str] = ("reference", "ensemble"), n_boot: int = 200, seed: int = 0,
                    groups: Sequence[Any] | None = None) -> pd.DataFrame:
    """AUC of one binary task under several prompt wordings / ensembles and scoring rules.

    ``variants`` maps a display name to that task's prompts (``(negative prompts, positive prompts)``). Returns one row
    per variant × scoring with ``auc``, ``ci_low``, ``ci_high`` and the prompts used (the first prompt of each class
    only for ``"reference"`` scoring, which ignores the rest).
    """
    from mammoclip_kit.inference import normalize_prompts, zero_shot

    labels = np.asarray(labels).astype(int)
    rows = []
    for name, classes in variants.items():
        parsed = normalize_prompts({"task": classes})["task"]
        for scoring in scorings:
            scores = zero_shot(image_emb, model, {"task": classes}, scoring=scoring)["task"].to_numpy()
            ci = M.bootstrap_ci(M.roc_auc, labels, scores, n_boot=n_boot, seed=seed, groups=groups)
            used = parsed if scoring == "ensemble" else [c[:1] for c in parsed]
            rows.append({"variant": name, "scoring": scoring, "n_prompts": sum(len(c) for c in used),
                         "auc": ci.point, "ci_low": ci.low, "ci_high": ci.high,
                         "negative": " | ".join(used[0]), "positive": " | ".join(used[1])})
    return pd.DataFrame(rows)


def _limit(table: pd.DataFrame, max_images: int | None) -> pd.DataFrame:
    return table if max_images is None else table.iloc[: int(max_images)]


def eval_tables(ctx: RunContext, config: ZeroShotConfig | None = None, datasets: Sequence[str] = ("vindr", "rsna"),
                build_tables: bool = True) -> dict[str, pd.DataFrame]:
    """The evaluation rows of each dataset whose table exists: VinDr ``split == config.vindr_split``, RSNA
    ``fold == config.rsna_fold`` (capped at ``config.max_images``), index reset.

    With ``build_tables`` the tables are first made current with :func:`mammoclip_kit.data.records.ensure_tables`
    (built when missing or stale). Datasets without a table (e.g. real data with VinDr only) are left out.
    """
    from mammoclip_kit.data.records import ensure_tables, read_table

    config = config or ZeroShotConfig.from_context(ctx)
    if build_tables:
        ensure_tables(ctx)
    out: dict[str, pd.DataFrame] = {}
    for name in datasets:
        if name not in ("vindr", "rsna"):
            raise ValueError(f"unknown dataset {name!r}: expected 'vindr' or 'rsna'")
        path = Path(ctx.tables_dir) / f"{name}_images.csv"
        if not path.is_file():
            continue
        table = read_table(path)
        if name == "vindr":
            table = _select(table, "split", config.vindr_split, str(path))
        else:
            table = _select(table, "fold", config.rsna_fold, str(path))
        out[name] = _limit(table, config.max_images).reset_index(drop=True)
    return out


def run_zero_shot(ctx: RunContext, model: Any, config: ZeroShotConfig | None = None,
                  datasets: Sequence[str] = ("vindr", "rsna"), progress: bool = True,
                  build_tables: bool = True, prompts: Mapping[str, Any] | None = None) -> ZeroShotResult:
    """The full evaluation on the built tables of ``ctx`` (see :func:`eval_tables`).

    ``prompts`` overrides the prompt set named by ``config.prompts``. Returns a :class:`ZeroShotResult`; the caller
    decides where the metrics go (``ctx.write_metrics``). Raises when none of ``datasets`` has a table.
    """
    config = config or ZeroShotConfig.from_context(ctx)
    prompts = dict(prompts) if prompts is not None else load_prompt_sets(config.prompts)
    tables = eval_tables(ctx, config, datasets, build_tables)
    if not tables:
        raise FileNotFoundError(f"{ctx.tables_dir}: none of the tables {[f'{d}_images.csv' for d in datasets]} exist; "
                                "data_root needs vindr/ and/or rsna/ (see README 'Real data')")
    result = ZeroShotResult(metrics={"prompts": config.prompts, "scoring": config.scoring, "n_boot": config.n_boot})
    for name, table in tables.items():
        emb = embed_table(table, model, ctx.output_dir, batch_size=config.batch_size, device=ctx.device,
                          progress=progress)
        evaluate = evaluate_vindr if name == "vindr" else evaluate_rsna
        metrics, predictions = evaluate(table, model, emb, prompts, config)
        result.metrics.update(metrics)
        result.predictions[name] = predictions
        result.embeddings[name] = emb
    return result


def load_eval_model(ctx: RunContext) -> tuple[Any, str]:
    """The model a notebook or CLI evaluates, and a one-line description of it.

    ``checkpoint`` (+ ``text_encoder``) when the user gave one (a kit folder or a released ``.tar``, loaded with
    :func:`mammoclip_kit.models.loader.load_model`); else the classroom-trained model of this profile
    (:func:`mammoclip_kit.train.ensure_pretrained`, trained when missing). The paper profile has no classroom model: it
    needs ``checkpoint``.
    """
    from mammoclip_kit.models.loader import load_model

    checkpoint = ctx.params.get("checkpoint")
    if checkpoint:
        model = load_model(checkpoint, text_encoder=ctx.params.get("text_encoder"), device=ctx.device)
        return model, f"{Path(checkpoint).name} (given checkpoint)"
    if ctx.profile == "paper":
        raise ValueError("the paper profile evaluates a released or trained checkpoint: pass checkpoint= "
                         "(a kit folder, or b2-model-best-epoch-10.tar / b5-model-best-epoch-7.tar with text_encoder=)")
    from mammoclip_kit.train import ensure_pretrained

    folder = ensure_pretrained(ctx, "mammoclip")
    return load_model(folder, device=ctx.device), f"kit {ctx.profile} model '{Path(folder).name}'"


def retrieval_pairs(table: pd.DataFrame, folds: Sequence[int] | None = None,
                    views: Sequence[str] = ("CC", "MLO")) -> pd.DataFrame:
    """Image–report pairs for retrieval from ``reports_pretrain.csv`` (one per patient × laterality).

    The image is the breast's first image of the first available view in ``views`` order (CC, then MLO); the text is
    the breast's cleaned report (its ``text`` entries, FINDINGS then IMPRESSION, joined). ``folds`` keeps only those
    folds (use the pretraining's validation fold so that the pairs were not seen in training). Breasts with no image
    of the listed views are left out. Returns ``patient_id, laterality, view, png_path, text``.
    """
    _require_columns(table, ["patient_id", "laterality", "text"], "reports_pretrain.csv")
    if folds is not None:
        _require_columns(table, ["fold"], "reports_pretrain.csv")
        table = table[table["fold"].astype(int).isin([int(f) for f in folds])]
    rows = []
    for _, row in table.iterrows():
        for view in views:
            images = row.get(view)
            if isinstance(images, str):
                images = [images]
            if isinstance(images, list) and images:
                texts = row["text"] if isinstance(row["text"], list) else [str(row["text"])]
                rows.append({"patient_id": row["patient_id"], "laterality": row["laterality"], "view": view,
                             "png_path": images[0], "text": " ".join(t for t in texts if t)})
                break
    return pd.DataFrame(rows, columns=["patient_id", "laterality", "view", "png_path", "text"])


def evaluate_retrieval(pairs: pd.DataFrame, model: Any, root: str | Path, ks: Sequence[int] = (1, 5, 10),
                       batch_size: int = 16, device: Any = None,
                       progress: bool = True) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    """Image→report and report→image Recall@k and ranks of :func:`retrieval_pairs` (identical reports merged).

    Returns the metrics (``retrieval_*`` keys, fractions and ranks) and the image and text embeddings.
    """
    from mammoclip_kit.inference import embed_texts

    if pairs.empty:
        raise ValueError("evaluate_retrieval: no image-report pairs (check the fold and the view columns)")
    image_emb = embed_table(pairs, model, root, batch_size=batch_size, device=device, progress=progress)
    text_emb = embed_texts(pairs["text"].tolist(), model, device=device)
    raw = M.retrieval_metrics(image_emb, text_emb, ks=ks, text_ids=pairs["text"].tolist())
    return {f"retrieval_{k}": v for k, v in raw.items()}, image_emb, text_emb


def project_2d(*embeddings: Any) -> list[np.ndarray]:
    """Joint 2-D PCA of several embedding sets (e.g. images and prompts) → one ``(n_i, 2)`` array per set.

    The axes are fitted on all rows together, so distances between the sets are comparable (a CLIP model's images and
    texts usually occupy separate regions: the "modality gap"). Rows are L2-normalised first; the sign of each axis is
    fixed (largest loading positive) so the figure is the same on every run.
    """
    arrays = [(e.detach().double().cpu().numpy() if isinstance(e, torch.Tensor) else np.asarray(e, dtype=np.float64))
              for e in embeddings]
    if not arrays or any(a.ndim != 2 for a in arrays) or len({a.shape[1] for a in arrays}) != 1:
        raise ValueError(f"project_2d: expected 2-D arrays of one width, got {[a.shape for a in arrays]}")
    stacked = np.concatenate([a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12) for a in arrays])
    centred = stacked - stacked.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    axes = vt[:2]
    axes = axes * np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(1)])[:, None]
    coords = centred @ axes.T
    splits = np.cumsum([len(a) for a in arrays])[:-1]
    return np.split(coords, splits)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mammoclip_kit.eval.zero_shot", description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default=None, help="smoke | classroom | paper (default: $MAMMOCLIP_PROFILE)")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--output-dir", default=None)
    parser.add_argument("--checkpoint", default=None, help="kit folder or released .tar; default: the classroom model")
    parser.add_argument("--text-encoder", default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--prompts", choices=["kit", "paper"], default=None)
    parser.add_argument("--scoring", choices=["ensemble", "reference"], default=None)
    parser.add_argument("--n-boot", type=int, default=None)
    parser.add_argument("--datasets", nargs="+", default=["vindr", "rsna"])
    args = parser.parse_args(argv)

    from mammoclip_kit.context import make_context

    ctx = make_context("zero_shot", profile=args.profile, data_root=args.data_root, output_dir=args.output_dir,
                       checkpoint=args.checkpoint, text_encoder=args.text_encoder, device=args.device)
    model, description = load_eval_model(ctx)
    print(f"evaluating {description}")
    config = ZeroShotConfig.from_context(ctx, prompts=args.prompts, scoring=args.scoring, n_boot=args.n_boot)
    result = run_zero_shot(ctx, model, config, datasets=args.datasets)
    result.metrics["config"] = config.to_dict()
    result.metrics["model"] = description
    path = ctx.write_metrics(result.metrics)
    print(json.dumps({k: v for k, v in result.metrics.items() if k != "config"}, indent=2, default=str))
    print(f"metrics written to {ctx.relpath(path)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
