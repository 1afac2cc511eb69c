"""Supervised localization: torchvision RetinaNet on the Mammo-CLIP image tower.

Pieces (the model and data parts live in private siblings and are re-exported here):

* :class:`DetectorConfig` + :func:`create_detector` — the paper's detector: taps at strides 16 and 32 and the head output
  into the paper's FPN (P3..P7, strides 8..128), anchors 32…512 × {2^0, 2^(1/3), 2^(2/3)} × ratios {0.5, 1, 2} (scaled
  by ``anchor_scale`` for small images), focal loss with α and γ as parameters, frozen or fine-tuned encoder;
* :class:`DetectionDataset` — images that contain the finding (the paper's protocol), with :class:`BoxAugment`;
* :func:`train_detector` — Adam / AdamW, gradient clipping, best epoch by validation mAP@0.5, checkpoints;
* :func:`evaluate_detector` — VOC all-point mAP@0.5 (the paper's definition, via :mod:`mammoclip_kit.eval.metrics`) and
  COCO-style mAP from pycocotools (:func:`coco_map`);
* :func:`draw_detections`, :func:`draw_anchors`, :func:`plot_precision_recall` — figures for the notebook;
* :func:`detection_settings`, :func:`detection_datasets`, :func:`ensure_detector` — the notebook's entry points: the
  profile's settings (the detector input defaults to the encoder's own input size), the datasets, and "load if
  present, train if missing" (:func:`mammoclip_kit.artifacts.Artifact`).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from mammoclip_kit.artifacts import Artifact
from mammoclip_kit.config import StageConfig
from mammoclip_kit.eval._detection_data import (
    BOX_COLUMNS,
    BoxAugment,
    DetectionDataset,
    clip_boxes,
    collate_detection,
    finding_key,
    select_finding_images,
    transform_boxes,
)
from mammoclip_kit.eval._detection_model import (
    PAPER_ANCHOR_SIZES,
    PYRAMID_LEVELS,
    ClipDetectionBackbone,
    DetectorConfig,
    FocalClassificationHead,
    PaperAnchorGenerator,
    PaperFPN,
    create_detector,
    encoder_taps,
    trainable_parameters,
)
from mammoclip_kit.eval.metrics import APResult, average_precision_at_iou, percentile_interval, voc_ap
from mammoclip_kit.eval.tasks import split_train_val
from mammoclip_kit.inference import eval_mode, resolve_image_size

if TYPE_CHECKING:
    from mammoclip_kit.context import RunContext

__all__ = [
    "BOX_COLUMNS", "PAPER_ANCHOR_SIZES", "PYRAMID_LEVELS", "APResult", "BoxAugment", "ClipDetectionBackbone",
    "DetectionDataset", "DetectionEval", "DetectionSettings", "DetectionTrainConfig", "DetectorConfig",
    "FocalClassificationHead", "MapBootstrap", "PaperAnchorGenerator", "PaperFPN", "TrainHistory", "ap_of", "clip_boxes",
    "coco_map", "collate_detection", "create_detector", "image_matches", "map_bootstrap",
    "detection_datasets", "draw_anchors", "draw_detections", "encoder_taps", "ensure_detector", "evaluate_detector",
    "detection_settings", "finding_key", "load_detector", "plot_precision_recall", "predict", "save_detector", "select_finding_images",
    "split_train_val", "train_detector", "trainable_parameters", "transform_boxes",
]


@dataclass
class DetectionTrainConfig(StageConfig):
    """Optimisation settings of :func:`train_detector` (paper: Adam, lr 5e-5, clip 0.1, batch 7, 120 epochs).

    ``train:`` of a profile's ``detection`` section; the notebook parameters ``max_steps``, ``batch_size``,
    ``num_workers`` and ``seed`` override it.

    Attributes:
        epochs: passes over the training images.
        max_steps: stop after this many optimisation steps in total (``None`` = no cap).
        batch_size, num_workers: loader settings.
        lr, weight_decay, optimizer: ``"adam"`` (the paper) or ``"adamw"``.
        encoder_lr: learning rate of a fine-tuned encoder (``None`` = ``lr``).
        grad_clip: max gradient norm (``None`` or 0 disables clipping).
        eval_score_threshold, eval_max_detections: the paper's mAP script keeps detections with score > 0.2, top 100.
        seed: seeds the shuffling and the augmentation.
    """

    SECTION = "detection"
    PARAMETERS = {"max_steps": "max_steps", "batch_size": "batch_size", "num_workers": "num_workers", "seed": "seed"}

    epochs: int = 10
    max_steps: int | None = None
    batch_size: int = 8
    num_workers: int = 0
    lr: float = 1e-4
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    encoder_lr: float | None = None
    grad_clip: float | None = 0.1
    eval_score_threshold: float = 0.05
    eval_max_detections: int = 100
    seed: int = 0


@dataclass
class TrainHistory:
    """What :func:`train_detector` measured: per-epoch losses and validation mAP, the best epoch, timings."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_val_map: float = float("nan")
    steps: int = 0
    seconds: float = 0.0
    step_seconds: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def losses(self) -> list[float]:
        return [e["loss"] for e in self.epochs]


