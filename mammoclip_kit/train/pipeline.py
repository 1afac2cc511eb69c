"""From built tables to a trained checkpoint: datasets, model, held-out monitor, and the load-or-train entry point.

:func:`ensure_pretrained` is what notebooks call: it resolves the run's :class:`PretrainConfig` with
:func:`pretrain_config` (the profile's ``pretrain`` section, :class:`~mammoclip_kit.train.config.PretrainSectionConfig`,
plus the notebook parameters ``max_steps``, ``batch_size``, ``num_workers``, ``text_encoder`` and the seed), and
returns ``ctx.checkpoint_dir(variant)`` — loading when a finished checkpoint with the same parameters and the same
tables exists, resuming an interrupted run with the same parameters, training otherwise (``retrain=True`` always
retrains).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mammoclip_kit import env
from mammoclip_kit.artifacts import Artifact, atomic_write_json
from mammoclip_kit.data.datasets import ImageLabelDataset, ImageTextDataset, MixedDataset, as_list
from mammoclip_kit.train.config import PretrainConfig, PretrainSectionConfig
from mammoclip_kit.train.distributed import DistInfo

if TYPE_CHECKING:
    from mammoclip_kit.context import RunContext

__all__ = ["ensure_pretrained", "pretrain_config", "run_pretraining", "build_datasets", "build_pretrain_model",
           "build_monitor", "heldout_pairs", "read_log", "PARAMS_FILE"]

PARAMS_FILE = "pretrain_params.json"
#: zero-shot task -> label column of vindr_images.csv
TASK_COLUMNS = {"mass": "Mass", "suspicious_calcification": "Suspicious_Calcification"}


def _read(path: Path) -> pd.DataFrame:
    from mammoclip_kit.data.records import read_table

    if not path.is_file():
        raise FileNotFoundError(f"{path}: table missing (built by a profile run from a data root — notebook 03, "
                                "pretrain --profile P --data-root D — or mammoclip_kit.data.records.ensure_tables)")
    return read_table(path)


def check_tables(cfg: PretrainConfig, tables_dir: Path) -> None:
    """Fail before any long phase (datasets, trunk cache) when a table the sources need is missing."""
    for source in cfg.sources:
        path = Path(tables_dir) / f"{source}_pretrain.csv"
        if not path.is_file():
            _read(path)


def build_datasets(cfg: PretrainConfig, tables_dir: Path, root: Path,
                   image_size: tuple[int, int]) -> tuple[Any, dict[str, Any], list[str]]:
    """Training dataset (mixed when several sources), validation datasets per source, and the training texts.

    Reports: ``fold != val_fold`` trains, ``fold == val_fold`` validates. VinDr image-label rows: ``split ==
    "training"`` trains, ``"test"`` validates (docs/reference-notes.md §7.2).
    """
    train_parts, val_parts, texts = [], {}, []
    # Loader workers are started anew each epoch, so a cache in them would only grow (every image of the epoch, per
    # worker: ~1.4 MB per 1520 × 912 image) and be thrown away: the cache is for in-process loading only.
    common = {"image_size": image_size, "seed": cfg.seed, "cache_images": cfg.cache_images and cfg.num_workers == 0}
    if "reports" in cfg.sources:
        path = tables_dir / "reports_pretrain.csv"
        table = _read(path)
        tr = table[table["fold"].astype(int) != cfg.val_fold]
        va = table[table["fold"].astype(int) == cfg.val_fold]
        if cfg.max_train_rows:
            tr = tr.head(cfg.max_train_rows)
        train_parts.append(ImageTextDataset(tr, root, train=True, table=str(path.name), **common))
        if len(va):
            val_parts["reports"] = ImageTextDataset(va, root, train=False, table=str(path.name), **common)
        for column in ("text", "text_augment"):
            if column in tr.columns:
                texts += [str(t) for cell in tr[column] for t in as_list(cell)]
    if "vindr" in cfg.sources:
        path = tables_dir / "vindr_pretrain.csv"
        table = _read(path)
        tr, va = table[table["split"] == "training"], table[table["split"] == "test"]
        if cfg.max_train_rows:
            tr = tr.head(cfg.max_train_rows)
        vindr_train = ImageLabelDataset(tr, root, train=True, table=str(path.name), **common)
        train_parts.append(vindr_train)
        if len(va):
            val_parts["vindr"] = ImageLabelDataset(va, root, train=False, table=str(path.name), **common)
        for i in range(len(vindr_train)):
            per_view, lat = vindr_train.findings(i)
            texts += [vindr_train.label_to_text(f, lat, None) for f in per_view.values()]
    if not cfg.augment:
        for part in train_parts:
            part.augment_config = type(part.augment_config)(hflip_p=0, vflip_p=0, affine_p=0, elastic_p=0)
    train = train_parts[0] if len(train_parts) == 1 else MixedDataset(train_parts)
    return train, val_parts, texts


def load_image_tower_file(tower: Any, folder: str | Path) -> Any:
    """Load ``folder/image_tower.safetensors`` (an image tower saved by the kit) into ``tower``, strictly."""
    from safetensors.torch import load_file

    path = Path(folder) / "image_tower.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"image_init: {path} not found (image_init takes 'imagenet' or a folder holding an "
                                "image_tower.safetensors)")
    tower.load_state_dict(load_file(str(path)), strict=True)
    return tower


def build_pretrain_model(cfg: PretrainConfig, texts: list[str] | None = None) -> Any:
    """``create_model(cfg.model, ...)`` with the config's overrides, image size, seed and text encoder."""
    from mammoclip_kit.models.factory import create_model

    overrides: dict[str, Any] = json.loads(json.dumps(cfg.model_overrides))
    if cfg.image_size is not None:
        overrides["image_size"] = tuple(cfg.image_size)
    if cfg.text_encoder == "minilm":
        overrides.setdefault("text", {}).update({"kind": "minilm", "name_or_path": None})
    elif cfg.text_encoder == "small-bert":
        overrides.setdefault("text", {}).update({"kind": "small-bert", "name_or_path": None})
    elif cfg.text_encoder:
        overrides["text_encoder"] = cfg.text_encoder
    model = create_model(cfg.model, texts=texts or None, seed=cfg.seed, **overrides)
    if _is_weights_file(cfg.image_init):  # ImageNet weights from a local file (timm or the authors' names)
        from mammoclip_kit.models.imagenet import load_image_init

        print(load_image_init(model.image_encoder, cfg.image_init).summary())
    elif cfg.image_init == "imagenet":
        from mammoclip_kit.models.imagenet import load_imagenet_tower

        load_imagenet_tower(model.image_encoder)
    elif cfg.image_init:
        load_image_tower_file(model.image_encoder, cfg.image_init)
    if cfg.freeze_blocks:
        if not hasattr(model.image_encoder, "freeze_trunk"):
            raise ValueError(f"freeze_blocks: the {cfg.model} image tower cannot freeze stages (a timm tower can)")
        model.image_encoder.freeze_trunk(cfg.freeze_blocks)
    return model


