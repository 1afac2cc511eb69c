"""Load the released Mammo-CLIP checkpoints (``b2-model-best-epoch-10.tar``, ``b5-model-best-epoch-7.tar``) safely,
offline and exactly.

The released files are PyTorch zip archives (despite the ``.tar`` suffix) holding ``model`` (the state dict), ``config``
(the training config, partly OmegaConf objects), ``optimizer``, ``scheduler``, ``epoch`` and ``train_loss``
(docs/reference-notes.md §1.2–1.4). :func:`load_reference_checkpoint`:

* reads the file with ``torch.load(weights_only=True)`` and an explicit allow-list: OmegaConf ``ListConfig`` /
  ``DictConfig`` / value nodes are rebuilt as plain lists, dicts and values by inert stand-in classes (``omegaconf``
  is neither needed nor imported); anything else (e.g. ``os.system``) is refused with an error naming the global, and
  nothing from the file is executed;
* drops absolute paths stored in the config (the authors' cluster folders);
* infers B2 vs B5 from the config name and checks it against the weight shapes;
* builds the kit model with the reference's static padding and maps ``image_encoder.*``,
  ``text_encoder.text_encoder.*``, ``image_projection.projection.*``, ``text_projection.projection.*`` and
  ``logit_scale`` onto it, reporting missing / unexpected keys by name (:class:`LoadReport`);
* takes the text encoder's architecture and tokenizer from the user's folder or hub id (the weights come from the
  file); ``image_only=True`` needs no text encoder at all.

:func:`write_reference_checkpoint` writes a file in the released format (random or given weights, a config with an
OmegaConf-style ``ListConfig`` and absolute paths) for tests and demos.
"""

from __future__ import annotations

import copyreg
import io
import math
import os
import pickle
import re
import types
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mammoclip_kit.models.clip import MammoClip, build_model
from mammoclip_kit.models.efficientnet import VARIANTS, EfficientNetConfig, round_filters
from mammoclip_kit.models.factory import get_preset

__all__ = ["load_reference_checkpoint", "read_reference_file", "write_reference_checkpoint", "LoadReport",
           "UnsafeCheckpointError", "infer_arch", "sanitize_config", "REFERENCE_PREFIXES"]

REFERENCE_PREFIXES: tuple[str, ...] = ("image_encoder.", "text_encoder.text_encoder.", "image_projection.projection.",
                                       "text_projection.projection.", "logit_scale")
#: Buffers some transformers versions persist and others do not; harmless when absent from the model.
IGNORABLE_SUFFIXES: tuple[str, ...] = ("embeddings.position_ids", "embeddings.token_type_ids")
#: Image-encoder names in the released configs (docs/reference-notes.md §1.4, §2.1).
REFERENCE_ENCODER_NAMES = {"tf_efficientnet_b5_ns-detect": "b5", "tf_efficientnetv2-detect": "b2"}
_DEFAULT_TEXT_ENCODER = "emilyalsentzer/Bio_ClinicalBERT"


class UnsafeCheckpointError(pickle.UnpicklingError):
    """The file needs a Python object that is not on the loader's allow-list; nothing from it was executed."""


# ----------------------------------------------------------------------------------------------------------------------
# Safe reading: allow-list and inert OmegaConf stand-ins
# ----------------------------------------------------------------------------------------------------------------------
class _Inert:
    """Stand-in for a pickled OmegaConf object: records its state, runs nothing. Converted by :func:`_plain`."""

    kind = "node"

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_state"] = state

    def __reduce_ex__(self, protocol: int):  # the stand-ins are never written back
        raise pickle.PicklingError("inert OmegaConf stand-ins cannot be pickled")


def _inert_class(module: str, name: str, kind: str) -> type:
    return type(f"Inert_{name}", (_Inert,), {"kind": kind, "omegaconf_name": f"{module}.{name}"})


_OMEGACONF_CLASSES: dict[str, str] = {
    "omegaconf.listconfig.ListConfig": "list",
    "omegaconf.dictconfig.DictConfig": "dict",
    "omegaconf.base.Metadata": "metadata",
    "omegaconf.base.ContainerMetadata": "metadata",
    **{f"omegaconf.nodes.{n}": "node" for n in ("AnyNode", "StringNode", "IntegerNode", "FloatNode", "BooleanNode",
                                                  "BytesNode", "PathNode", "ValueNode")},
}