@dataclass
class DetectionEval:
    """Evaluation of one detector on one dataset."""

    voc: APResult  # VOC all-point AP@0.5 with its precision/recall curve (the paper's mAP for one class)
    coco: dict[str, float]  # pycocotools: map (0.5:0.95), map50, map75, mar100
    predictions: list[tuple[np.ndarray, np.ndarray]]  # per image (boxes N×4, scores N), before the score threshold
    ground_truth: list[np.ndarray]  # per image boxes M×4
    image_ids: list[str]

    @property
    def map50(self) -> float:
        return float(self.voc.ap)

    def summary(self) -> dict[str, float]:
        return {"voc_map50": self.map50, "coco_map": self.coco["map"], "coco_map50": self.coco["map50"],
                "n_images": len(self.image_ids), "n_gt": int(self.voc.n_gt)}


# --------------------------------------------------------------------------------------------------------- training

def _make_optimizer(model: nn.Module, config: DetectionTrainConfig) -> torch.optim.Optimizer:
    encoder = model.backbone.encoder
    encoder_ids = {id(p) for p in encoder.parameters()}
    head = [p for p in trainable_parameters(model) if id(p) not in encoder_ids]
    enc = [p for p in encoder.parameters() if p.requires_grad]
    groups = [{"params": head, "lr": config.lr}]
    if enc:
        groups.append({"params": enc, "lr": config.encoder_lr or config.lr})
    name = config.optimizer.lower()
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    if name == "adam":
        return torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)
    raise ValueError(f"optimizer {config.optimizer!r}: expected 'adam' or 'adamw'")


def _to_device(images, targets, device):
    images = [im.to(device, non_blocking=True) for im in images]
    targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
    return images, targets