def _is_weights_file(spec: str | None) -> bool:
    from mammoclip_kit.models.imagenet import is_weights_file

    return spec is not None and is_weights_file(spec)


def check_image_init(cfg: PretrainConfig) -> None:
    """Fail before the first long phase when ``image_init`` names a weights file that is missing or does not fit the
    model's image tower exactly (the tower is built and loaded once, without the text tower)."""
    if not _is_weights_file(cfg.image_init):
        return
    from mammoclip_kit.models.factory import resolve_config
    from mammoclip_kit.models.imagenet import load_image_init
    from mammoclip_kit.models.towers import create_image_tower

    load_image_init(create_image_tower(resolve_config(cfg.model, **cfg.model_overrides).image), cfg.image_init)


def build_monitor(cfg: PretrainConfig, tables_dir: Path, root: Path, image_size: tuple[int, int]) -> Any:
    """Held-out zero-shot (``vindr_images.csv`` test split) and retrieval (validation reports) monitor, or None."""
    from mammoclip_kit.data import text as textlib
    from mammoclip_kit.train.monitor import HeldOutMonitor

    kwargs: dict[str, Any] = {"image_size": image_size, "ks": cfg.recall_k, "task": cfg.zero_shot_task}
    rng = np.random.default_rng(cfg.seed)
    images_path = tables_dir / "vindr_images.csv"
    column = TASK_COLUMNS.get(cfg.zero_shot_task)
    if images_path.is_file() and column is not None:
        table = _read(images_path)
        test = table[table["split"] == "test"] if "split" in table.columns else table
        test = test[test[column].notna()]
        if cfg.monitor_max_images and len(test) > cfg.monitor_max_images:
            test = test.iloc[np.sort(rng.choice(len(test), cfg.monitor_max_images, replace=False))]
        negative, positive = textlib.PROMPTS[cfg.zero_shot_task]
        paper = textlib.PAPER_PROMPTS[cfg.zero_shot_task]
        kwargs.update(zs_images=[root / p for p in test["png_path"]], zs_labels=test[column].astype(int).tolist(),
                      prompts=(negative, positive), reference_prompts=(paper[0][0], paper[1][0]))
    reports_path = tables_dir / "reports_pretrain.csv"
    if reports_path.is_file():
        table = _read(reports_path)
        val = table[table["fold"].astype(int) == cfg.val_fold]
        if cfg.monitor_max_images and len(val) > cfg.monitor_max_images:
            val = val.iloc[np.sort(rng.choice(len(val), cfg.monitor_max_images, replace=False))]
        images, texts = [], []
        for _, row in val.iterrows():
            views = [v for v in as_list(row.get("views", row.get("view"))) if as_list(row.get(v))]
            texts_row = [t for t in as_list(row["text"]) if str(t).strip()]
            if views and texts_row:
                images.append(root / as_list(row[views[0]])[0])
                texts.append(str(texts_row[0]))
        kwargs.update(retrieval_images=images, retrieval_texts=texts)
    if "zs_images" not in kwargs and "retrieval_images" not in kwargs:
        return None
    return HeldOutMonitor(**kwargs)