class _TypeRef:
    """A type annotation referenced by OmegaConf metadata (``typing.Any`` …): kept as its name only."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<type {self.name}>"


def _plain_dict(*_args: Any) -> dict:
    """``collections.defaultdict(factory)`` → a plain dict (OmegaConf's resolver cache)."""
    return {}


def _path_as_str(*parts: Any) -> str:
    """``pathlib.*Path(*parts)`` → the path as a string (absolute ones are dropped later)."""
    return str(Path(*[str(p) for p in parts]))


def _allowed_globals() -> list[tuple[Any, str]]:
    allowed: list[tuple[Any, str]] = [(_inert_class(*full.rsplit(".", 1), kind), full)
                                      for full, kind in _OMEGACONF_CLASSES.items()]
    allowed += [(_TypeRef(f"typing.{n}"), f"typing.{n}") for n in ("Any", "Dict", "List", "Tuple", "Optional")]
    allowed += [(t, f"builtins.{t.__name__}") for t in (dict, list, tuple, str, int, float, bool, bytes, object)]
    allowed += [(_plain_dict, "collections.defaultdict")]
    allowed += [(_path_as_str, f"pathlib.{n}") for n in ("Path", "PosixPath", "WindowsPath", "PurePosixPath",
                                                          "PureWindowsPath")]
    try:  # numpy scalars / arrays (e.g. a float64 train_loss); the same list torch's docs suggest
        import numpy as np

        multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
        for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            allowed += [(multiarray.scalar, f"{module}.scalar"), (multiarray._reconstruct, f"{module}._reconstruct")]
        allowed += [(np.dtype, "numpy.dtype"), (np.ndarray, "numpy.ndarray")]
        allowed += [(cls, f"numpy.dtypes.{cls.__name__}") for cls in vars(np.dtypes).values()
                    if isinstance(cls, type) and issubclass(cls, np.dtype)]
    except (ImportError, AttributeError):  # pragma: no cover - numpy is a dependency
        pass
    return allowed


def _plain(obj: Any, memo: dict[int, Any] | None = None) -> Any:
    """Turn OmegaConf stand-ins into plain lists / dicts / values, recursively (parents and metadata dropped)."""
    memo = {} if memo is None else memo
    key = id(obj)
    if key in memo:
        return memo[key]
    if isinstance(obj, _Inert):
        state = obj.__dict__.get("_state") or {}
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            state = state[0] or {}
        if obj.kind == "metadata":
            return None
        if obj.kind == "node":
            return _plain(state.get("_val"), memo)
        content = state.get("_content")
        if obj.kind == "list":
            result: Any = []
            memo[key] = result
            result.extend(_plain(v, memo) for v in (content or []))
            return result
        result = {}
        memo[key] = result
        if isinstance(content, Mapping):
            result.update({_plain(k, memo): _plain(v, memo) for k, v in content.items()})
        return result
    if isinstance(obj, _TypeRef):
        return obj.name
    if isinstance(obj, dict) and not isinstance(obj, OrderedDict):
        result = {}
        memo[key] = result
        result.update({k: _plain(v, memo) for k, v in obj.items()})
        return result
    if isinstance(obj, list):
        return [_plain(v, memo) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_plain(v, memo) for v in obj)
    return obj


def _check_checkpoint_container(path: Path) -> None:
    """Refuse, before unpickling, a file that is neither a zip archive (torch.save) nor a legacy pickle stream."""
    import zipfile

    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"{path}: empty file (0 bytes); not a checkpoint — the download or copy was cut")
    if zipfile.is_zipfile(path):
        return
    with open(path, "rb") as handle:
        head = handle.read(2)
    if head[:1] != b"\x80":  # every pickle protocol ≥ 2 (what torch.save writes) starts with PROTO
        raise ValueError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle; {size} bytes)")