def train_detector(model: nn.Module, train_set: DetectionDataset, val_set: DetectionDataset | None,
                   config: DetectionTrainConfig, device: torch.device | str | None = None, out_dir: str | Path | None = None,
                   progress: bool = True, log: Callable[[str], None] | None = print) -> TrainHistory:
    """Train ``model`` (from :func:`create_detector`) and keep its best epoch by validation VOC mAP@0.5.

    Each epoch: shuffled batches (seeded), loss = focal classification + smooth-L1 regression, clipped gradients. After
    each epoch the model is evaluated on ``val_set`` (if any, else the last epoch counts as best); the best weights are
    restored at the end and, with ``out_dir``, saved there with :func:`save_detector` (plus ``history.json``).
    """
    from mammoclip_kit.env import progress_bar as tqdm

    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device)
    optimizer = _make_optimizer(model, config)
    generator = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=True, drop_last=False,
                        num_workers=config.num_workers, collate_fn=collate_detection, generator=generator)
    history = TrainHistory()
    best_state: dict[str, torch.Tensor] | None = None
    params = trainable_parameters(model)
    backbone = model.backbone
    memoize = bool(getattr(backbone, "memoize", False))
    # Augmented images are never seen twice: memoising them would only fill memory.
    memoize_train = memoize and getattr(train_set, "augment", None) is None
    start = time.perf_counter()
    step_times: list[float] = []
    for epoch in range(config.epochs):
        if config.max_steps is not None and history.steps >= config.max_steps:
            break
        train_set.set_epoch(epoch)
        model.train()
        if memoize:
            backbone.memoize = memoize_train
        totals = {"loss": 0.0, "classification": 0.0, "bbox_regression": 0.0}
        n_batches = 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False, disable=not progress)
        for images, targets, _ in bar:
            if config.max_steps is not None and history.steps >= config.max_steps:
                break
            t0 = time.perf_counter()
            images, targets = _to_device(images, targets, device)
            losses = model(images, targets)
            loss = losses["classification"] + losses["bbox_regression"]
            if not torch.isfinite(loss):
                raise FloatingPointError(f"epoch {epoch + 1}, step {history.steps + 1}: loss is {loss.item()}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            optimizer.step()
            step_times.append(time.perf_counter() - t0)
            history.steps += 1
            n_batches += 1
            totals["loss"] += float(loss.detach())
            for key in ("classification", "bbox_regression"):
                totals[key] += float(losses[key].detach())
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
        record = {k: v / max(1, n_batches) for k, v in totals.items()}
        record["epoch"] = epoch + 1
        if memoize:
            backbone.memoize = True
        if val_set is not None and len(val_set):
            result = evaluate_detector(model, val_set, device=device, batch_size=config.batch_size,
                                       score_threshold=config.eval_score_threshold,
                                       max_detections=config.eval_max_detections, coco=False)
            record["val_map50"] = result.map50
        else:
            record["val_map50"] = float("nan")
        history.epochs.append(record)
        score = record["val_map50"]
        better = best_state is None or (math.isfinite(score) and (not math.isfinite(history.best_val_map)
                                                                   or score > history.best_val_map))
        if val_set is None or not len(val_set):
            better = True
        if better:
            history.best_epoch, history.best_val_map = epoch + 1, score
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if log is not None:
            log(f"epoch {epoch + 1}: loss {record['loss']:.4f} (cls {record['classification']:.4f}, "
                f"reg {record['bbox_regression']:.4f}), val mAP@0.5 {score:.3f}")
    if best_state is not None:
        model.load_state_dict(best_state)
    history.seconds = time.perf_counter() - start
    history.step_seconds = float(np.median(step_times)) if step_times else float("nan")
    if out_dir is not None:
        save_detector(model, out_dir, history=history, train_config=config)
    return history


# ------------------------------------------------------------------------------------------------------- evaluation

@torch.no_grad()
def predict(model: nn.Module, dataset: DetectionDataset, device: torch.device | str | None = None,
            batch_size: int = 8) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[np.ndarray], list[str]]:
    """Run the detector over ``dataset``: per image ``(boxes, scores)``, the true boxes and the image ids."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_detection)
    preds, truth, ids = [], [], []
    with eval_mode(model):
        for images, targets, image_ids in loader:
            outputs = model([im.to(device) for im in images])
            for out, target, image_id in zip(outputs, targets, image_ids, strict=True):
                preds.append((out["boxes"].cpu().numpy().astype(np.float64), out["scores"].cpu().numpy()))
                truth.append(target["boxes"].numpy().astype(np.float64))
                ids.append(image_id)
    return preds, truth, ids


def coco_map(predictions: Sequence[tuple[Any, Any]], ground_truth: Sequence[Any],
             max_detections: int = 100) -> dict[str, float]:
    """COCO-style box mAP of one class with pycocotools (the maintained reference implementation).

    Same inputs as :func:`~mammoclip_kit.eval.metrics.average_precision_at_iou`. Returns ``map`` (AP averaged over IoU
    0.50:0.05:0.95), ``map50``, ``map75`` and ``mar100``. COCO interpolates precision at 101 recall points, so its
    ``map50`` is close to, not equal to, the VOC all-point AP@0.5. NaN when there is no ground-truth box.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if len(predictions) != len(ground_truth):
        raise ValueError(f"coco_map: {len(predictions)} prediction entries but {len(ground_truth)} ground-truth entries")
    images, annotations, detections = [], [], []
    for i, ((boxes, scores), gt) in enumerate(zip(predictions, ground_truth, strict=True)):
        gt = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        extent = np.concatenate([gt, boxes]) if len(gt) + len(boxes) else np.ones((1, 4))
        images.append({"id": i + 1, "width": float(extent[:, 2].max()) + 1, "height": float(extent[:, 3].max()) + 1})
        for box in gt:
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                                "bbox": [box[0], box[1], w, h], "area": w * h})
        for box, score in zip(boxes, scores, strict=True):
            detections.append({"image_id": i + 1, "category_id": 1, "score": float(score),
                               "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})
    if not annotations:
        nan = float("nan")
        return {"map": nan, "map50": nan, "map75": nan, "mar100": nan}
    if not detections:
        return {"map": 0.0, "map50": 0.0, "map75": 0.0, "mar100": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        gt_api = COCO()
        gt_api.dataset = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "finding"}]}
        gt_api.createIndex()
        dt_api = gt_api.loadRes(detections)
        ev = COCOeval(gt_api, dt_api, iouType="bbox")
        ev.params.maxDets = [1, 10, max_detections]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [float(s) for s in ev.stats]
    return {"map": stats[0], "map50": stats[1], "map75": stats[2], "mar100": stats[8]}


