"""The Mammo-CLIP model: image tower + text tower + linear projections to a shared space + a learnable logit scale.

Parameter names follow the released checkpoints (``image_encoder.*``, ``text_encoder.text_encoder.*``,
``image_projection.projection.*``, ``text_projection.projection.*``, ``logit_scale``;
docs/reference-notes.md §1.3, §3.4), so a released state dict and a kit state dict are the same thing.

A kit checkpoint is a folder: ``model.safetensors`` (all weights), ``config.json`` (a :class:`ClipConfig`, no absolute
paths) and ``text_encoder/`` (the text model's config and tokenizer files), so :func:`from_pretrained` works offline.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mammoclip_kit.config import reject_unknown
from mammoclip_kit.data.transforms import PAPER_MEAN, PAPER_STD
from mammoclip_kit.models.towers import (
    ImageTowerConfig,
    TextTower,
    TextTowerConfig,
    create_image_tower,
    create_text_tower,
)

__all__ = ["ClipConfig", "ImageTowerConfig", "TextTowerConfig", "MammoClip", "ProjectionHead", "build_model",
           "from_pretrained", "CONFIG_NAME", "WEIGHTS_NAME", "TEXT_DIR"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TEXT_DIR = "text_encoder"
FORMAT = "mammoclip-kit"
FORMAT_VERSION = 1


@dataclass
class ClipConfig:
    """Everything needed to rebuild a :class:`MammoClip` (weights apart).

    ``image_size`` is the model input ``(height, width)``; ``mean``/``std`` the input normalisation
    (:func:`mammoclip_kit.data.transforms.to_model_input`); ``seed`` seeds the random initialisation; ``text_dim`` is
    the text tower width (filled in at build; needed for image-only models).
    """

    image: ImageTowerConfig = field(default_factory=ImageTowerConfig)
    text: TextTowerConfig = field(default_factory=TextTowerConfig)
    embed_dim: int = 512
    image_size: tuple[int, int] = (1520, 912)
    logit_scale_init: float = math.log(1 / 0.07)
    mean: float = PAPER_MEAN
    std: float = PAPER_STD
    seed: int = 0
    name: str | None = None
    text_dim: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.image, Mapping):
            self.image = ImageTowerConfig(**self.image)
        if isinstance(self.text, Mapping):
            self.text = TextTowerConfig(**self.text)
        self.image_size = tuple(int(v) for v in self.image_size)  # type: ignore[assignment]
        if len(self.image_size) != 2:
            raise ValueError(f"ClipConfig.image_size must be (height, width), got {self.image_size!r}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["image_size"] = list(self.image_size)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClipConfig:
        reject_unknown(data, cls.__dataclass_fields__, "ClipConfig field")
        return cls(**dict(data))


class ProjectionHead(nn.Module):
    """A single linear layer (with bias) into the shared embedding space (reference ``LinearProjectionHead``)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.projection = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(x)


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """``x / ||x||`` along the last dimension (the reference divides by the norm without an epsilon)."""
    return x / x.norm(dim=-1, keepdim=True)