def read_reference_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a released ``.tar`` safely → the top-level dict with the config as plain Python objects.

    Raises :class:`UnsafeCheckpointError` naming the refused global when the file needs anything outside the
    allow-list, ``FileNotFoundError`` / ``ValueError`` for a missing or malformed file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint file not found")
    _check_checkpoint_container(path)
    try:
        with torch.serialization.safe_globals(_allowed_globals()):
            try:  # memory-mapped: the optimizer state (2/3 of a released file) is never read from disk
                data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as error:
                if "mmap" not in str(error):
                    raise
                data = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except pickle.UnpicklingError as error:
        message = str(error)
        found = re.search(r"GLOBAL ([\w.]+)", message) or re.search(r"function (\S+)", message)
        what = found.group(1) if found else "an object outside the allow-list"
        raise UnsafeCheckpointError(
            f"{path}: refused to load: the file needs the Python global {what!r}, which is not on the allow-list of "
            "the Mammo-CLIP reference loader (tensors, plain containers, OmegaConf configs, numpy scalars). Nothing "
            f"from the file was executed. Loader message: {message.splitlines()[0]}") from None
    except RuntimeError as error:
        raise ValueError(f"{path}: not a PyTorch checkpoint archive ({error}); pass the .tar file as downloaded, "
                         "without unpacking it") from None
    if not isinstance(data, Mapping) or "model" not in data:
        raise ValueError(f"{path}: expected a dict with a 'model' state dict (released Mammo-CLIP format), got "
                         f"{type(data).__name__}" + (f" with keys {sorted(data)[:10]}" if isinstance(data, Mapping)
                                                     else ""))
    out = dict(data)
    out["config"] = _plain(out.get("config") or {})
    return out


# ----------------------------------------------------------------------------------------------------------------------
# Config handling
# ----------------------------------------------------------------------------------------------------------------------
def _is_absolute_path(value: str) -> bool:
    return value.startswith(("/", "~", "\\\\")) or bool(re.match(r"^[A-Za-z]:[\\/]", value))


def sanitize_config(config: Any, prefix: str = "") -> tuple[Any, list[str]]:
    """Copy of ``config`` with every absolute-path string replaced by ``None``; returns it and the dotted keys
    dropped (e.g. ``base.data_dir``)."""
    dropped: list[str] = []
    if isinstance(config, Mapping):
        out = {}
        for key, value in config.items():
            clean, sub = sanitize_config(value, f"{prefix}{key}.")
            out[key] = clean
            dropped += sub
        return out, dropped
    if isinstance(config, (list, tuple)):
        items = [sanitize_config(v, f"{prefix}{i}.") for i, v in enumerate(config)]
        return type(config)(c for c, _ in items), [d for _, sub in items for d in sub]
    if isinstance(config, str) and _is_absolute_path(config):
        return None, [prefix.rstrip(".")]
    return config, dropped


def _variant_signature(variant: str) -> tuple[int, int, int]:
    width, depth, resolution, dropout = VARIANTS[variant]
    config = EfficientNetConfig(width_mult=width, depth_mult=depth, resolution=resolution, dropout=dropout)
    return round_filters(32, width), len(config.block_specs()), round_filters(1280, width)


def infer_arch(config: Mapping[str, Any], state: Mapping[str, torch.Tensor]) -> tuple[str, str]:
    """``("b2" | "b5" | …, how)`` from the config's image-encoder name and/or the weight shapes (they must agree)."""
    name = str(((config.get("model") or {}).get("image_encoder") or {}).get("name") or "")
    by_name = REFERENCE_ENCODER_NAMES.get(name)
    if by_name is None:
        match = re.search(r"b([0-7])(?!\d)", name)
        by_name = f"b{match.group(1)}" if match else None
    by_shape = None
    stem, head = state.get("image_encoder._conv_stem.weight"), state.get("image_encoder._conv_head.weight")
    if stem is not None and head is not None:
        blocks = {int(m.group(1)) for k in state if (m := re.match(r"image_encoder\._blocks\.(\d+)\.", k))}
        signature = (int(stem.shape[0]), len(blocks), int(head.shape[0]))
        by_shape = next((v for v in VARIANTS if v.startswith("b") and _variant_signature(v) == signature), None)
        if by_shape is None:
            raise ValueError(f"image encoder with stem {signature[0]} ch, {signature[1]} blocks, head {signature[2]} ch "
                             "matches no EfficientNet B0–B7")
    if by_name and by_shape and by_name != by_shape:
        raise ValueError(f"config names the image encoder {name!r} ({by_name}) but the weights have the shapes of "
                         f"{by_shape}")
    if by_shape:
        return by_shape, "config name and weight shapes" if by_name else "weight shapes"
    if by_name:
        return by_name, "config name"
    raise ValueError("cannot tell the EfficientNet variant: no image-encoder name in the config and no "
                     "image_encoder._conv_stem / _conv_head weights")


