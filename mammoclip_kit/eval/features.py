"""Frozen image-tower features and their on-disk cache (the input of every linear probe).

The encoder runs once per table, in eval mode under ``torch.inference_mode`` (no batch-norm statistic moves, no
dropout), through the kit's one image → features loop (:func:`mammoclip_kit.inference.image_features`), at the
encoder's own input size unless a size is set explicitly (:func:`mammoclip_kit.inference.resolve_image_size`). Its
pooled features are cached under ``cache_dir/features`` as a build-if-missing artefact
(:class:`mammoclip_kit.artifacts.Artifact`) keyed by the encoder's weights (:func:`model_fingerprint`), the table, its
ordered image ids, the image size, the augmentation (always off) and the shift, so a retrained checkpoint or another
shift never reads stale features.

Encoders that start from the same frozen trunk (the classroom's ImageNet, CLIP and Mammo-CLIP towers share the stem and
stages 1-3, which hold about three quarters of a forward pass) can share its maps through a :class:`TrunkMemo`: the
trunk runs once per image and each encoder only runs its own later stages. The features are the same numbers as a
plain forward pass; only the work is shared.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from mammoclip_kit.artifacts import Artifact, atomic_write_bytes

__all__ = ["CACHE_VERSION", "FeatureSet", "TrunkMemo", "cached_features", "extract_features", "model_fingerprint"]

CACHE_VERSION = 1  # bump when the cached feature recipe changes


def model_fingerprint(module: nn.Module) -> str:
    """SHA-1 of a module's class, parameter and buffer names, shapes, dtypes and values (same weights, same key)."""
    digest = hashlib.sha1(type(module).__name__.encode())
    for name, tensor in module.state_dict().items():
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes()
                      if tensor.numel() else b"")
    return digest.hexdigest()


class TrunkMemo:
    """The stem + first ``blocks`` stages' maps of images, kept in memory and shared by encoders with equal trunks.

    Pass one memo to several :func:`extract_features` / :func:`cached_features` calls (e.g. one per encoder of a
    sweep): a map is keyed by the trunk's weights (:func:`mammoclip_kit.train.trunk_cache.trunk_fingerprint`), the
    input size, the transform and the image, so encoders whose trunks differ (a random tower) never share, and a shifted
    image never reads a clean map. Maps are kept in float32 (the features equal a plain forward pass) up to
    ``max_bytes``; beyond that they are computed and not kept. ``hits`` / ``computed`` count images served and run.
    """

    def __init__(self, blocks: int = 3, max_bytes: int = 2 * 2**30) -> None:
        if blocks < 1:
            raise ValueError(f"TrunkMemo: blocks must be >= 1, got {blocks}")
        self.blocks, self.max_bytes = int(blocks), int(max_bytes)
        self._maps: dict[tuple[str, ...], torch.Tensor] = {}
        self.bytes, self.hits, self.computed = 0, 0, 0

    @classmethod
    def create(cls, blocks: int) -> TrunkMemo | None:
        """A memo of ``blocks`` stages, or None for 0 (a stage config's ``shared_trunk: 0`` turns sharing off)."""
        return cls(blocks=blocks) if blocks else None

    def __len__(self) -> int:
        return len(self._maps)

    def supports(self, encoder: nn.Module) -> bool:
        """True when ``encoder`` can be split after ``blocks`` stages (an EfficientNet-like timm tower)."""
        if not all(hasattr(encoder, name) for name in ("forward_trunk", "forward_from_trunk", "trunk_channels")):
            return False
        try:
            encoder.trunk_channels(self.blocks)  # validates the split (raises for a tower without one)
        except (AttributeError, TypeError, ValueError):
            return False
        return True

    def features(self, encoder: nn.Module, paths: Sequence[Path], keys: Sequence[str], *,
                 image_size: tuple[int, int] | None, batch_size: int, device: Any, num_workers: int,
                 transform: Callable[[np.ndarray, str], np.ndarray] | None, transform_key: str, progress: bool,
                 desc: str) -> torch.Tensor:
        """Pooled features of ``paths``: the trunk run only for images not in the memo, then the encoder's own stages."""
        from mammoclip_kit.inference import eval_mode, image_features, model_device
        from mammoclip_kit.train.trunk_cache import trunk_fingerprint

        if len(keys) != len(paths):
            raise ValueError(f"TrunkMemo: {len(keys)} keys for {len(paths)} images")
        base = (trunk_fingerprint(encoder, self.blocks), str(image_size), transform_key)
        todo = [i for i, key in enumerate(keys) if (*base, key) not in self._maps]
        fresh: dict[int, torch.Tensor] = {}
        if todo:
            maps = image_features(encoder, [paths[i] for i in todo], size=image_size,
                                  forward=lambda x: encoder.forward_trunk(x, self.blocks), batch_size=batch_size,
                                  device=device, num_workers=num_workers, transform=transform,
                                  keys=[keys[i] for i in todo], channels_last=True, progress=progress,
                                  desc=f"{desc}, trunk")
            for i, m in zip(todo, maps, strict=True):
                fresh[i] = m
                if self.bytes + m.nbytes <= self.max_bytes:
                    self._maps[(*base, keys[i])] = m
                    self.bytes += m.nbytes
        self.computed += len(todo)
        self.hits += len(keys) - len(todo)
        device = torch.device(device) if device is not None else model_device(encoder)
        out = []
        with eval_mode(encoder), torch.inference_mode():
            for start in range(0, len(keys), batch_size):
                index = range(start, min(start + batch_size, len(keys)))
                h = torch.stack([fresh[i] if i in fresh else self._maps[(*base, keys[i])] for i in index])
                h = h.to(device).contiguous(memory_format=torch.channels_last)
                out.append(encoder.forward_from_trunk(h, self.blocks).float().cpu())
        return torch.cat(out)