def heldout_pairs(tables_dir: Path, root: Path, n: int = 8, val_fold: int = 0, seed: int = 0) -> tuple[list, list]:
    """``n`` held-out (validation-fold) breasts with distinct texts: (first image path, first text) each."""
    table = _read(Path(tables_dir) / "reports_pretrain.csv")
    val = table[table["fold"].astype(int) == val_fold]
    order = np.random.default_rng(seed).permutation(len(val))
    images, texts = [], []
    for i in order:
        row = val.iloc[int(i)]
        views = [v for v in as_list(row.get("views", row.get("view"))) if as_list(row.get(v))]
        text = next((str(t) for t in as_list(row["text"]) if str(t).strip()), None)
        if views and text and text not in texts:
            images.append(Path(root) / as_list(row[views[0]])[0])
            texts.append(text)
        if len(texts) == n:
            break
    return images, texts


def run_pretraining(cfg: PretrainConfig, tables_dir: Path, root: Path, out_dir: Path, device: Any = None,
                    dist_info: DistInfo | None = None, resume: bool = True, progress: bool = True,
                    stop_at_step: int | None = None, allow_config_change: bool = False) -> Any:
    """Build everything from the tables under ``tables_dir`` (image paths relative to ``root``) and train."""
    import torch

    from mammoclip_kit.train.loop import train

    started = time.perf_counter()
    check_tables(cfg, Path(tables_dir))
    check_image_init(cfg)
    env.seed_everything(cfg.seed)
    image_size = tuple(cfg.image_size) if cfg.image_size else None
    if image_size is None:
        from mammoclip_kit.models.factory import resolve_config
        image_size = tuple(resolve_config(cfg.model, **cfg.model_overrides).image_size)
    train_data, val_data, texts = build_datasets(cfg, Path(tables_dir), Path(root), image_size)
    torch.manual_seed(cfg.seed)
    model = build_pretrain_model(cfg, texts)
    if cfg.cache_trunk:
        from mammoclip_kit.train.trunk_cache import attach_trunk_cache

        cache_device = device if device is not None else (dist_info.device if dist_info is not None else "cpu")
        attach_trunk_cache(model.image_encoder.to(cache_device), [train_data, *val_data.values()],
                           cfg.freeze_blocks, device=cache_device, channels_last=cfg.channels_last,
                           progress=progress)
    monitor = build_monitor(cfg, Path(tables_dir), Path(root), image_size) if (dist_info is None
                                                                               or dist_info.is_main) else None
    setup_s = time.perf_counter() - started
    from mammoclip_kit.train.checkpoint import lock_output

    # one run per output folder (the main process holds the lock; DDP ranks share the main process's run)
    with lock_output(out_dir) if dist_info is None or dist_info.is_main else contextlib.nullcontext():
        return train(cfg, model, train_data, val_data, Path(out_dir), device=device, dist_info=dist_info,
                     monitor=monitor, resume=resume, progress=progress, stop_at_step=stop_at_step,
                     extra_metrics={"setup_s": setup_s, "n_parameters": sum(p.numel() for p in model.parameters()),
                                    "image_size": list(image_size), "variant_sources": cfg.sources, "loss": cfg.loss},
                     allow_config_change=allow_config_change)


