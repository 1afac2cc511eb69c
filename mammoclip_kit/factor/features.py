"""The frozen image tower's last feature maps: read once in eval mode, cached, optionally sampled more densely.

FActOR's mappers and heatmaps only ever read the last feature map of a *frozen* tower, so every image goes through the
tower once, in eval mode (BatchNorm statistics never move, unlike the authors' released code, which trained with the
encoder in train mode), and the maps are cached as a build-if-missing artefact (:func:`mammoclip_kit.artifacts.ensure`).
:func:`stitched_features` samples the same last map ``stitch`` times more densely by shift-and-stitch.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from mammoclip_kit.artifacts import atomic_write_bytes, ensure


def tap_for_stride(encoder: torch.nn.Module, stride: int) -> int:
    """Index of the encoder's last intermediate feature at ``stride`` (input pixels per cell), for its
    ``forward_intermediates``: a timm tower's ``feature_info`` entry, or a kit EfficientNet's block."""
    stride = int(stride)
    info = getattr(encoder, "feature_info", None)
    if info is not None and not callable(info):
        found = [i for i, entry in enumerate(info) if int(entry["reduction"]) == stride]
    elif hasattr(encoder, "block_reduction") and hasattr(encoder, "num_blocks"):
        found = [i for i in range(encoder.num_blocks) if encoder.block_reduction(i) == stride]
    else:
        raise TypeError(f"{type(encoder).__name__}: no feature_info or block_reduction to find a stride-{stride} map")
    if not found:
        raise ValueError(f"{type(encoder).__name__}: no intermediate feature map at stride {stride}")
    return found[-1]


def tower_map(encoder: torch.nn.Module, inputs: torch.Tensor, stride: int | None = None) -> torch.Tensor:
    """The feature map FActOR reads: the tower's last map (``stride=None``, ``forward_features``: after the head
    convolution) or its last intermediate map at ``stride`` (e.g. 16: the output of the last stride-16 stage, the map
    a detector's feature pyramid also taps)."""
    if stride is None:
        return encoder.forward_features(inputs)
    return encoder.forward_intermediates(inputs, [tap_for_stride(encoder, stride)])[0]


def stitched_features(encoder: torch.nn.Module, inputs: torch.Tensor, stitch: int = 1,
                      stride: int | None = None) -> torch.Tensor:
    """``encoder.forward_features`` sampled ``stitch`` times more densely in each direction (shift-and-stitch,
    Long et al. 2015, §3.2).

    The input is shifted up / left by every multiple of ``stride / stitch`` pixels (the vacated border filled with the
    darkest value any image has after :func:`~mammoclip_kit.data.transforms.to_model_input`, i.e. background), each
    shifted copy goes through the unchanged tower, and the ``stitch²`` maps are interleaved: cell ``(i·stitch + a,
    j·stitch + b)`` is the tower's output for the window that starts ``a·stride/stitch`` pixels lower and
    ``b·stride/stitch`` further right than cell ``(i, j)``. Same features, ``stitch²`` times the cost, a grid of
    ``(h·stitch, w·stitch)``. The stride is read from the input and output sizes and must be divisible by ``stitch``.
    ``stride`` picks the map as :func:`tower_map` does (None: the last one).
    """
    from mammoclip_kit.data.transforms import PAPER_MEAN, PAPER_STD

    stitch = int(stitch)
    if stitch < 1:
        raise ValueError(f"stitched_features: stitch must be ≥ 1, got {stitch}")
    base = tower_map(encoder, inputs, stride)
    if stitch == 1:
        return base
    h, w = base.shape[-2:]
    stride_h, stride_w = round(inputs.shape[-2] / h), round(inputs.shape[-1] / w)
    if stride_h % stitch or stride_w % stitch:
        raise ValueError(f"stitched_features: the tower's stride {stride_h}×{stride_w} (input "
                         f"{tuple(inputs.shape[-2:])} → map {h}×{w}) is not divisible by stitch={stitch}")
    fill = (0.0 - PAPER_MEAN) / PAPER_STD
    out = base.new_empty(*base.shape[:2], h * stitch, w * stitch)
    for a in range(stitch):
        for b in range(stitch):
            dy, dx = a * stride_h // stitch, b * stride_w // stitch
            if a or b:
                shifted = F.pad(inputs[..., dy:, dx:], (0, dx, 0, dy), value=fill)
                out[:, :, a::stitch, b::stitch] = tower_map(encoder, shifted, stride)
            else:
                out[:, :, ::stitch, ::stitch] = base
    return out


def _cache_params(encoder: torch.nn.Module, paths: Sequence[Path], image_size: tuple[int, int] | None,
                  stitch: int, stride: int | None = None) -> dict[str, Any]:
    """What a feature-map cache depends on: the tower's weights, the input size, the stitch factor, the map's stride
    and the images."""
    from mammoclip_kit.eval.features import model_fingerprint

    params = {"encoder": model_fingerprint(encoder), "image_size": list(image_size) if image_size else None,
              "stitch": int(stitch), "n_images": len(paths),
              "paths_sha1": hashlib.sha1(json.dumps([str(p) for p in paths]).encode()).hexdigest()}
    if stride is not None:  # the last map keeps the keys (and caches) it always had
        params["stride"] = int(stride)
    return params


def _compute_maps(encoder: torch.nn.Module, paths: Sequence[Path], image_size: tuple[int, int] | None,
                  batch_size: int, device: torch.device, stitch: int, progress: bool,
                  stride: int | None = None) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """The kit's one image loop (:func:`mammoclip_kit.inference.image_features`) with the stitched forward pass."""
    from PIL import Image

    from mammoclip_kit.inference import image_features

    sizes = []
    for path in paths:
        with Image.open(path) as image:  # the header is enough: (width, height) of the PNG frame of the boxes
            sizes.append((int(image.height), int(image.width)))
    maps = image_features(encoder, paths, size=image_size, forward=lambda x: stitched_features(encoder, x, stitch, stride),
                          batch_size=batch_size, device=device, progress=progress,
                          desc="feature maps" if stitch == 1 else f"feature maps (stitch {stitch})")
    return maps, sizes


def feature_maps(encoder: torch.nn.Module, paths: Sequence[str | Path], *, image_size: tuple[int, int] | None = None,
                 batch_size: int = 16, device: Any = None, cache_dir: str | Path | None = None,
                 retrain: bool = False, progress: bool = True,
                 stitch: int = 1, stride: int | None = None) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Last feature maps ``(N, C, h, w)`` (float32, CPU) of the frozen image tower in eval mode, and each image's
    ``(height, width)`` as read from disk (the frame of its PNG boxes).

    Images are read, resized to ``image_size`` when given and passed through the kit's one inference transform. With
    ``stitch > 1`` the same last map is sampled ``stitch`` times more densely (:func:`stitched_features`):
    ``(N, C, h·stitch, w·stitch)``. ``stride`` reads an intermediate map instead of the last one (:func:`tower_map`,
    e.g. 16: the last stride-16 stage's output). With ``cache_dir`` the result is an artefact ``factor_maps_<key>.pt`` whose
    record holds the tower's weights fingerprint, the size, the stitch factor and the paths: reloaded when they match,
    recomputed when they differ or with ``retrain=True``.
    """
    paths = [Path(p) for p in paths]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"feature_maps: {len(missing)} image file(s) not found, first: {missing[0]}")
    device = torch.device(device) if device is not None else next(encoder.parameters()).device

    def compute() -> tuple[torch.Tensor, list[tuple[int, int]]]:
        return _compute_maps(encoder, paths, image_size, batch_size, device, stitch, progress, stride)

    if cache_dir is None:
        return compute()
    params = _cache_params(encoder, paths, image_size, stitch, stride)
    key = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:20]

    def build(path: Path) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        maps, sizes = compute()
        buffer = io.BytesIO()
        torch.save({"maps": maps, "sizes": torch.tensor(sizes)}, buffer)
        atomic_write_bytes(path, buffer.getvalue())
        return maps, sizes

    def load(path: Path) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        stored = torch.load(path, map_location="cpu", weights_only=True)
        return stored["maps"].float(), [tuple(s) for s in stored["sizes"].tolist()]

    return ensure(Path(cache_dir) / f"factor_maps_{key}.pt", params, build, load=load, retrain=retrain,
                  name="feature maps", verbose=False)