def extract_features(encoder: nn.Module, paths: Sequence[str | Path], *, image_size: tuple[int, int] | None = None,
                     batch_size: int = 16, device: Any = None, num_workers: int = 0,
                     transform: Callable[[np.ndarray, str], np.ndarray] | None = None,
                     keys: Sequence[str] | None = None, progress: bool = True, desc: str = "features",
                     trunk_memo: TrunkMemo | None = None, transform_key: str = "none") -> np.ndarray:
    """Pooled features ``(N, D)`` of the images at ``paths``, with the encoder frozen.

    Runs :func:`mammoclip_kit.inference.image_features` (eval mode, ``torch.inference_mode``, the previous mode
    restored, float16 autocast on CUDA). ``image_size`` (H, W) is the size the images are resized to: pass the
    encoder's input size (:func:`mammoclip_kit.inference.resolve_image_size`); None keeps each file's size. An optional
    ``transform(image, key)`` (e.g. a robustness shift) is applied after the resize. With a ``trunk_memo`` (and
    ``keys``, one per image, naming it; ``transform_key`` naming the transform) the trunk's maps are shared with the
    other encoders run through the same memo (:class:`TrunkMemo`); an encoder that cannot be split runs as usual.
    """
    from mammoclip_kit.inference import image_features, model_device

    if not len(paths):
        return np.zeros((0, 0), dtype=np.float32)
    if transform is not None and trunk_memo is not None and transform_key == "none":
        raise ValueError("extract_features: name the transform with transform_key when a trunk_memo is shared")
    # channels-last memory layout: same values, ~1.8x faster depthwise convolutions on CPU (measured on the classroom
    # tower); the layout is switched back afterwards
    encoder.to(memory_format=torch.channels_last)
    # the memo is a CPU saving (a GPU runs the whole tower in float16 autocast instead)
    run_device = torch.device(device) if device is not None else model_device(encoder)
    use_memo = (trunk_memo is not None and keys is not None and run_device.type == "cpu"
                and trunk_memo.supports(encoder))
    try:
        if use_memo:
            features = trunk_memo.features(encoder, [Path(p) for p in paths], [str(k) for k in keys],
                                           image_size=image_size, batch_size=batch_size, device=device,
                                           num_workers=num_workers, transform=transform, transform_key=transform_key,
                                           progress=progress, desc=desc)
        else:
            features = image_features(encoder, [Path(p) for p in paths], size=image_size, batch_size=batch_size,
                                      device=device, num_workers=num_workers, transform=transform, keys=keys,
                                      channels_last=True, amp=True, progress=progress, desc=desc)
    finally:
        encoder.to(memory_format=torch.contiguous_format)
    if features.ndim != 2:
        raise ValueError(f"extract_features: the encoder returned shape {tuple(features.shape[1:])} per image; "
                         "expected pooled (D,) features")
    return features.numpy().astype(np.float32)