def pretrain_config(ctx: RunContext, variant: str = "mammoclip", **overrides: Any) -> PretrainConfig:
    """The run configuration of ``variant`` under ``ctx``: preset YAML < variant < the profile's ``pretrain``
    overrides < notebook parameters (``max_steps``, ``batch_size``, ``num_workers``, ``text_encoder``) < keyword
    ``overrides`` of :class:`~mammoclip_kit.train.config.PretrainSectionConfig` fields; the seed is ``ctx.seed``."""
    return PretrainSectionConfig.from_context(ctx, **overrides).resolve(ctx.profile, variant, ctx.seed)


def _tables_signature(tables_dir: Path, cfg: PretrainConfig) -> dict[str, str]:
    names = ["vindr_images"] + [f"{s}_pretrain" for s in cfg.sources]
    out = {}
    for name in names:
        path = tables_dir / f"{name}.csv"
        out[name] = hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else "missing"
    return out


def ensure_pretrained(ctx: RunContext, variant: str = "mammoclip", progress: bool = True) -> Path:
    """Return ``ctx.checkpoint_dir(variant)`` holding a pretrained model with this run's parameters.

    The checkpoint folder is an :class:`~mammoclip_kit.artifacts.Artifact` whose record ``pretrain_params.json``
    holds the variant, the :class:`PretrainConfig` and a hash of each table it reads. Loads (returns at once) when the
    record matches and the run finished; resumes a matching unfinished run from ``train/last.pt`` (the record is
    written with ``complete: false`` before training starts); otherwise (or with ``ctx.retrain``) trains from scratch.
    Builds the cohort, PNGs and tables first when they are missing.
    """
    from mammoclip_kit.data.records import ensure_tables

    cfg = pretrain_config(ctx, variant)
    out = Path(ctx.checkpoint_dir(variant))
    ensure_tables(ctx, datasets=["reports", "vindr"] if ctx.is_cohort else None)
    params = {"variant": variant, "config": cfg.to_dict(), "tables": _tables_signature(Path(ctx.tables_dir), cfg)}
    artifact = Artifact(out, params, record=out / PARAMS_FILE)
    if not ctx.retrain and artifact.is_current() and (out / "model.safetensors").is_file():
        print(f"pretrained {variant!r}: loading {out.name} (same parameters; retrain=True recomputes)")
        return out
    if ctx.retrain or artifact.recorded().get("params") != artifact.params:
        for name in ("train", "model.safetensors", "config.json", "metrics.json", PARAMS_FILE, "text_encoder"):
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    atomic_write_json(artifact.record, {"params": artifact.params, "complete": False})
    action = "resuming" if (out / "train" / "last.pt").is_file() else "training"
    print(f"pretrained {variant!r}: {action} ({cfg.loss} loss, sources {cfg.sources}, model {cfg.model})")
    run_pretraining(cfg, Path(ctx.tables_dir), Path(ctx.output_dir), out, device=ctx.device, progress=progress)
    # the PNGs' (mode, size, bits): predict converts DICOMs for this model the same way
    from mammoclip_kit.data.preprocess import PreprocessConfig, write_preprocessing_record

    write_preprocessing_record(out, PreprocessConfig.from_context(ctx))
    artifact.commit()
    return out


def read_log(checkpoint: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The per-step training log and the per-epoch validation log of a checkpoint folder."""
    folder = Path(checkpoint) / "train"
    return pd.read_csv(folder / "log.csv"), pd.read_csv(folder / "val.csv")