class MammoClip(nn.Module):
    """CLIP model for mammograms and reports.

    Attributes: ``image_encoder`` (pooled features), ``text_encoder`` (a :class:`TextTower`, ``None`` for image-only
    models), ``image_projection`` / ``text_projection``, ``logit_scale`` (log of the inverse temperature, initialised
    to ln(1/0.07)), ``tokenizer`` (not a module, not saved in the state dict) and ``config``.
    """

    def __init__(self, config: ClipConfig, image_encoder: nn.Module, text_encoder: TextTower | None,
                 tokenizer: Any = None) -> None:
        super().__init__()
        self.config = config
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        text_dim = text_encoder.out_dim if text_encoder is not None else config.text_dim
        if text_dim is None:
            raise ValueError("an image-only MammoClip needs config.text_dim (the width of the text projection input)")
        config.text_dim = int(text_dim)
        self.image_projection = ProjectionHead(int(image_encoder.num_features), config.embed_dim)
        self.text_projection = ProjectionHead(int(text_dim), config.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init)))

    # -- helpers ---------------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    @property
    def has_text(self) -> bool:
        return self.text_encoder is not None

    def _require_text(self) -> None:
        if self.text_encoder is None or self.tokenizer is None:
            raise RuntimeError("this model was loaded image-only (no text encoder): reload it with a text encoder "
                               "(load_reference_checkpoint(path, text_encoder=FOLDER_OR_HUB_ID)) to embed text")

    def tokenize(self, texts: str | Sequence[str], max_length: int | None = None) -> dict[str, torch.Tensor]:
        """Tokenize with right padding to the longest text and truncation at ``max_length`` (default
        ``config.text.max_length``) → dict of CPU tensors (``input_ids``, ``attention_mask``, …)."""
        self._require_text()
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise TypeError(f"tokenize expects strings; item {bad[0]} is {type(texts[bad[0]]).__name__}")
        self.tokenizer.padding_side = "right"
        encoded = self.tokenizer(texts, padding=True, truncation=True,
                                 max_length=max_length or self.config.text.max_length, return_tensors="pt")
        return {k: v for k, v in encoded.items() if k in ("input_ids", "attention_mask", "token_type_ids")}

    # -- encoders --------------------------------------------------------------------------------------------------
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled image-tower features ``(B, num_features)`` before projection (2048-d for B5, 1408-d for B2)."""
        return self.image_encoder(images.to(self.device))

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Images ``(B, 3, H, W)`` (already through ``to_model_input``) → embeddings ``(B, embed_dim)``."""
        embeddings = self.image_projection(self.image_features(images))
        return l2_normalize(embeddings) if normalize else embeddings

    def text_features(self, texts_or_tokens: str | Sequence[str] | Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Pooled text-tower features ``(B, hidden)`` before projection."""
        self._require_text()
        if isinstance(texts_or_tokens, str) or (isinstance(texts_or_tokens, Sequence)
                                                and not isinstance(texts_or_tokens, Mapping)):
            tokens = self.tokenize(texts_or_tokens)
        else:
            tokens = texts_or_tokens
        tokens = {k: v.to(self.device) for k, v in tokens.items()
                  if k in ("input_ids", "attention_mask", "token_type_ids")}
        return self.text_encoder(**tokens)

    def encode_text(self, texts_or_tokens: str | Sequence[str] | Mapping[str, torch.Tensor],
                    normalize: bool = True) -> torch.Tensor:
        """Texts (or the dict returned by :meth:`tokenize`) → embeddings ``(B, embed_dim)``."""
        embeddings = self.text_projection(self.text_features(texts_or_tokens))
        return l2_normalize(embeddings) if normalize else embeddings

    def forward(self, images: torch.Tensor | None = None,
                tokens: Mapping[str, torch.Tensor] | Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """``dict(image_embeddings, text_embeddings, logit_scale)``: L2-normalised embeddings and
        ``exp(logit_scale)`` (the multiplier of the cosine logits), as the reference returns it."""
        out: dict[str, torch.Tensor] = {"logit_scale": self.logit_scale.exp()}
        if images is not None:
            out["image_embeddings"] = self.encode_image(images)
        if tokens is not None:
            out["text_embeddings"] = self.encode_text(tokens)
        return out

    # -- persistence -----------------------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``model.safetensors`` + ``config.json`` (no absolute paths) + ``text_encoder/`` (config, tokenizer)."""
        from safetensors.torch import save_model

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = self.config.to_dict()
        config["image"]["pretrained_path"] = None  # the weights are in model.safetensors
        source = config["text"].get("name_or_path")
        if source and (Path(str(source)).expanduser().is_absolute() or Path(str(source)).expanduser().is_dir()):
            config["text"]["name_or_path"] = None  # never store a machine path
        payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "text_dir": TEXT_DIR if self.has_text else None,
                   "config": config}
        if self.has_text:
            text_dir = directory / TEXT_DIR
            text_dir.mkdir(exist_ok=True)
            self.text_encoder.text_encoder.config.save_pretrained(text_dir)
            self.tokenizer.save_pretrained(text_dir)
        weights_tmp = directory / f".{WEIGHTS_NAME}.{os.getpid()}.tmp"
        save_model(self, str(weights_tmp))
        payload["weights_sha256"] = file_sha256(weights_tmp)  # verified by from_pretrained (corruption check)
        os.replace(weights_tmp, directory / WEIGHTS_NAME)
        tmp = directory / (CONFIG_NAME + ".tmp")
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
        tmp.replace(directory / CONFIG_NAME)
        return directory


