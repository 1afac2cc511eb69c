"""A formula-driven stand-in for ImageNet initialisation: pretrain the image tower on procedurally drawn shapes.

The paper's image towers start from ImageNet weights (EfficientNet-B2/B5, docs/reference-notes.md §2); the
contrastive stage only has to *align* features that already exist. Those weights cannot be downloaded here,
and an EfficientNet trained from scratch in a few CPU minutes of image–report contrast learns the easy, global
cues first (breast shape, density) and not small findings. Formula-driven supervised learning (Kataoka et al.,
ACCV 2020, "FractalDB"; Baradad et al., NeurIPS 2021, "Learning to see by looking at noise") shows that images
drawn from formulas can replace natural images for pretraining. This module does the smallest useful version
of that: every image is a 1/f^β noise background with one to three copies of one primitive (:data:`SHAPES`:
disks, rings, squares, triangles, stars, bars, dot clusters, or nothing), of random size, position, contrast
sign and blur; the tower learns to name the primitive. Nothing here comes from a mammogram, a report or a
label of the cohort.

Public API: :data:`SHAPES`, :func:`render_shapes`, :class:`ShapesConfig`, :func:`pretrain_on_shapes`,
:func:`load_shapes_init`, :func:`ensure_shapes_init` (what ``image_init: shapes`` in a pretraining config runs).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from mammoclip_kit.artifacts import ensure
from mammoclip_kit.config import StageConfig

__all__ = ["SHAPES", "render_shapes", "ShapesConfig", "pretrain_on_shapes", "load_shapes_init",
           "ensure_shapes_init"]

#: The classes of the formula-driven task (index = label).
SHAPES: tuple[str, ...] = ("none", "disk", "ring", "square", "triangle", "star", "bar", "dots")


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    from mammoclip_kit.cohort.phantom import powerlaw_noise

    field = powerlaw_noise(rng, (height, width), beta=float(rng.uniform(1.5, 3.5)),
                           stretch=float(rng.uniform(1.0, 3.0)), angle_deg=float(rng.uniform(0, 180)))
    return (0.5 + float(rng.uniform(0.05, 0.2)) * field).astype(np.float32)


def _polygon(center: tuple[float, float], radius: float, corners: int, rotation: float,
             inner: float | None = None) -> np.ndarray:
    points = []
    steps = corners * (2 if inner is not None else 1)
    for k in range(steps):
        angle = rotation + 2 * math.pi * k / steps
        r = radius if inner is None or k % 2 == 0 else radius * inner
        points.append((center[0] + r * math.cos(angle), center[1] + r * math.sin(angle)))
    return np.round(np.asarray(points)).astype(np.int32)


def _draw(mask: np.ndarray, shape: str, rng: np.random.Generator, scale: float) -> None:
    height, width = mask.shape
    radius = float(rng.uniform(5.0, 22.0)) * scale
    cx, cy = float(rng.uniform(radius, width - radius)), float(rng.uniform(radius, height - radius))
    center = (int(round(cx)), int(round(cy)))
    rotation = float(rng.uniform(0, 2 * math.pi))
    if shape == "disk":
        axes = (max(1, int(radius)), max(1, int(radius * rng.uniform(0.6, 1.0))))
        cv2.ellipse(mask, center, axes, math.degrees(rotation), 0, 360, 1.0, -1)
    elif shape == "ring":
        axes = (max(2, int(radius)), max(2, int(radius * rng.uniform(0.7, 1.0))))
        cv2.ellipse(mask, center, axes, math.degrees(rotation), 0, 360, 1.0, max(1, int(radius / 4)))
    elif shape in ("square", "triangle"):
        cv2.fillPoly(mask, [_polygon((cx, cy), radius, 4 if shape == "square" else 3, rotation)], 1.0)
    elif shape == "star":
        cv2.fillPoly(mask, [_polygon((cx, cy), radius, int(rng.integers(5, 9)), rotation, inner=0.35)], 1.0)
    elif shape == "bar":
        dx, dy = 1.6 * radius * math.cos(rotation), 1.6 * radius * math.sin(rotation)
        cv2.line(mask, (int(cx - dx), int(cy - dy)), (int(cx + dx), int(cy + dy)), 1.0, max(1, int(radius / 4)))
    elif shape == "dots":
        for _ in range(int(rng.integers(4, 12))):
            px, py = cx + rng.normal(0, radius / 2), cy + rng.normal(0, radius / 2)
            cv2.circle(mask, (int(px), int(py)), max(1, int(round(rng.uniform(0.8, 2.2) * scale))), 1.0, -1)
    elif shape != "none":
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def render_shapes(rng: np.random.Generator, label: int, height: int, width: int) -> np.ndarray:
    """One ``height × width`` float32 image in ``[0, 1]`` showing 1–3 copies of ``SHAPES[label]`` on 1/f^β noise.

    Each copy has its own size (3–18 px radius at 224 × 128, scaled with the image), position and contrast (brighter or
    darker than the background by 0.15–0.5), and the whole drawing is blurred by σ ∈ [0, 1.5] px, so that the class is
    the primitive's *shape* only. Deterministic for a given generator state.
    """
    if not 0 <= label < len(SHAPES):
        raise ValueError(f"label {label} out of range: {len(SHAPES)} shapes {SHAPES}")
    image = _background(rng, height, width)
    scale = math.sqrt(height * width / (224 * 128))
    for _ in range(int(rng.integers(1, 4))):
        mask = np.zeros((height, width), dtype=np.float32)
        _draw(mask, SHAPES[label], rng, scale)
        sign = 1.0 if rng.random() < 0.7 else -1.0
        image += sign * float(rng.uniform(0.2, 0.6)) * mask
    sigma = float(rng.uniform(0.0, 1.5))
    if sigma > 0.3:
        image = cv2.GaussianBlur(image, (0, 0), sigma)
    return np.clip(image, 0.0, 1.0)


@dataclass
class ShapesConfig(StageConfig):
    """The formula-driven pretraining of an image tower (defaults: about 2 minutes for the classroom tower on 2 cores).

    A pretraining config's ``shapes`` mapping holds these fields (:meth:`~mammoclip_kit.config.StageConfig.from_dict`
    rejects unknown ones); ``image_size`` and ``seed`` come from the pretraining run.
    """

    steps: int = 300
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 20
    image_size: tuple[int, int] = (224, 128)
    seed: int = 0


class _ShapeBatches(torch.utils.data.IterableDataset):
    def __init__(self, cfg: ShapesConfig) -> None:
        self.cfg = cfg

    def __iter__(self):
        from mammoclip_kit.data.transforms import to_model_input

        height, width = self.cfg.image_size
        for step in range(self.cfg.steps):
            rng = np.random.default_rng([self.cfg.seed, step])
            labels = rng.integers(0, len(SHAPES), size=self.cfg.batch_size)
            images = [to_model_input(render_shapes(rng, int(label), height, width)) for label in labels]
            yield torch.stack(images), torch.as_tensor(labels)


def pretrain_on_shapes(tower: nn.Module, cfg: ShapesConfig | None = None, *, out_dir: str | Path | None = None,
                       device: Any = None, progress: bool = True) -> dict[str, Any]:
    """Train ``tower`` (in place) with a linear head to name the shape of :func:`render_shapes` images.

    Returns a summary (loss and accuracy over the last 20 steps, seconds). With ``out_dir`` the tower's weights are saved
    as ``image_tower.safetensors`` with ``shapes.json`` (config + summary); :func:`load_shapes_init` reads them back.
    """
    from mammoclip_kit.env import progress_bar as tqdm

    cfg = cfg or ShapesConfig()
    device = torch.device(device) if device is not None else torch.device("cpu")
    torch.manual_seed(cfg.seed)
    head = nn.Linear(int(tower.num_features), len(SHAPES))
    model = nn.Sequential(tower, head).to(device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        return 0.5 * (1 + math.cos(math.pi * (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    losses, hits = [], []
    start = time.perf_counter()
    for images, labels in tqdm(_ShapeBatches(cfg), total=cfg.steps, desc="shapes pretraining", disable=not progress):
        images, labels = images.to(device), labels.to(device)
        logits = model(images)
        loss = nn.functional.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        hits.append(float((logits.argmax(1) == labels).float().mean()))
    tower.eval()
    summary = {"steps": cfg.steps, "final_loss": float(np.mean(losses[-20:])),
               "final_accuracy": float(np.mean(hits[-20:])), "chance_accuracy": 1 / len(SHAPES),
               "seconds": time.perf_counter() - start}
    if out_dir is not None:
        from safetensors.torch import save_file

        folder = Path(out_dir)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in tower.state_dict().items()},
                  str(folder / "image_tower.safetensors"))
        (folder / "shapes.json").write_text(json.dumps({"config": asdict(cfg), "summary": summary,
                                                        "shapes": list(SHAPES)}, indent=2))
    return summary


def load_shapes_init(tower: nn.Module, folder: str | Path) -> nn.Module:
    """Load ``folder/image_tower.safetensors`` (written by :func:`pretrain_on_shapes`) into ``tower`` (strict)."""
    from safetensors.torch import load_file

    path = Path(folder) / "image_tower.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no shapes-pretrained image tower (run pretrain_on_shapes first)")
    tower.load_state_dict(load_file(str(path)))
    return tower


def ensure_shapes_init(image_config: Any, image_size: tuple[int, int], settings: dict[str, Any] | None,
                       folder: str | Path, *, seed: int = 0, device: Any = None, progress: bool = True,
                       retrain: bool = False) -> Path:
    """The shapes-pretrained image tower of ``image_config`` (an
    :class:`~mammoclip_kit.models.towers.ImageTowerConfig`) at ``image_size``: reused from ``folder`` when it was
    trained there with the same tower, size and settings (:func:`mammoclip_kit.artifacts.ensure`, record
    ``folder/params.json``), trained (and saved there) otherwise or with ``retrain``. Returns ``folder``."""
    from mammoclip_kit.models.towers import create_image_tower

    cfg = ShapesConfig.from_dict({**(settings or {}), "image_size": tuple(int(v) for v in image_size), "seed": seed},
                                 where="shapes settings")
    folder = Path(folder)

    def build(path: Path) -> Path:
        if progress:
            print(f"shapes init: training the {image_config.name} image tower on drawn shapes ({cfg.steps} steps)")
        torch.manual_seed(seed)
        tower = create_image_tower(image_config)
        pretrain_on_shapes(tower, cfg, out_dir=path, device=device, progress=progress)
        return path

    def reuse(path: Path) -> Path:
        if progress:
            print(f"shapes init: loading {path.name} (same tower and settings)")
        return path

    missing = not (folder / "image_tower.safetensors").is_file()
    return ensure(folder, {"tower": asdict(image_config), "config": cfg.to_dict()}, build, load=reuse,
                  retrain=retrain or missing, verbose=False)
