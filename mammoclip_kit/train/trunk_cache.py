"""A frozen, cached trunk: the classroom's way to fit many pretraining steps into CPU minutes.

The early stages of an EfficientNet hold most of its compute at full resolution (measured on Lite0 at 320 × 192,
2 CPU cores: the stem and stages 1–3 take about 70 % of a forward pass) and, started from ImageNet, compute generic
edge and blob detectors that a few hundred steps of report supervision would barely change. So the classroom
pretraining freezes them (``freeze_blocks``), runs them once per image and caches their output (``cache_trunk``);
each step then runs only the later stages and the text tower, forward and backward — about ten times faster. The
price: no image augmentation (each image has one cached map), which the report pretraining survives at this scale.

Public API: :func:`attach_trunk_cache`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from mammoclip_kit import env

__all__ = ["attach_trunk_cache", "dataset_parts", "trunk_fingerprint"]

# (trunk fingerprint, blocks, image size, root, file) -> map: the variants of one notebook share a frozen ImageNet
# trunk, so the second variant reuses the first one's maps instead of recomputing them
_MEMO: dict[tuple[Any, ...], torch.Tensor] = {}
_MEMO_MAX_ITEMS = 20_000


def trunk_fingerprint(tower: nn.Module, blocks: int) -> str:
    """A hash of the trunk's weights and statistics (stem + ``blocks`` stages): equal trunks give equal maps."""
    inner = getattr(tower, "model", tower)
    digest = hashlib.sha256(str(blocks).encode())
    for module in (inner.conv_stem, inner.bn1, *inner.blocks[:blocks]):
        for value in module.state_dict().values():
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def dataset_parts(dataset: Any) -> list[Any]:
    """The image datasets inside ``dataset`` (the parts of a ``ConcatDataset``, or the dataset itself)."""
    return list(getattr(dataset, "datasets", [dataset]))


@torch.no_grad()
def attach_trunk_cache(tower: nn.Module, datasets: Iterable[Any], blocks: int, *, batch_size: int = 32,
                       device: torch.device | str = "cpu", channels_last: bool = False, progress: bool = True,
                       dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """Run ``tower.forward_trunk(x, blocks)`` once on every file of ``datasets`` and make them return the result.

    Each dataset must be one of :mod:`mammoclip_kit.data.datasets` (``files()``, ``model_input()``,
    ``feature_cache``); its images are read un-augmented. The maps are stored in ``dtype`` (half by default: a
    40 × 40 × 24 map of a 320 × 192 image takes 77 kB) and shared between datasets. Returns the cache
    (relative path → map). Maps computed earlier in this process by an identical trunk (same weights, stages, input
    size and file) are reused.
    """
    parts = [p for d in datasets for p in dataset_parts(d)]
    cache: dict[str, torch.Tensor] = {}
    was_training = tower.training
    tower.eval()
    device = torch.device(device)
    for part in parts:
        part.feature_cache = None  # read images, not an older cache
    fingerprint = trunk_fingerprint(tower, blocks)

    def key(part: Any, relative: str) -> tuple[Any, ...]:
        return fingerprint, blocks, tuple(part.image_size), str(part.root), relative

    todo, seen = [], set()
    for part in parts:
        for f in part.files():
            if f in seen:
                continue
            seen.add(f)
            if key(part, f) in _MEMO:
                cache[f] = _MEMO[key(part, f)]
            else:
                todo.append((part, f))
    bar = env.progress_bar(total=len(todo), desc=f"caching trunk (stages 1-{blocks})", unit="img",
                           disable=not progress)
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        x = torch.stack([part.model_input(f, None) for part, f in chunk]).to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        maps = tower.forward_trunk(x, blocks).to("cpu", dtype).contiguous()
        for (part, f), m in zip(chunk, maps, strict=False):
            cache[f] = m
            if len(_MEMO) < _MEMO_MAX_ITEMS:
                _MEMO[key(part, f)] = m
        bar.update(len(chunk))
    bar.close()
    for part in parts:
        part.feature_cache = cache
    tower.train(was_training)
    return cache