def build_model(config: ClipConfig, texts: Sequence[str] | None = None, text_source: str | os.PathLike | None = None,
                image_only: bool = False) -> MammoClip:
    """Build a :class:`MammoClip` from ``config`` (seeded by ``config.seed``; the global RNG is left untouched).

    ``texts`` train a small BERT's vocabulary; ``text_source`` overrides the text tower's location; ``image_only``
    builds no text tower (``config.text_dim`` must then be set).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        image_encoder = create_image_tower(config.image)
        text_encoder, tokenizer = (None, None)
        if not image_only:
            text_encoder, tokenizer = create_text_tower(config.text, texts=texts, seed=config.seed,
                                                        source=text_source)
        return MammoClip(config, image_encoder, text_encoder, tokenizer)


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (hex), read in 4 MiB blocks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def read_config(directory: str | os.PathLike) -> tuple[ClipConfig, dict[str, Any]]:
    """The :class:`ClipConfig` and the raw ``config.json`` payload of a kit checkpoint folder."""
    directory = Path(directory)
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: not a kit checkpoint (no {CONFIG_NAME}); a released .tar file loads "
                                "with mammoclip_kit.load_reference_checkpoint or converts with "
                                "python -m mammoclip_kit.convert")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({' '.join(str(error).split())})") from None
    if not isinstance(payload, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(payload).__name__}")
    if payload.get("format") != FORMAT:
        raise ValueError(f"{path}: format {payload.get('format')!r} is not {FORMAT!r}")
    if not isinstance(payload.get("config"), dict):
        raise ValueError(f"{path}: no 'config' object")
    try:
        return ClipConfig.from_dict(payload["config"]), payload
    except (TypeError, ValueError, KeyError) as error:
        raise ValueError(f"{path}: invalid model config ({' '.join(str(error).split())})") from None


def check_weights_file(weights: Path, payload: dict[str, Any]) -> None:
    """Refuse a ``model.safetensors`` whose SHA-256 differs from the one ``config.json`` recorded at save time."""
    expected = payload.get("weights_sha256")
    if expected is None:
        return  # written before the kit stored hashes
    actual = file_sha256(weights)
    if actual != expected:
        raise ValueError(f"{weights}: content hash {actual[:12]}… differs from {expected[:12]}… recorded in "
                         f"{CONFIG_NAME} — the file is corrupted or was modified; copy or convert the checkpoint again")


def check_finite(model: torch.nn.Module, where: str | os.PathLike) -> None:
    """Refuse weights holding NaN or infinite values (they would turn every prediction into NaN or a constant)."""
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ValueError(f"{where}: tensor {name!r} holds {bad} non-finite value(s) (NaN/inf); the checkpoint is "
                             "corrupted")


def from_pretrained(directory: str | os.PathLike, device: str | torch.device | None = None) -> MammoClip:
    """Load a folder written by :meth:`MammoClip.save_pretrained` (offline; strict: every weight must match)."""
    from safetensors.torch import load_model

    directory = Path(directory)
    config, payload = read_config(directory)
    text_dir = payload.get("text_dir")
    image_only = text_dir is None
    if not image_only:
        config.text.pretrained = False  # weights come from model.safetensors
    model = build_model(config, text_source=None if image_only else directory / text_dir, image_only=image_only)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"{directory}: missing {WEIGHTS_NAME}")
    check_weights_file(weights, payload)
    try:
        missing, unexpected = load_model(model, str(weights), strict=False)
    except RuntimeError as error:  # a tensor of another shape
        raise ValueError(f"{weights}: weights do not fit the model of {CONFIG_NAME} "
                         f"({' '.join(str(error).split())[:200]})") from None
    except Exception as error:  # noqa: BLE001 - safetensors raises its own type for garbage / truncated files
        if not isinstance(error, (OSError, ValueError)) and type(error).__name__ != "SafetensorError":
            raise
        raise ValueError(f"{weights}: not a readable safetensors file ({' '.join(str(error).split())[:200]})") \
            from None
    check_finite(model, weights)
    if missing or unexpected:
        raise ValueError(f"{weights}: weights do not fit the model of {CONFIG_NAME}: missing {missing[:10]}, "
                         f"unexpected {unexpected[:10]}")
    model.config.text.pretrained = True
    model.eval()
    if device is not None:
        model.to(device)
    return model