def evaluate_detector(model: nn.Module, dataset: DetectionDataset, device: torch.device | str | None = None,
                      batch_size: int = 8, score_threshold: float | None = 0.05, max_detections: int = 100,
                      iou_threshold: float = 0.5, coco: bool = True) -> DetectionEval:
    """VOC all-point AP at ``iou_threshold`` (the paper's mAP for one finding) and, with ``coco``, pycocotools mAP.

    Both see the same detections: score above ``score_threshold`` (the paper's script: 0.2), top ``max_detections``.
    """
    preds, truth, ids = predict(model, dataset, device=device, batch_size=batch_size)
    kept = []
    for boxes, scores in preds:
        keep = scores > score_threshold if score_threshold is not None else np.ones(len(scores), dtype=bool)
        order = np.argsort(-scores[keep], kind="stable")[:max_detections]
        kept.append((boxes[keep][order], scores[keep][order]))
    voc = average_precision_at_iou(kept, truth, iou_threshold=iou_threshold)
    coco_stats = coco_map(kept, truth, max_detections) if coco else {
        "map": float("nan"), "map50": float("nan"), "map75": float("nan"), "mar100": float("nan")}
    return DetectionEval(voc=voc, coco=coco_stats, predictions=preds, ground_truth=truth, image_ids=ids)


# ------------------------------------------------------------------------------------------ intervals over patients

def image_matches(result: DetectionEval, iou_threshold: float = 0.5, score_threshold: float | None = 0.05,
                  max_detections: int = 100) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """Per test image: the kept detection scores (descending), their TP flags and the number of true boxes.

    The same rule as :func:`~mammoclip_kit.eval.metrics.average_precision_at_iou` (detections above
    ``score_threshold``, top ``max_detections``, each matched to its highest-IoU true box). A detection's TP flag
    depends on its own image only, so the AP of any resample of images is a sort of these flags (:func:`ap_of`).
    """
    import warnings

    scores, flags, n_gt = [], [], []
    for (boxes, image_scores), truth in zip(result.predictions, result.ground_truth, strict=True):
        image_scores = np.asarray(image_scores, dtype=np.float64).reshape(-1)
        keep = image_scores > score_threshold if score_threshold is not None else np.ones(len(image_scores), bool)
        kept = image_scores[keep][np.argsort(-image_scores[keep], kind="stable")[:max_detections]]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an image without a true box: every detection is a false positive
            single = average_precision_at_iou([(np.asarray(boxes)[keep], image_scores[keep])], [truth], iou_threshold,
                                              max_detections=max_detections)
        tp = np.diff(np.concatenate([[0.0], single.recall * single.n_gt])) if single.n_gt else np.zeros(len(kept))
        scores.append(kept)
        flags.append(np.round(tp))
        n_gt.append(single.n_gt)
    return scores, flags, np.asarray(n_gt)


def ap_of(matches: tuple[list[np.ndarray], list[np.ndarray], np.ndarray], index: Sequence[int]) -> float:
    """VOC all-point AP of the images ``index`` (repeats allowed: a bootstrap resample) from :func:`image_matches`."""
    scores, flags, n_gt = matches
    total = float(np.sum(n_gt[np.asarray(index, dtype=int)]))
    if total == 0:
        return float("nan")
    s = np.concatenate([scores[i] for i in index] or [np.zeros(0)])
    tp = np.concatenate([flags[i] for i in index] or [np.zeros(0)])[np.argsort(-s, kind="stable")]
    cum_tp, cum_fp = np.cumsum(tp), np.cumsum(1.0 - tp)
    return voc_ap(cum_tp / total, cum_tp / np.maximum(cum_tp + cum_fp, np.finfo(np.float64).eps))


