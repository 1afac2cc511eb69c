"""Whole-tower fine-tuning (the paper's FT baseline): a copy of the image tower with a linear head, trained end to end.

AdamW with the paper's learning rate and weight decay, linear warm-up then cosine decay, weighted BCE for binary tasks
(``pos_weight`` = negatives / positives) and cross-entropy for density, mixed precision on CUDA. The best epoch is
chosen on held-out training patients (the paper chose it on the test split, which flatters the result). Images are fed
at the tower's own input size unless :attr:`FineTuneConfig.image_size` is set (then it is printed).
"""

from __future__ import annotations

import copy
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

from mammoclip_kit.config import StageConfig
from mammoclip_kit.data.transforms import load_image, resize_to, to_model_input
from mammoclip_kit.eval.tasks import (
    TaskSpec,
    breast_ids_of,
    evaluate_predictions,
    get_task,
    subsample_by_patient,
    task_labels,
)
from mammoclip_kit.inference import eval_mode, resolve_image_size

__all__ = ["FineTuneConfig", "FineTuneResult", "ImageClassifier", "fine_tune", "predict_table"]


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
class FineTuneConfig(StageConfig):
    """Settings of whole-tower fine-tuning (defaults: the paper's optimiser; epochs and lr set by the profile).

    Read from ``data_efficiency.finetune`` of a profile (``FineTuneConfig.from_context(ctx, subsection="finetune")``);
    that sub-section's ``encoders`` / ``fractions`` / ``seeds`` / ``tasks`` say what the sweep fine-tunes
    (:class:`mammoclip_kit.eval.sweep.SweepConfig`). The notebook parameters ``batch_size``, ``max_steps`` and
    ``num_workers`` override the profile.
    """

    SECTION = "data_efficiency"
    PARAMETERS = {"batch_size": "batch_size", "max_steps": "max_steps", "num_workers": "num_workers"}
    IGNORED = frozenset({"encoders", "fractions", "seeds", "tasks"})

    epochs: int = 3  # passes over the labelled subset (the paper: 30 VinDr, 20 RSNA)
    lr: float = 5e-5  # AdamW learning rate (the paper's)
    weight_decay: float = 1e-4  # AdamW weight decay (the paper's)
    warmup_epochs: float = 1.0  # linear warm-up, then cosine decay to 0, stepped per batch
    batch_size: int = 8
    image_size: tuple[int, int] | None = None  # (H, W) input size; None = the tower's own input size
    weighted_loss: bool = True  # BCE pos_weight = negatives / positives (binary tasks)
    augment: bool = True  # the paper's training augmentation (flips, affine, elastic)
    amp: bool = True  # mixed precision, used on CUDA only
    val_fraction: float = 0.2  # patients of the labelled subset held out to pick the best epoch
    max_steps: int | None = None  # cap on optimisation steps (smoke runs)
    num_workers: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.image_size is not None:
            self.image_size = (int(self.image_size[0]), int(self.image_size[1]))


@dataclass
class FineTuneResult:
    """What :func:`fine_tune` returns."""

    model: ImageClassifier  # with the best epoch's weights, in eval mode
    best_epoch: int  # 1-based; 0 when no epoch could be scored (then the last weights are kept)
    best_metric: float  # validation metric of the best epoch
    history: list[dict[str, float]] = field(default_factory=list)  # per epoch: loss, val metric, seconds
    checkpoint: Path | None = None  # saved best weights (safetensors) when a folder was given
    image_size: tuple[int, int] | None = None  # the input size it was trained at (predict_table uses the same)


class _LabelledImages(torch.utils.data.Dataset):
    """Image files and labels → (model input, label), resized to ``image_size`` and optionally augmented."""

    def __init__(self, paths: Sequence[Path], labels: np.ndarray, image_size: tuple[int, int] | None,
                 augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None, seed: int) -> None:
        self.paths, self.image_size = list(paths), image_size
        self.labels, self.augment, self.seed, self.epoch = labels, augment, seed, 0

    def __len__(self) -> int:
        return len(self.paths)

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
    outputs = []
    with eval_mode(model), torch.inference_mode():
        for images, _ in loader:
            logits = model(images.to(device).contiguous(memory_format=torch.channels_last)).float()
            outputs.append((logits.softmax(1) if kind == "multiclass" else logits[:, 0].sigmoid()).cpu().numpy())
    return np.concatenate(outputs) if outputs else np.zeros(0)


def fine_tune(encoder: nn.Module, num_features: int, train_df: pd.DataFrame, task: str | TaskSpec, *,
              root: str | Path, cfg: FineTuneConfig | None = None, device: Any = None, seed: int = 0,
              checkpoint_dir: str | Path | None = None, path_col: str = "png_path",
              patient_col: str = "patient_id") -> FineTuneResult:
    """Fine-tune a copy of ``encoder`` with a linear head on ``train_df`` (the encoder itself is not modified).

    ``cfg.val_fraction`` of the subset's patients (stratified) are held out to choose the best epoch by the task's
    primary metric (the paper's code chooses it on the test split, which flatters the result). Weighted BCE for
    binary tasks (``pos_weight`` = negatives / positives), cross-entropy for density; AdamW, linear warm-up then cosine,
    AMP on CUDA only. Images are fed at the encoder's input size (``cfg.image_size`` when set, printed). The best weights
    are written to ``checkpoint_dir/model.safetensors`` with a ``meta.json``.
    """
    from mammoclip_kit.env import progress_bar as tqdm

    task, cfg = get_task(task), cfg or FineTuneConfig()
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
    size = resolve_image_size(encoder, cfg.image_size, where=f"fine-tune {task.name}")

    def paths(frame: pd.DataFrame) -> list[Path]:
        return [p if Path(p).is_absolute() else root / p for p in frame[path_col].astype(str)]

    dtype = np.float32 if task.kind == "binary" else np.int64
    train_set = _LabelledImages(paths(fit_df), fit_labels.astype(dtype), size, _resolve_augment(cfg.augment),
                                seed)
    generator = torch.Generator().manual_seed(seed)
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, drop_last=False,
                                               num_workers=cfg.num_workers, generator=generator)
    val_loader = None
    if len(val_df):
        val_set = _LabelledImages(paths(val_df), task_labels(val_df, task).astype(dtype), size, None, seed)
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

    best = FineTuneResult(model, 0, float("nan"), image_size=size)
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
            breast_ids = breast_ids_of(val_df, patient_col) if task.level == "breast" else None
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
                                                      "cfg": asdict(cfg), "seed": seed, "image_size": size},
                                                     indent=2, default=str))
        best.checkpoint = folder / "model.safetensors"
    return best


def predict_table(model: nn.Module, df: pd.DataFrame, task: TaskSpec, *, root: str | Path,
                  image_size: tuple[int, int] | None, batch_size: int = 16, device: Any = None, num_workers: int = 0,
                  path_col: str = "png_path") -> np.ndarray:
    """Scores of a fine-tuned classifier on the rows of ``df``: P(positive) ``(N,)`` or class probabilities ``(N, C)``.

    ``image_size`` is the size the classifier was trained at (:attr:`FineTuneResult.image_size`).
    """
    root = Path(root)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    paths = [p if Path(p).is_absolute() else root / p for p in df[path_col].astype(str)]
    dataset = _LabelledImages(paths, np.zeros(len(paths), dtype=np.float32), image_size, None, 0)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)
    return _predict(model, loader, device, task.kind)