@dataclass
class FeatureSet:
    """Cached features of one table under one encoder (rows in the order of the table given)."""

    features: np.ndarray  # (N, D) float32
    image_ids: list[str]  # one per row
    key: str  # cache key (hex)
    path: Path  # the .npz file
    from_cache: bool  # True when loaded instead of computed
    seconds: float  # time of this call
    compute_seconds: float  # time the encoder pass took when the cache was written


def cached_features(encoder: nn.Module, df: pd.DataFrame, *, root: str | Path, cache_dir: str | Path, table: str,
                    image_size: tuple[int, int] | None = None, path_col: str = "png_path", id_col: str = "image_id",
                    transform: Callable[[np.ndarray, str], np.ndarray] | None = None, transform_key: str = "none",
                    batch_size: int = 16, device: Any = None, num_workers: int = 0, retrain: bool = False,
                    progress: bool = True, fingerprint: str | None = None,
                    trunk_memo: TrunkMemo | None = None) -> FeatureSet:
    """Features of every row of ``df``, computed once and then loaded from ``cache_dir/features``.

    ``image_size`` None feeds the encoder its own input size (:func:`mammoclip_kit.inference.resolve_image_size`); an
    explicit size is used and printed. The cache key covers the encoder's weights (:func:`model_fingerprint`), the
    table name, the ordered image ids, the image size, the augmentation (always off) and ``transform_key`` (name a
    non-``None`` ``transform`` there). ``retrain=True`` recomputes. Image paths in ``path_col`` are relative to
    ``root`` (the run's output folder) unless absolute. A ``trunk_memo`` shares the trunk's maps between encoders
    (:class:`TrunkMemo`; same features, less work).
    """
    from mammoclip_kit.inference import resolve_image_size

    for column in (path_col, id_col):
        if column not in df.columns:
            raise ValueError(f"{table} table: no column {column!r} (columns: {list(df.columns)})")
    if transform is not None and transform_key == "none":
        raise ValueError("cached_features: name the transform with transform_key so that the cache key differs")
    start = time.perf_counter()
    size = resolve_image_size(encoder, image_size, where=f"features of {table}")
    ids = df[id_col].astype(str).tolist()
    spec = {"version": CACHE_VERSION, "model": fingerprint or model_fingerprint(encoder), "table": table,
            "ids": hashlib.sha1("\n".join(ids).encode()).hexdigest(),
            "image_size": list(size) if size else None, "augmentation": "off", "transform": transform_key}
    key = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()
    artifact = Artifact(Path(cache_dir) / "features" / f"{table}-{key[:20]}.npz", spec)
    if artifact.is_current() and not retrain:
        with np.load(artifact.path, allow_pickle=False) as stored:
            features, stored_ids = stored["features"], stored["image_ids"].tolist()
            compute_seconds = float(stored["compute_seconds"])
        if stored_ids == ids:
            return FeatureSet(features, ids, key, artifact.path, True, time.perf_counter() - start, compute_seconds)
    root = Path(root)
    paths = [p if Path(p).is_absolute() else root / p for p in df[path_col].astype(str)]
    features = extract_features(encoder, paths, image_size=size, batch_size=batch_size, device=device,
                                num_workers=num_workers, transform=transform, keys=ids, progress=progress,
                                desc=f"features {table} ({transform_key})", trunk_memo=trunk_memo,
                                transform_key=transform_key)
    compute_seconds = time.perf_counter() - start
    buffer = _npz_bytes(features=features, image_ids=np.array(ids), compute_seconds=np.array(compute_seconds))
    atomic_write_bytes(artifact.path, buffer)
    artifact.commit(rows=len(ids), dim=int(features.shape[1]) if features.ndim == 2 else 0,
                    compute_seconds=compute_seconds)
    return FeatureSet(features, ids, key, artifact.path, False, compute_seconds, compute_seconds)


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()