@dataclass
class MapBootstrap:
    """mAP@0.5 of several detectors (each a list of seeds) on the same test images, with one patient bootstrap.

    ``point[name]`` is the mean over seeds, ``per_seed[name]`` the seeds' values, ``replicates[name]`` the mean over
    seeds on each resample of test patients (the same resamples for every detector, so differences are paired).
    """

    point: dict[str, float]
    per_seed: dict[str, list[float]]
    replicates: dict[str, np.ndarray]
    n_images: int
    n_patients: int

    def interval(self, name: str) -> tuple[float, float, float]:
        """(mean over seeds, 2.5th, 97.5th percentile) of ``name``'s mAP."""
        return (self.point[name], *percentile_interval(self.replicates[name]))

    def difference(self, a: str, b: str) -> tuple[float, float, float]:
        """Paired ``mAP(a) − mAP(b)`` with its 95 % interval."""
        return (self.point[a] - self.point[b], *percentile_interval(self.replicates[a] - self.replicates[b]))

    def table(self) -> pd.DataFrame:
        """One row per detector: mean mAP@0.5 over seeds, its patient-bootstrap CI, the seeds' SD and values."""
        rows = []
        for name in self.point:
            value, low, high = self.interval(name)
            seeds = self.per_seed[name]
            rows.append({"detector": name, "map50": value, "ci_low": low, "ci_high": high,
                         "seed_sd": float(np.std(seeds, ddof=1)) if len(seeds) > 1 else float("nan"),
                         "seeds": len(seeds), "per_seed": [round(v, 4) for v in seeds]})
        return pd.DataFrame(rows)


def map_bootstrap(results: dict[str, Sequence[DetectionEval]], patient_of: dict[str, str], *, n_boot: int = 1000,
                  seed: int = 0, iou_threshold: float = 0.5, score_threshold: float | None = 0.05,
                  max_detections: int = 100) -> MapBootstrap:
    """Patient-level bootstrap of mAP@0.5 for detectors evaluated on the same test images.

    ``results`` maps a detector name to its evaluations (one per seed); every evaluation must list the same image ids
    in the same order. ``patient_of`` maps an image id to its patient. Each replicate draws the test patients with
    replacement (all their images together) and recomputes every seed's AP on that resample.
    """
    evaluations = [e for runs in results.values() for e in runs]
    if not evaluations:
        raise ValueError("map_bootstrap: no detector results")
    ids = list(evaluations[0].image_ids)
    for name, runs in results.items():
        for run in runs:
            if list(run.image_ids) != ids:
                raise ValueError(f"map_bootstrap: {name!r} was evaluated on other test images than the first detector")
    missing = [i for i in ids if i not in patient_of]
    if missing:
        raise ValueError(f"map_bootstrap: image {missing[0]!r} has no patient (and {len(missing) - 1} more)")
    codes = pd.factorize(pd.Series([str(patient_of[i]) for i in ids]))[0]
    members = [np.flatnonzero(codes == c) for c in range(codes.max() + 1)]
    rng = np.random.default_rng(seed)
    resamples = [np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])
                 for _ in range(n_boot)]
    everyone = np.arange(len(ids))
    point, per_seed, replicates = {}, {}, {}
    for name, runs in results.items():
        matches = [image_matches(r, iou_threshold, score_threshold, max_detections) for r in runs]
        per_seed[name] = [ap_of(m, everyone) for m in matches]
        point[name] = float(np.mean(per_seed[name]))
        replicates[name] = np.array([np.mean([ap_of(m, index) for m in matches]) for index in resamples])
    return MapBootstrap(point, per_seed, replicates, len(ids), len(members))


# ------------------------------------------------------------------------------------------------------ checkpoints

def save_detector(model: nn.Module, out_dir: str | Path, history: TrainHistory | None = None,
                  train_config: DetectionTrainConfig | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model.safetensors`` (the whole detector, encoder included) and ``config.json`` (+ ``history.json``)."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"))
    payload = {"detector": model.detector_config.to_dict(), "train": asdict(train_config) if train_config else None,
               "extra": extra or {}}
    (out / "config.json").write_text(json.dumps(payload, indent=2, sort_keys=True))
    if history is not None:
        (out / "history.json").write_text(json.dumps(history.to_dict(), indent=2))
    return out


