"""Mammo-FActOR's mappers: the stage config, the per-attribute channel mapper, its contrastive loss and its training.

Each channel of the frozen image tower's last feature map is a "region" described by its flattened spatial activation
(h·w values). One small mapper per attribute (Linear–ReLU–Linear) sends every channel's descriptor into the text space;
training pulls, for each image that has the attribute, its best-aligned channel towards the attribute's text embedding,
and pushes the best channels of images without it away (the paper's §2.3).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mammoclip_kit.config import StageConfig
from mammoclip_kit.factor.data import ATTRIBUTES

DESCRIPTORS = ("flat", "sorted")


@dataclass
class FactorConfig(StageConfig):
    """Settings of Mammo-FActOR: the ``factor:`` section of a profile (:meth:`from_context` also maps the notebook's
    ``batch_size`` onto the mapper's batch size)."""

    SECTION: ClassVar[str] = "factor"
    PARAMETERS: ClassVar[dict[str, str]] = {"batch_size": "batch_size"}

    attributes: tuple[str, ...] = ("mass", "suspicious_calcification")
    hidden: int | None = None        # mapper hidden width; None = the descriptor's length (h·w, as the released code)
    descriptor: str = "flat"         # a channel's region descriptor: flat = its h·w activations in place (the paper);
                                     # sorted = its descriptor_size largest activations, sorted (where it peaks does
                                     # not matter, how strongly and how widely does; see AttributeMapper)
    descriptor_size: int = 96        # values kept by the sorted descriptor (at most h·w)
    temperature: float = 0.07        # as the authors' released code
    lr: float = 1.0e-4               # AdamW, as the authors' released code
    reference_lr: float | None = None  # the paper-reference mapper's (last map, flat descriptor; notebook 09); None = lr
    weight_decay: float = 0.01       # AdamW's default (the released code kept it)
    epochs: int = 20
    batch_size: int = 8
    patience: int = 5                # early stopping: epochs without a lower validation loss
    val_fraction: float = 0.2        # training patients held out for early stopping (the released code: the test split)
    train_rows: str = "findings"     # findings = images with any attribute (the released code); all = every image
    restarts: int = 1                # independently seeded mappers of the stride map on train_rows (seeds seed, seed+1,
                                     # …); notebook 09 picks one per attribute on validation images
    top_k: int = 20                  # channels combined into a heatmap
    top_k_choices: tuple[int, ...] = ()  # top_k values compared on validation images (notebook 09); () = top_k only
    stride: int | None = None        # map the mapper and heatmaps read: None = the last map (the paper); 16, 8 = an
                                     # intermediate stage's output (finer grid, fewer channels)
    channel_weights: str = "image"   # image = each image's own top-k alignments (the paper); contrast = one weighting
                                     # per attribute from the training images (see factor.heatmaps.channel_contrast)
    stitch: int = 1                  # heatmaps on the last map sampled stitch× more densely (shift-and-stitch); 1 = as is
    ceiling_images: int = 96         # training images with a box that fit the box-supervised reference (notebook 09)
    quantile: float = 0.95           # heatmap threshold (the paper: the 95th percentile)
    margin: int = 0                  # pixels of the breast's edge left out of every heatmap (factor.tissue_mask)
    max_boxes: int = 10              # boxes kept per heatmap (highest scores)
    max_sentences: int = 64          # report sentences per attribute embedding
    batch_size_encode: int = 16      # images per feature-map batch
    thresholds: tuple[float, ...] = (0.8, 0.9, 0.95, 0.98)  # quantiles compared by the notebook

    def __post_init__(self) -> None:
        self.attributes = tuple(self.attributes)
        self.thresholds = tuple(self.thresholds)
        self.top_k_choices = tuple(int(k) for k in self.top_k_choices)
        self.restarts = int(self.restarts)
        self.descriptor_size = int(self.descriptor_size)
        if self.descriptor not in DESCRIPTORS:
            raise ValueError(f"factor settings: descriptor must be one of {list(DESCRIPTORS)}, got {self.descriptor!r}")
        if self.descriptor_size < 1:
            raise ValueError(f"factor settings: descriptor_size must be >= 1, got {self.descriptor_size}")
        if self.reference_lr is not None and not float(self.reference_lr) > 0:
            raise ValueError(f"factor settings: reference_lr must be a positive learning rate or null, got "
                             f"{self.reference_lr}")
        if self.restarts < 1:
            raise ValueError(f"factor settings: restarts must be >= 1 (mappers trained), got {self.restarts}")
        if int(self.top_k) < 1 or any(k < 1 for k in self.top_k_choices):
            raise ValueError(f"factor settings: top_k and top_k_choices must be >= 1, got {self.top_k} and "
                             f"{list(self.top_k_choices)}")
        bad = [a for a in self.attributes if a not in ATTRIBUTES]
        if bad:
            raise ValueError(f"factor settings: unknown attribute(s) {bad}; known: {sorted(ATTRIBUTES)}")
        if not 0.0 < self.quantile < 1.0:
            raise ValueError(f"factor settings: quantile must lie in (0, 1), got {self.quantile}")
        if int(self.stitch) < 1:
            raise ValueError(f"factor settings: stitch must be a positive integer, got {self.stitch}")
        if self.stride is not None and int(self.stride) not in (4, 8, 16, 32):
            raise ValueError(f"factor settings: stride must be None or one of 4, 8, 16, 32, got {self.stride}")
        if self.channel_weights not in ("image", "contrast"):
            raise ValueError(f"factor settings: channel_weights must be 'image' or 'contrast', got "
                             f"{self.channel_weights!r}")
        if self.train_rows not in ("findings", "all"):
            raise ValueError(f"factor settings: train_rows must be 'findings' or 'all', got {self.train_rows!r}")

    def paper_reference(self) -> FactorConfig:
        """These settings for the paper-reference mapper (the last map): the paper's flat descriptor, trained at
        ``reference_lr`` when the profile sets one."""
        return dataclasses.replace(self, descriptor="flat", lr=self.reference_lr or self.lr)


# ----------------------------------------------------------------------------------------------------------------------
# Mapper and loss


class AttributeMapper(nn.Module):
    """One Linear–ReLU–Linear head per attribute, applied to every channel's region descriptor.

    ``forward(maps)`` takes feature maps ``(B, C, h, w)`` (or ``(B, C, h·w)``) and returns region embeddings
    ``(B, C, A, D)``: channel ``c`` of image ``b`` as seen by attribute ``a``'s head. The descriptor of a channel is
    (:meth:`describe`):

    * ``"flat"`` (the paper): its ``h·w`` activations in place, ``in_dim = h·w``. A head then has to learn a lesion
      detector for every position of the grid separately;
    * ``"sorted"`` (a documented kit variant): its ``in_dim`` largest activations in decreasing order. The descriptor no
      longer says *where* the channel peaks, only how strongly and over how many cells — what tells a channel that
      answers a local finding from one that answers texture or density, wherever the lesion lies.

    The descriptors are divided by ``scale`` (a buffer set from the training descriptors' standard deviation) so that
    the learning rate does not depend on the tower's activation range.

    Unlike the authors' released code, the two heads' outputs are stacked on a new axis; that code concatenated them
    along the channel axis and reshaped with ``view(-1, 2, 512)``, which pairs consecutive channels of one head instead
    of the two heads of one channel.
    """

    def __init__(self, in_dim: int, embed_dim: int, attributes: Sequence[str], hidden: int | None = None,
                 descriptor: str = "flat") -> None:
        super().__init__()
        if in_dim < 1 or embed_dim < 1:
            raise ValueError(f"AttributeMapper: in_dim and embed_dim must be positive, got {in_dim}, {embed_dim}")
        if descriptor not in DESCRIPTORS:
            raise ValueError(f"AttributeMapper: descriptor must be one of {list(DESCRIPTORS)}, got {descriptor!r}")
        self.attributes = tuple(attributes)
        self.in_dim, self.embed_dim, self.descriptor = int(in_dim), int(embed_dim), descriptor
        hidden = int(hidden or in_dim)
        self.heads = nn.ModuleDict({a: nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, embed_dim))
                                    for a in self.attributes})
        self.register_buffer("scale", torch.tensor(1.0))

    def describe(self, maps: torch.Tensor) -> torch.Tensor:
        """Every channel's descriptor ``(B, C, in_dim)`` (before scaling) from maps ``(B, C, h, w)`` or ``(B, C, h·w)``."""
        x = maps.flatten(2) if maps.dim() == 4 else maps
        cells = x.shape[-1] if x.dim() == 3 else -1
        if x.dim() != 3 or (self.descriptor == "flat" and cells != self.in_dim) or cells < self.in_dim:
            need = f"h·w = {self.in_dim}" if self.descriptor == "flat" else f"h·w ≥ {self.in_dim}"
            raise ValueError(f"AttributeMapper: expected (B, C, h, w) maps with {need} ({self.descriptor} descriptor), "
                             f"got shape {tuple(maps.shape)}")
        x = x.float()
        if self.descriptor == "sorted":
            x = x.topk(self.in_dim, dim=-1).values  # sorted, largest first
        return x

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        x = self.describe(maps) / self.scale
        return torch.stack([self.heads[a](x) for a in self.attributes], dim=2)


