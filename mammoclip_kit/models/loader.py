"""The one checkpoint loader: a kit folder, a released ``.tar`` or a preset name → a :class:`MammoClip`.

Every consumer of a trained model (``python -m mammoclip_kit.predict``, ``python -m mammoclip_kit.convert``, zero-shot,
the probe encoders, the detection backbone, robustness, FActOR) loads it with :func:`load_model`, so a released file
and a converted folder behave the same everywhere:

* a **kit folder** (``model.safetensors`` + ``config.json``, written by ``MammoClip.save_pretrained``) loads with
  :func:`mammoclip_kit.models.clip.from_pretrained` and carries its own text tower;
* a **released file** (``.tar`` / ``.pth`` / ``.pt`` / ``.ckpt``, the authors' pickle-in-zip) loads safely with
  :func:`mammoclip_kit.models.reference.load_reference_checkpoint`; it needs ``text_encoder=`` (a local
  Bio_ClinicalBERT folder or hub id) unless ``image_only=True``;
* a **preset name** (:func:`mammoclip_kit.models.factory.list_models`) builds untrained weights (seeded by the
  preset; ``image_only=True`` skips the text tower, so ``paper-b5`` needs no Bio_ClinicalBERT).

:func:`image_tower` takes the image tower out of a model and records the model's input size on it, so that consumers
of the tower alone (linear probes, detection, robustness) feed it images at the size it was trained at
(:func:`mammoclip_kit.inference.resolve_image_size`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from torch import nn

from mammoclip_kit.models.clip import MammoClip

__all__ = ["REFERENCE_SUFFIXES", "describe_source", "image_tower", "load_model"]

#: Suffixes of files read as released (pickle-in-zip) checkpoints rather than kit folders.
REFERENCE_SUFFIXES = (".tar", ".pth", ".pt", ".ckpt")


def load_model(path_or_name: str | os.PathLike, *, text_encoder: str | os.PathLike | None = None,
               device: str | torch.device | None = None, image_only: bool = False, strict: bool = True,
               verbose: bool = True) -> MammoClip:
    """A kit checkpoint folder, a released checkpoint file or a preset name → model in eval mode on ``device``.

    ``device`` None picks the kit's default (CUDA, then MPS, then CPU). ``text_encoder`` is used by released files and
    presets (a kit folder carries its text tower); ``image_only`` builds a released file or a preset without a text
    tower (no text encoder needed: enough for probes, detection and FActOR's feature maps). ``strict`` makes a released
    file with missing or unused weights an error. A released file's load report
    (:class:`~mammoclip_kit.models.reference.LoadReport`) is kept as ``model.load_report`` and, with ``verbose``,
    printed to stderr.

    Raises ``FileNotFoundError`` naming the path when it is neither a folder, a file nor a preset, and ``ValueError``
    for a file with another suffix or a folder without ``config.json``.
    """
    from mammoclip_kit.env import pick_device
    from mammoclip_kit.models.clip import build_model
    from mammoclip_kit.models.factory import create_model, get_preset, list_models

    text = os.fspath(path_or_name)
    path = Path(text).expanduser()
    if path.is_dir():
        from mammoclip_kit.models.clip import from_pretrained

        if not (path / "config.json").is_file():
            raise ValueError(f"{path}: not a kit checkpoint folder (no config.json; convert a released .tar with "
                             "python -m mammoclip_kit.convert)")
        model = from_pretrained(path)
    elif path.is_file():
        if path.suffix.lower() not in REFERENCE_SUFFIXES:
            raise ValueError(f"{path}: expected a kit checkpoint folder or a released checkpoint file "
                             f"({', '.join(REFERENCE_SUFFIXES)})")
        from mammoclip_kit.models.reference import load_reference_checkpoint

        model, report = load_reference_checkpoint(path, text_encoder=text_encoder, image_only=image_only,
                                                  strict=strict)
        model.load_report = report  # what was mapped, missing or skipped (python -m mammoclip_kit.convert writes it)
        if verbose:
            print(report.summary(), file=sys.stderr)
    elif text in list_models():
        if image_only:
            config = get_preset(text)
            config.text_dim = config.text_dim or 768  # the projection input width of the absent text tower
            model = build_model(config, image_only=True)  # same image weights as the full model (seeded alike)
        else:
            model = create_model(text, **({"text_encoder": str(text_encoder)} if text_encoder is not None else {}))
    else:
        raise FileNotFoundError(f"{path}: no such checkpoint folder or file, and not a preset "
                                f"({', '.join(list_models())})")
    return model.to(pick_device(device)).eval()


def describe_source(path_or_name: str | os.PathLike) -> str:
    """A short label of what :func:`load_model` reads (``b5-model-best-epoch-7``, a folder name, a preset)."""
    path = Path(os.fspath(path_or_name))
    return path.stem if path.suffix.lower() in REFERENCE_SUFFIXES else path.name


def image_tower(model: nn.Module) -> nn.Module:
    """The image tower of ``model`` (``model.image_encoder``, or ``model`` itself when it is a tower), in eval mode.

    The model's input size (``model.config.image_size``) is recorded on the tower as ``tower.image_size`` so that
    :func:`mammoclip_kit.inference.model_image_size` finds it. Raises ``TypeError`` when the tower has no
    ``num_features`` (the width of its pooled features) or when ``model`` is a ``(model, report)`` tuple.
    """
    if isinstance(model, tuple):
        raise TypeError("image_tower: got a tuple; load_reference_checkpoint returns (model, report), pass the model "
                        "(or load with mammoclip_kit.models.loader.load_model)")
    tower = getattr(model, "image_encoder", model)
    if not hasattr(tower, "num_features"):
        raise TypeError(f"{type(tower).__name__}: an image tower needs a num_features attribute")
    size = getattr(getattr(model, "config", None), "image_size", None)
    if size is not None and tower is not model:
        tower.image_size = (int(size[0]), int(size[1]))
    return tower.eval()