# ----------------------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class LoadReport:
    """What :func:`load_reference_checkpoint` mapped. ``coverage``: % of the model's state entries supplied by the
    file; ``file_coverage``: % of the file's (non-skipped) entries the model used."""

    path: str
    arch: str
    arch_source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    dropped_paths: list[str] = field(default_factory=list)
    text_encoder: str | None = None
    epoch: int | None = None
    train_loss: float | None = None
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def coverage(self) -> float:
        total = len(self.loaded) + len(self.missing)
        return 100.0 * len(self.loaded) / total if total else 0.0

    @property
    def file_coverage(self) -> float:
        total = len(self.loaded) + len(self.unexpected)
        return 100.0 * len(self.loaded) / total if total else 0.0

    def summary(self) -> str:
        lines = [f"checkpoint      {Path(self.path).name} (epoch {self.epoch}, train loss {self.train_loss})",
                 f"architecture    EfficientNet-{self.arch.upper()} (from {self.arch_source})",
                 f"text encoder    {self.text_encoder or 'none (image only)'}",
                 f"keys loaded     {len(self.loaded)} — coverage {self.coverage:.1f} % of the model, "
                 f"{self.file_coverage:.1f} % of the file",
                 f"missing         {len(self.missing)} {self.missing[:5]}",
                 f"unexpected      {len(self.unexpected)} {self.unexpected[:5]}",
                 f"skipped         {len(self.skipped)}" + (f" {self.skipped[:3]}…" if self.skipped else ""),
                 f"dropped paths   {', '.join(self.dropped_paths) or 'none'}"]
        return "\n".join(lines)