def load_detector(out_dir: str | Path, encoder: nn.Module) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a detector saved by :func:`save_detector` around ``encoder`` (same architecture) and load its weights."""
    from safetensors.torch import load_file

    out = Path(out_dir)
    config_path = out / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path}: not a detector checkpoint (config.json missing)")
    payload = json.loads(config_path.read_text())
    model = create_detector(encoder, DetectorConfig.from_dict(payload["detector"]))
    model.load_state_dict(load_file(str(out / "model.safetensors")))
    history = out / "history.json"
    payload["history"] = json.loads(history.read_text()) if history.is_file() else None
    return model, payload


# ------------------------------------------------------------------------------------------- notebook entry points

def detection_datasets(ctx: RunContext, config: DetectorConfig, val_fraction: float = 0.2, augment: BoxAugment | None = None,
                       seed: int | None = None,
                       ensure: bool = True) -> tuple[DetectionDataset, DetectionDataset, DetectionDataset]:
    """Train / validation / test datasets of ``config.finding`` from the built VinDr tables of ``ctx``.

    Training images (``split == training``) containing the finding are divided by patient into train and validation
    (``val_fraction``, seeded); the test images (``split == test``) containing it form the test set. The paper selected
    its best epoch on the test split; the kit holds a validation split out instead. ``ensure=False`` skips
    :func:`~mammoclip_kit.data.records.ensure_tables` (when the caller already ran it).
    """
    if ensure:
        from mammoclip_kit.data.records import ensure_tables

        ensure_tables(ctx)
    images = pd.read_csv(ctx.tables_dir / "vindr_images.csv", dtype={"image_id": str, "patient_id": str})
    boxes = pd.read_csv(ctx.tables_dir / "vindr_boxes.csv", dtype={"image_id": str})
    seed = ctx.seed if seed is None else seed
    chosen, chosen_boxes = select_finding_images(images, boxes, config.finding)
    train_all = chosen[chosen["split"] == "training"]
    test = chosen[chosen["split"] == "test"]
    if train_all.empty or test.empty:
        raise ValueError(f"{ctx.tables_dir / 'vindr_images.csv'}: need training and test images with a "
                         f"{config.finding!r} box; found {len(train_all)} training and {len(test)} test")
    train, val = split_train_val(train_all, val_fraction, seed)
    size = config.image_size
    root = ctx.output_dir
    return (DetectionDataset(train, chosen_boxes, root, config.finding, size, augment, seed),
            DetectionDataset(val, chosen_boxes, root, config.finding, size, None, seed),
            DetectionDataset(test, chosen_boxes, root, config.finding, size, None, seed))


def ensure_detector(ctx: RunContext, name: str, encoder: nn.Module, config: DetectorConfig,
                    train_config: DetectionTrainConfig,
                    datasets: tuple[DetectionDataset, DetectionDataset, DetectionDataset],
                    progress: bool = True, share_maps_with: nn.Module | None = None) -> tuple[nn.Module, TrainHistory]:
    """Load ``checkpoints/detector-<name>`` when it was trained with the same settings, else train and save it.

    ``encoder`` is a fresh image tower with its starting weights (for example ``EncoderSpec.load()`` from
    :func:`mammoclip_kit.eval.encoders.create_encoders`); the detector is built around it. "Same settings" means the
    same detector and training configuration, the same train / validation images and the same starting encoder
    weights (a fingerprint of them), so a retrained encoder retrains the detector; they are recorded in
    ``params.json`` (:class:`mammoclip_kit.artifacts.Artifact`). ``ctx.retrain`` forces training. The pyramid and heads
    are initialised from ``train_config.seed``, so seeds give independent detectors. ``share_maps_with`` (a detector on
    the same frozen ``encoder`` object, e.g. the previous seed's) lends its memo of encoder maps: the frozen encoder
    then runs once per image for all seeds.
    """
    from mammoclip_kit.eval.features import model_fingerprint

    out = ctx.checkpoint_dir(f"detector-{name}")
    data = {"train": sorted(datasets[0].images["image_id"]), "val": sorted(datasets[1].images["image_id"]),
            "encoder": model_fingerprint(encoder)}
    artifact = Artifact(out, {"detector": config.to_dict(), "train": asdict(train_config), "data": data})
    if artifact.is_current() and (out / "model.safetensors").is_file() and not ctx.retrain:
        model, payload = load_detector(out, encoder)
        history = TrainHistory(**payload["history"]) if payload.get("history") else TrainHistory()
        print(f"detector-{name}: loaded (trained earlier with the same settings; retrain=True recomputes)")
        return model.to(ctx.device), history
    torch.manual_seed(train_config.seed)
    model = create_detector(encoder, config)
    if share_maps_with is not None and config.freeze_encoder and config.memoize_encoder:
        model.backbone.share_memo(share_maps_with.backbone)
    history = train_detector(model, datasets[0], datasets[1], train_config, device=ctx.device, progress=progress)
    save_detector(model, out, history=history, train_config=train_config)
    artifact.commit()
    return model, history


# ---------------------------------------------------------------------------------------------------------- figures

def _image_for_display(image: Any) -> np.ndarray:
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
        if image.ndim == 3:
            image = image[0]
    return np.asarray(image, dtype=np.float32)


_RANK_COLOURS = ("orange", "deepskyblue", "magenta", "yellow", "red")


def draw_detections(ax: Any, image: Any, pred_boxes: Any = None, scores: Any = None, true_boxes: Any = None,
                    score_threshold: float = 0.3, max_boxes: int = 5, title: str | None = None) -> Any:
    """Draw an image with true boxes (green, solid) and predicted boxes (dashed) on ``ax``.

    Scores are not written on the image, where the labels of overlapping boxes would overlap too: with up to five
    boxes each gets its own colour and a legend line under the image ("#1 0.83"); with more, one colour and one legend
    line with the range of scores.
    """
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    ax.imshow(_image_for_display(image), cmap="gray")
    handles = []
    truth = np.asarray(true_boxes if true_boxes is not None else [], dtype=float).reshape(-1, 4)
    for box in truth:
        ax.add_patch(Rectangle((box[0], box[1]), box[2] - box[0], box[3] - box[1], fill=False, color="lime", lw=1.5))
    if len(truth):
        handles.append(Line2D([], [], color="lime", lw=1.5, label="truth"))
    if pred_boxes is not None:
        boxes = np.asarray(pred_boxes, dtype=float).reshape(-1, 4)
        s = np.asarray(scores if scores is not None else np.ones(len(boxes)), dtype=float).reshape(-1)
        order = [i for i in np.argsort(-s)[:max_boxes] if s[i] >= score_threshold]
        one_colour = len(order) > len(_RANK_COLOURS)
        for rank, i in enumerate(order):
            box = boxes[i]
            colour = _RANK_COLOURS[0] if one_colour else _RANK_COLOURS[rank]
            ax.add_patch(Rectangle((box[0], box[1]), box[2] - box[0], box[3] - box[1], fill=False, color=colour,
                                   lw=1.2, ls="--"))
            if not one_colour:
                handles.append(Line2D([], [], color=colour, lw=1.2, ls="--", label=f"#{rank + 1} {s[i]:.2f}"))
        if one_colour:
            handles.append(Line2D([], [], color=_RANK_COLOURS[0], lw=1.2, ls="--",
                                  label=f"{len(order)} boxes, {s[order].min():.2f}–{s[order].max():.2f}"))
        elif not order:
            handles.append(Line2D([], [], color="none", label=f"no box ≥ {score_threshold:g}"))
    if handles:
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), fontsize=7, frameon=False,
                  ncol=1, handlelength=1.5)
    if title:
        ax.set_title(title, fontsize=9)
    ax.set_axis_off()
    return ax


def draw_anchors(ax: Any, image: Any, config: DetectorConfig, levels: Sequence[int] = (3, 5, 7),
                 cell: tuple[float, float] | None = None) -> Any:
    """Draw the 9 anchors of one cell per pyramid level (one colour per level) at ``cell`` (default: image centre)."""
    from matplotlib.patches import Rectangle

    img = _image_for_display(image)
    h, w = img.shape[:2]
    ax.imshow(img, cmap="gray")
    gen = PaperAnchorGenerator(config.anchor_sizes_per_level(), config.anchor_ratios)
    colours = ["tab:red", "tab:orange", "gold", "tab:cyan", "tab:purple"]
    cy, cx = cell if cell is not None else (h / 2, w / 2)
    for level in levels:
        i = PYRAMID_LEVELS.index(level)
        stride = gen.strides[i]
        centre_x = (math.floor(cx / stride) + 0.5) * stride
        centre_y = (math.floor(cy / stride) + 0.5) * stride
        for box in gen.cell_anchors[i].numpy():
            ax.add_patch(Rectangle((centre_x + box[0], centre_y + box[1]), box[2] - box[0], box[3] - box[1],
                                   fill=False, color=colours[i], lw=0.8))
        ax.plot([], [], color=colours[i], label=f"P{level} (stride {stride})")
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.legend(loc="lower right", fontsize=7)
    ax.set_axis_off()
    return ax


def plot_precision_recall(ax: Any, result: APResult, label: str | None = None) -> Any:
    """The precision–recall curve of a VOC AP result, with the precision envelope the AP integrates."""
    recall = np.asarray(result.recall, dtype=float)
    precision = np.asarray(result.precision, dtype=float)
    first = precision[:1] if len(precision) else np.zeros(1)
    recall, precision = np.concatenate([[0.0], recall]), np.concatenate([first, precision])
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    line = ax.plot(recall, precision, alpha=0.5, lw=1, label=f"{label or 'detector'} (raw)")[0]
    # Between two recall values the AP uses the envelope at the higher one: a "pre" step.
    ax.step(recall, envelope, where="pre", color=line.get_color(), lw=2,
            label=f"{label or 'detector'} envelope, AP = {result.ap:.3f}")
    ax.fill_between(recall, envelope, step="pre", alpha=0.15, color=line.get_color())
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    return ax


# ---------------------------------------------------------------------------------------------------------- settings

@dataclass
class DetectionSettings:
    """The profile's ``detection:`` section, resolved for one finding and one encoder mode."""

    detector: DetectorConfig
    train: DetectionTrainConfig
    augment: BoxAugment | None
    val_fraction: float


def detection_settings(ctx: RunContext, finding: str = "Mass", mode: str = "frozen",
                       encoder: nn.Module | None = None) -> DetectionSettings:
    """Resolve ``ctx.section("detection")`` for ``finding`` and ``mode`` (``"frozen"`` or ``"finetune"``).

    The section holds ``model:`` (:class:`DetectorConfig` fields), ``train:`` (:class:`DetectionTrainConfig` fields),
    ``augment:`` (``true``, ``false`` or :class:`BoxAugment` fields), ``val_fraction`` and per-mode overrides
    ``frozen:`` / ``finetune:`` with the same three sub-sections. The vocabulary parameters ``max_steps``,
    ``batch_size``, ``num_workers`` and ``seed`` override the training settings. With ``encoder`` (the image tower the
    detector will use) an unset ``model.image_size`` becomes the encoder's own input size, and a set one that differs
    from it is printed (:func:`mammoclip_kit.inference.resolve_image_size`).
    """
    if mode not in ("frozen", "finetune"):
        raise ValueError(f"detection mode {mode!r}: expected 'frozen' or 'finetune'")
    section = ctx.section("detection")
    override = dict(section.get(mode) or {})
    model = {**dict(section.get("model") or {}), **dict(override.get("model") or {})}
    train = {**dict(section.get("train") or {}), **dict(override.get("train") or {})}
    augment = override.get("augment", section.get("augment", True))
    model.update(finding=finding, freeze_encoder=(mode == "frozen"))
    where = f"detection section ({mode})"
    detector = DetectorConfig.from_dict(model, where=f"{where}.model")
    if encoder is not None:
        size = resolve_image_size(encoder, detector.image_size, where=f"detector ({finding}, {mode})")
        detector = replace(detector, image_size=size)
    for parameter, name in DetectionTrainConfig.PARAMETERS.items():
        if ctx.params.get(parameter) is not None:
            train[name] = ctx.params[parameter]
    train.setdefault("seed", ctx.seed)
    if isinstance(augment, dict):
        augment_cfg: BoxAugment | None = BoxAugment(**augment)
    else:
        augment_cfg = BoxAugment() if augment else None
    return DetectionSettings(detector=detector, train=DetectionTrainConfig.from_dict(train, where=f"{where}.train"),
                             augment=augment_cfg, val_fraction=float(section.get("val_fraction", 0.2)))