def factor_loss(region_emb: torch.Tensor, attr_emb: torch.Tensor, labels: torch.Tensor,
                temperature: float = 0.07) -> torch.Tensor:
    """The Mammo-FActOR contrastive loss (the paper's §2.3).

    ``region_emb`` ``(B, C, A, D)`` from :class:`AttributeMapper`, ``attr_emb`` ``(A, D)``, ``labels`` ``(B, A)`` in
    {0, 1}. Both embeddings are L2-normalised; ``s[b, a] = max_c ⟨r[b, c, a], t[a]⟩ / temperature`` is the best channel
    of image ``b`` for attribute ``a``. Only attributes with ≥ 1 positive in the batch count. For each positive
    ``(i, a)``::

        loss_ia = −log( exp(s_ia) / (exp(s_ia) + Σ_b exp(s_ba · (1 − y_ba))) )

    so negatives contribute ``exp(s_ba)`` and every positive of the batch contributes ``exp(0) = 1`` (the form of the
    authors' released code, kept). The result is the sum over positives divided by their number; with no positive at
    all it is 0 (still attached to the graph). Computed with log-sum-exp for stability.
    """
    if region_emb.dim() != 4:
        raise ValueError(f"factor_loss: region_emb must be (B, C, A, D), got {tuple(region_emb.shape)}")
    b, _, a, d = region_emb.shape
    if attr_emb.shape != (a, d):
        raise ValueError(f"factor_loss: attr_emb must be ({a}, {d}), got {tuple(attr_emb.shape)}")
    if labels.shape != (b, a):
        raise ValueError(f"factor_loss: labels must be ({b}, {a}), got {tuple(labels.shape)}")
    regions = F.normalize(region_emb.float(), dim=-1)
    texts = F.normalize(attr_emb.float().to(regions.device), dim=-1)
    s = torch.einsum("bcad,ad->bca", regions, texts).amax(dim=1) / temperature  # (B, A)
    y = labels.float().to(s.device)
    keep = y.sum(0) > 0
    if not bool(keep.any()):
        return s.sum() * 0.0
    s, y = s[:, keep], y[:, keep]
    column = torch.logsumexp(s * (1.0 - y), dim=0, keepdim=True).expand_as(s)
    log_denominator = torch.logaddexp(s, column)
    return ((log_denominator - s) * y).sum() / y.sum()