def _scalar(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return value.item()
    return value


def load_reference_checkpoint(path: str | os.PathLike, text_encoder: str | os.PathLike | None = None,
                              image_only: bool = False, device: str | torch.device | None = None,
                              strict: bool = True) -> tuple[MammoClip, LoadReport]:
    """Load a released Mammo-CLIP ``.tar`` into a kit :class:`MammoClip` (eval mode).

    ``text_encoder``: local folder or hub id of the text encoder (Bio_ClinicalBERT for the released files); its
    config and tokenizer are used, its weights are replaced by the file's. ``None`` falls back to the hub id stored
    in the file (never to a stored path). ``image_only=True`` builds no text tower (text keys are skipped).
    ``strict``: raise when any model entry is missing or any file entry is unused (the report lists them).
    Never needs the network when ``text_encoder`` is a local folder or ``image_only`` is set.
    """
    data = read_reference_file(path)
    raw_state = data["model"]
    if not isinstance(raw_state, Mapping):
        raise ValueError(f"{path}: 'model' is a {type(raw_state).__name__}, expected a state dict")
    state = OrderedDict((k.removeprefix("module."), v) for k, v in raw_state.items())
    config, dropped = sanitize_config(data.get("config") or {})
    arch, arch_source = infer_arch(config, state)
    if arch not in ("b2", "b5"):
        raise ValueError(f"{path}: EfficientNet-{arch.upper()} is not a released Mammo-CLIP encoder (B2 or B5)")

    clip_config = get_preset(f"paper-{arch}")
    base = config.get("base") or {}
    if base.get("image_size_h") and base.get("image_size_w"):  # the size it was trained at (1520 × 912 when released)
        clip_config.image_size = (int(base["image_size_h"]), int(base["image_size_w"]))
    projection = state.get("image_projection.projection.weight")
    text_projection = state.get("text_projection.projection.weight")
    if projection is not None:
        clip_config.embed_dim = int(projection.shape[0])
    stored_text = ((config.get("model") or {}).get("text_encoder") or {})
    clip_config.text.pooling = stored_text.get("pooling") or "eos"
    max_length = (config.get("base") or {}).get("text_max_length")
    if max_length:
        clip_config.text.max_length = int(max_length)
    if image_only:
        if text_projection is None:
            raise ValueError(f"{path}: no text_projection.projection.weight in the file")
        clip_config.text_dim = int(text_projection.shape[1])
        source = None
    else:
        source = text_encoder if text_encoder is not None else stored_text.get("name") or _DEFAULT_TEXT_ENCODER
        if source is None or (isinstance(source, str) and _is_absolute_path(source) and text_encoder is None):
            raise ValueError(f"{path}: pass text_encoder= (a local Bio_ClinicalBERT folder or hub id), or "
                             "image_only=True")
        clip_config.text.name_or_path = str(source)
        clip_config.text.pretrained = False  # the file supplies the weights
    model = build_model(clip_config, text_source=source, image_only=image_only)
    model.config.text.pretrained = True

    own = model.state_dict()
    report = LoadReport(path=str(path), arch=arch, arch_source=arch_source, dropped_paths=dropped,
                        text_encoder=None if image_only else _describe_source(source),
                        epoch=_scalar(data.get("epoch")), train_loss=_scalar(data.get("train_loss")), config=config)
    usable: dict[str, torch.Tensor] = {}
    mismatched: list[str] = []
    for key, value in state.items():
        if image_only and key.startswith("text_encoder."):
            report.skipped.append(key)
        elif key not in own:
            if key.endswith(IGNORABLE_SUFFIXES):
                report.skipped.append(key)
            else:
                report.unexpected.append(key)
        elif tuple(own[key].shape) != tuple(value.shape):
            mismatched.append(f"{key}: file {tuple(value.shape)} vs model {tuple(own[key].shape)}")
        else:
            usable[key] = value
    if mismatched:
        raise ValueError(f"{path}: {len(mismatched)} weight(s) do not fit the model (wrong text encoder?): "
                         + "; ".join(mismatched[:5]))
    report.loaded = list(usable)
    report.missing = [k for k in own if k not in usable]
    if strict and (report.missing or report.unexpected):
        raise ValueError(f"{path}: strict load failed: missing {report.missing[:10]} "
                         f"unexpected {report.unexpected[:10]} (pass strict=False to load anyway)\n"
                         + report.summary())
    model.load_state_dict(usable, strict=False)
    model.eval()
    if device is not None:
        model.to(device)
    return model, report


def _describe_source(source: Any) -> str:
    text = str(source)
    return f"local folder {Path(text).name}" if Path(text).expanduser().is_dir() else text


# ----------------------------------------------------------------------------------------------------------------------
# Writing the released format (tests, demos)
# ----------------------------------------------------------------------------------------------------------------------
class _FakeOmega:
    """Pickles like an OmegaConf object (``omegaconf.<module>.<name>`` + state dict) without omegaconf installed."""

    pickle_global: tuple[str, str] = ("omegaconf.base", "Node")

    def __init__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __reduce_ex__(self, protocol: int):
        return copyreg.__newobj__, (type(self),), dict(self.__dict__)


def _fake(module: str, name: str) -> type:
    return type(name, (_FakeOmega,), {"pickle_global": (module, name)})


_FakeListConfig = _fake("omegaconf.listconfig", "ListConfig")
_FakeDictConfig = _fake("omegaconf.dictconfig", "DictConfig")
_FakeContainerMetadata = _fake("omegaconf.base", "ContainerMetadata")
_FakeMetadata = _fake("omegaconf.base", "Metadata")
_FakeAnyNode = _fake("omegaconf.nodes", "AnyNode")


class _TypingAny:
    pickle_global = ("typing", "Any")


class _ReferencePickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes the stand-ins' classes as their OmegaConf / typing globals."""

    def save_global(self, obj: Any, name: str | None = None) -> None:
        target = obj.__dict__.get("pickle_global") if isinstance(obj, type) else None
        if target is None:
            super().save_global(obj, name)
            return
        module, qualname = target
        self.write(pickle.GLOBAL + f"{module}\n{qualname}\n".encode())
        self.memoize(obj)


def _fake_list_config(values: list[Any], parent: Any, key: str) -> Any:
    from collections import defaultdict

    def node(value: Any, index: int) -> Any:
        meta = _FakeMetadata({"ref_type": _TypingAny, "object_type": type(value), "optional": True, "key": index,
                              "flags": {}, "flags_root": False, "resolver_cache": defaultdict(dict)})
        return _FakeAnyNode({"_metadata": meta, "_parent": None, "_val": value})

    meta = _FakeContainerMetadata({"ref_type": _TypingAny, "object_type": list, "optional": True, "key": key,
                                   "flags": {}, "flags_root": False, "resolver_cache": defaultdict(dict),
                                   "key_type": int, "element_type": _TypingAny})
    listconfig = _FakeListConfig({"_metadata": meta, "_parent": parent, "_content": []})
    listconfig._content = [node(v, i) for i, v in enumerate(values)]
    for item in listconfig._content:
        item._parent = listconfig
    return listconfig


def _reference_config(arch: str, text_name: str, image_size: tuple[int, int] = (1520, 912)) -> dict[str, Any]:
    """A config shaped like the released ones (docs/reference-notes.md §1.4), with the authors'-style absolute
    paths."""
    root = "/ocean/projects/example/user/Mammo-CLIP"
    encoder = "tf_efficientnet_b5_ns-detect" if arch == "b5" else "tf_efficientnetv2-detect"
    transform_parent = _FakeDictConfig({"_metadata": None, "_parent": None, "_content": {}})
    return {
        "base": {"data_dir": f"{root}/data", "period": "n", "resume_training": False, "epoch_to_start": 0,
                 "checkpoint_to_start": "", "train_fast": False, "fold": 0, "seed": 10, "amp": True,
                 "mean": 0.3089279, "std": 0.25053555408335154,
                 "image_size_h": int(image_size[0]), "image_size_w": int(image_size[1]),
                 "text_max_length": 256, "loss_best": "contrastive", "data_frac": 1.0,
                 "output": {"args_path": f"{root}/outputs/args", "checkpoint": f"{root}/outputs/checkpoints",
                            "tensorboard": f"{root}/outputs/tensorboard"}},
        "data_train": {"upmc": {"name": "upmc", "data_path": f"{root}/data/upmc.csv"}},
        "dataloader": {"train": {"batch_size": 6, "num_workers": 4, "shuffle": True}},
        "tokenizer": {"source": "huggingface", "pretrained_model_name_or_path": text_name,
                      "cache_dir": f"{root}/src/codebase/outputs/huggingface/tokenizers"},
        "transform": {"train": {"transform": {
            "affine_scale": _fake_list_config([0.8, 1.2], transform_parent, "affine_scale"),
            "affine_rotate_degree": 20, "elastic_transform_alpha": 10}}},
        "model": {"name": "clip_custom", "temperature": 0.07,
                  "image_encoder": {"source": "cnn", "name": encoder, "pretrained": True, "model_type": "cnn"},
                  "text_encoder": {"source": "huggingface", "name": text_name, "pretrained": True,
                                   "gradient_checkpointing": False, "pooling": "eos",
                                   "cache_dir": f"{root}/src/codebase/outputs/huggingface/",
                                   "trust_remote_code": True, "mlm_head": True},
                  "projection_head": {"name": "linear", "dropout": 0.1, "proj_dim": 512}},
        "optimizer": {"name": "adamw", "config": {"lr": 5e-5, "weight_decay": 1e-4}},
        "scheduler": {"name": "cosine_epoch15_warmup1", "config": {"total_steps": 1500, "warmup_steps": 100}},
        "loss": {"breast_clip": {"label_smoothing": 0.0, "i2i_weight": 1.0, "t2t_weight": 0.5, "loss_ratio": 1.0}},
    }


def write_reference_checkpoint(model: MammoClip, path: str | os.PathLike, arch: str = "b5", epoch: int | None = None,
                               include_position_ids: bool = True, text_name: str = _DEFAULT_TEXT_ENCODER) -> Path:
    """Write ``model``'s weights in the released format (docs/reference-notes.md §1.2–1.4) to ``path``.

    ``model`` should have an EfficientNet-``arch`` image tower (any text tower). The config mimics the released one,
    including an OmegaConf ``ListConfig`` and absolute paths, so loaders are tested against what they will meet.
    ``include_position_ids`` adds the BERT ``position_ids`` buffer that older transformers versions saved.
    """
    if arch not in ("b2", "b5"):
        raise ValueError(f"arch must be 'b2' or 'b5', got {arch!r}")
    state = OrderedDict((k, v.detach().clone()) for k, v in model.state_dict().items())
    if include_position_ids and model.has_text:
        bert = model.text_encoder.text_encoder
        positions = int(bert.config.max_position_embeddings)
        state["text_encoder.text_encoder.embeddings.position_ids"] = torch.arange(positions).unsqueeze(0)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = {"state": {}, "param_groups": [{"lr": 5e-5, "betas": (0.9, 0.999), "eps": 1e-8,
                                                "weight_decay": 1e-4, "amsgrad": False,
                                                "params": list(range(len(params)))}]}
    scheduler = {"base_lrs": [5e-5], "last_epoch": 1000, "_step_count": 1001, "lr_lambdas": [None]}
    checkpoint = {"model": state, "optimizer": optimizer, "scheduler": scheduler,
                  "config": _reference_config(arch, text_name, tuple(model.config.image_size)),
                  "epoch": epoch if epoch is not None else (7 if arch == "b5" else 10),
                  "train_loss": torch.tensor(math.pi / 2)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pickle_module = types.SimpleNamespace(Pickler=_ReferencePickler, Unpickler=pickle.Unpickler, __name__="pickle",
                                          load=pickle.load, dump=pickle.dump)
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer, pickle_module=pickle_module)
    path.write_bytes(buffer.getvalue())
    return path