# ----------------------------------------------------------------------------------------------------------------------
# Training


@dataclass
class MapperHistory:
    """Per-epoch losses of a mapper training run and the epoch that was kept."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0
    stopped_early: bool = False

    def to_frame(self):
        import pandas as pd

        n = len(self.train_loss)
        val = self.val_loss + [float("nan")] * (n - len(self.val_loss))
        return pd.DataFrame({"epoch": np.arange(1, n + 1), "train_loss": self.train_loss, "val_loss": val})


def _labels_tensor(labels: Any, n: int, n_attr: int, name: str) -> torch.Tensor:
    y = torch.as_tensor(np.asarray(labels, dtype=np.float32))
    if y.shape != (n, n_attr):
        raise ValueError(f"train_mapper: {name} must be ({n}, {n_attr}) (images × attributes), got {tuple(y.shape)}")
    if not torch.all((y == 0) | (y == 1)):
        raise ValueError(f"train_mapper: {name} must hold 0/1 values")
    return y


def _epoch_loss(mapper: AttributeMapper, maps: torch.Tensor, labels: torch.Tensor, attr_emb: torch.Tensor,
                order: torch.Tensor, batch_size: int, temperature: float, device: torch.device,
                optimizer: torch.optim.Optimizer | None = None) -> float:
    total, weight = 0.0, 0.0
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        y = labels[idx]
        n_pos = float(y.sum())
        if n_pos == 0:
            continue
        region = mapper(maps[idx].to(device))
        loss = factor_loss(region, attr_emb, y.to(device), temperature)
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        total += float(loss.detach()) * n_pos
        weight += n_pos
    return total / weight if weight else float("nan")


def train_mapper(maps: torch.Tensor, labels: Any, attr_emb: torch.Tensor, config: FactorConfig | None = None, *,
                 val_maps: torch.Tensor | None = None, val_labels: Any = None, seed: int = 0, device: Any = None,
                 progress: bool = True) -> tuple[AttributeMapper, MapperHistory]:
    """Train one :class:`AttributeMapper` on cached feature maps ``(N, C, h, w)`` with :func:`factor_loss`.

    ``labels`` ``(N, A)`` mark which images have each attribute (order of ``config.attributes``); ``attr_emb`` is
    ``(A, D)``. AdamW (``config.lr``, ``config.weight_decay``), shuffled mini-batches of ``config.batch_size`` (seeded),
    batches without any positive skipped; each channel is described as ``config.descriptor`` says (see
    :class:`AttributeMapper`). With validation maps, the epoch with the lowest validation loss is kept and
    training stops after ``config.patience`` epochs without improvement; without them, the last epoch is kept.
    """
    config = config or FactorConfig()
    device = torch.device(device) if device is not None else torch.device("cpu")
    if maps.dim() != 4:
        raise ValueError(f"train_mapper: maps must be (N, C, h, w), got {tuple(maps.shape)}")
    n, _, h, w = maps.shape
    n_attr = len(config.attributes)
    y = _labels_tensor(labels, n, n_attr, "labels")
    if attr_emb.shape[0] != n_attr:
        raise ValueError(f"train_mapper: attr_emb has {attr_emb.shape[0]} rows, config.attributes has {n_attr}")
    has_val = val_maps is not None and len(val_maps) > 0
    if has_val:
        val_y = _labels_tensor(val_labels, len(val_maps), n_attr, "val_labels")
    generator = torch.Generator().manual_seed(int(seed))
    in_dim = h * w if config.descriptor == "flat" else min(config.descriptor_size, h * w)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        mapper = AttributeMapper(in_dim, attr_emb.shape[1], config.attributes, config.hidden, config.descriptor)
    mapper.scale.fill_(float(mapper.describe(maps).std().clamp_min(1e-6)))
    mapper.to(device)
    attr_emb = attr_emb.float().to(device)
    optimizer = torch.optim.AdamW(mapper.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    history = MapperHistory()
    best_loss, best_state, waited = float("inf"), None, 0
    start = time.perf_counter()
    epochs = range(1, int(config.epochs) + 1)
    if progress:
        from mammoclip_kit.env import progress_bar as tqdm

        epochs = tqdm(epochs, desc="mapper epochs", unit="epoch")
    for epoch in epochs:
        mapper.train()
        order = torch.randperm(n, generator=generator)
        history.train_loss.append(_epoch_loss(mapper, maps, y, attr_emb, order, config.batch_size,
                                              config.temperature, device, optimizer))
        if not has_val:
            history.best_epoch = epoch
            continue
        mapper.eval()
        with torch.no_grad():
            val_loss = _epoch_loss(mapper, val_maps, val_y, attr_emb, torch.arange(len(val_maps)),
                                   config.batch_size, config.temperature, device)
        history.val_loss.append(val_loss)
        if val_loss < best_loss - 1e-6:
            best_loss, best_state, waited = val_loss, copy.deepcopy(mapper.state_dict()), 0
            history.best_epoch = epoch
        else:
            waited += 1
            if waited >= config.patience:
                history.stopped_early = True
                break
    if best_state is not None:
        mapper.load_state_dict(best_state)
    mapper.eval()
    history.seconds = time.perf_counter() - start
    return mapper, history


def channel_alignment(mapper: AttributeMapper, maps: torch.Tensor, attr_emb: torch.Tensor,
                      batch_size: int = 64) -> torch.Tensor:
    """Cosine between every channel's mapped embedding and every attribute embedding → ``(N, C, A)`` (CPU)."""
    device = next(mapper.parameters()).device
    texts = F.normalize(attr_emb.float().to(device), dim=-1)
    out = []
    with torch.no_grad():
        for start in range(0, len(maps), batch_size):
            region = F.normalize(mapper(maps[start:start + batch_size].to(device)), dim=-1)
            out.append(torch.einsum("bcad,ad->bca", region, texts).cpu())
    return torch.cat(out) if out else torch.zeros(0, maps.shape[1], len(mapper.attributes))
