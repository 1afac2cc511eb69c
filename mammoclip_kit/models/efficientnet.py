"""EfficientNet image tower whose parameter names match the released Mammo-CLIP checkpoints.

EfficientNet (Tan & Le, ICML 2019, https://arxiv.org/abs/1905.11946) scales one base network (B0) by a width multiplier
(channels), a depth multiplier (blocks per stage) and a nominal resolution. The released Mammo-CLIP encoders are B2 and B5
built with "SAME" padding fixed from the nominal resolution (docs/reference-notes.md §2.4); this module
rebuilds that network from the published facts, with the module names of the checkpoints (``_conv_stem``,
``_bn0``, ``_blocks.{i}._expand_conv`` …, ``_conv_head``, ``_bn1``; no classifier), so that
``image_encoder.*`` weights load with no renaming.

Padding is a construction option: ``"static"`` (pads fixed from ``nominal_size``, exact for the released weights) or
``"dynamic"`` (TF-SAME from the real input, as timm's ``tf_efficientnet_*``). Small variants (``tiny``, ``micro``) keep
the family's shape at a fraction of the cost for CPU teaching runs.

Public API: :class:`EfficientNetConfig`, :class:`EfficientNet`, :func:`efficientnet`, :data:`VARIANTS`,
:func:`list_variants`, :func:`round_filters`, :func:`round_repeats`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from mammoclip_kit.models.padding import PADDING_MODES, as_pair, create_conv2d, output_size

__all__ = ["EfficientNetConfig", "EfficientNet", "StageSpec", "BlockSpec", "efficientnet", "VARIANTS", "list_variants",
           "round_filters", "round_repeats", "BASE_STAGES", "reference_taps"]


@dataclass(frozen=True)
class StageSpec:
    """One stage of the B0 base network: ``repeats`` MBConv blocks of ``kernel``, first one with ``stride``."""

    repeats: int
    kernel: int
    stride: int
    expand_ratio: int
    in_channels: int
    out_channels: int
    se_ratio: float = 0.25


#: The seven stages of EfficientNet-B0 (repeats, kernel, stride, expansion, in, out, SE ratio) — from the paper.
BASE_STAGES: tuple[StageSpec, ...] = (
    StageSpec(1, 3, 1, 1, 32, 16),
    StageSpec(2, 3, 2, 6, 16, 24),
    StageSpec(2, 5, 2, 6, 24, 40),
    StageSpec(3, 3, 2, 6, 40, 80),
    StageSpec(3, 5, 1, 6, 80, 112),
    StageSpec(4, 5, 2, 6, 112, 192),
    StageSpec(1, 3, 1, 6, 192, 320),
)

#: variant -> (width multiplier, depth multiplier, nominal resolution, head dropout).
VARIANTS: dict[str, tuple[float, float, int, float]] = {
    "b0": (1.0, 1.0, 224, 0.2),
    "b1": (1.0, 1.1, 240, 0.2),
    "b2": (1.1, 1.2, 260, 0.3),
    "b3": (1.2, 1.4, 300, 0.3),
    "b4": (1.4, 1.8, 380, 0.4),
    "b5": (1.6, 2.2, 456, 0.4),
    "b6": (1.8, 2.6, 528, 0.5),
    "b7": (2.0, 3.1, 600, 0.5),
    # Classroom variants: same block layout, fewer channels and blocks (CPU teaching runs).
    "tiny": (0.5, 0.5, 192, 0.1),
    "micro": (0.25, 0.25, 128, 0.1),
}

#: Detector taps of the released encoders (docs/reference-notes.md §8.4: ``source_layer_indexes``).
_REFERENCE_TAPS = {"b2": (15, 21), "b5": (26, 37)}


def list_variants() -> list[str]:
    """Names accepted by :func:`efficientnet`."""
    return list(VARIANTS)


def round_filters(channels: int, width_mult: float, divisor: int = 8) -> int:
    """Scale a channel count by ``width_mult`` and round to a multiple of ``divisor`` (never below 90 % of the
    scaled value, never below ``divisor``) — the EfficientNet channel rule."""
    scaled = channels * width_mult
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, depth_mult: float) -> int:
    """Blocks in a stage after depth scaling: ``ceil(depth_mult * repeats)``."""
    return int(math.ceil(depth_mult * repeats))


@dataclass(frozen=True)
class BlockSpec:
    """One built MBConv block (after scaling): what the module tree and the padding table are made of."""

    index: int
    stage: int
    kernel: int
    stride: int
    expand_ratio: int
    in_channels: int
    out_channels: int
    se_channels: int
    input_size: tuple[int, int]  # nominal input size of the block (static mode)
    drop_connect: float


@dataclass
class EfficientNetConfig:
    """Construction parameters of one EfficientNet. ``width_mult``/``depth_mult`` scale :data:`BASE_STAGES`."""

    width_mult: float = 1.0
    depth_mult: float = 1.0
    resolution: int = 224
    dropout: float = 0.2
    drop_connect_rate: float = 0.2
    bn_eps: float = 1e-3
    bn_momentum: float = 0.01  # PyTorch convention (TF's 0.99)
    depth_divisor: int = 8
    padding: str = "static"
    nominal_size: int | tuple[int, int] | None = None  # static padding reference size; None = resolution
    in_channels: int = 3
    stem_channels: int = 32
    head_channels: int = 1280
    stages: tuple[StageSpec, ...] = field(default_factory=lambda: BASE_STAGES)
    variant: str | None = None

    def __post_init__(self) -> None:
        if self.padding not in PADDING_MODES:
            raise ValueError(f"EfficientNetConfig.padding must be one of {PADDING_MODES}, got {self.padding!r}")
        if self.width_mult <= 0 or self.depth_mult <= 0:
            raise ValueError(f"width_mult and depth_mult must be positive, got {self.width_mult}, {self.depth_mult}")
        if isinstance(self.nominal_size, list):
            self.nominal_size = tuple(self.nominal_size)  # type: ignore[assignment]
        self.stages = tuple(s if isinstance(s, StageSpec) else StageSpec(**s) for s in self.stages)

    @property
    def static_size(self) -> tuple[int, int]:
        return as_pair(self.nominal_size if self.nominal_size is not None else self.resolution)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if isinstance(data["nominal_size"], tuple):
            data["nominal_size"] = list(data["nominal_size"])
        data["stages"] = [asdict(s) for s in self.stages]
        return data

    def block_specs(self) -> list[BlockSpec]:
        """All blocks after width/depth scaling, with their nominal input sizes and drop-connect rates."""
        size = output_size(self.static_size, 2)  # after the stride-2 stem
        raw: list[tuple[int, StageSpec, int, int, int]] = []
        for stage_index, stage in enumerate(self.stages):
            cin = round_filters(stage.in_channels, self.width_mult, self.depth_divisor)
            cout = round_filters(stage.out_channels, self.width_mult, self.depth_divisor)
            for j in range(round_repeats(stage.repeats, self.depth_mult)):
                raw.append((stage_index, stage, cin if j == 0 else cout, cout, stage.stride if j == 0 else 1))
        total = len(raw)
        specs = []
        for index, (stage_index, stage, cin, cout, stride) in enumerate(raw):
            se = max(1, int(cin * stage.se_ratio)) if stage.se_ratio else 0
            specs.append(BlockSpec(index=index, stage=stage_index, kernel=stage.kernel, stride=stride,
                                   expand_ratio=stage.expand_ratio, in_channels=cin, out_channels=cout,
                                   se_channels=se, input_size=size,
                                   drop_connect=self.drop_connect_rate * index / total))
            size = output_size(size, stride)
        return specs


class MBConvBlock(nn.Module):
    """Mobile inverted bottleneck with squeeze-excitation (names as in the released checkpoints).

    expand 1×1 (skipped when the expansion ratio is 1) → BN → swish → depthwise k×k → BN → swish → SE gate →
    project 1×1 → BN; identity skip (with drop-connect in training) when stride is 1 and channels are unchanged.
    """

    def __init__(self, spec: BlockSpec, config: EfficientNetConfig) -> None:
        super().__init__()
        self.spec = spec
        bn = {"eps": config.bn_eps, "momentum": config.bn_momentum}
        mid = spec.in_channels * spec.expand_ratio
        if spec.expand_ratio != 1:
            self._expand_conv = nn.Conv2d(spec.in_channels, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, **bn)
        self._depthwise_conv = create_conv2d(mid, mid, spec.kernel, stride=spec.stride, groups=mid, bias=False,
                                             padding=config.padding, image_size=spec.input_size)
        self._bn1 = nn.BatchNorm2d(mid, **bn)
        if spec.se_channels:
            self._se_reduce = nn.Conv2d(mid, spec.se_channels, 1, bias=True)
            self._se_expand = nn.Conv2d(spec.se_channels, mid, 1, bias=True)
        self._project_conv = nn.Conv2d(mid, spec.out_channels, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(spec.out_channels, **bn)
        self._swish = nn.SiLU()
        self.has_skip = spec.stride == 1 and spec.in_channels == spec.out_channels
        self.drop_connect_rate = spec.drop_connect

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        if self.spec.expand_ratio != 1:
            x = self._swish(self._bn0(self._expand_conv(x)))
        x = self._swish(self._bn1(self._depthwise_conv(x)))
        if self.spec.se_channels:
            squeezed = torch.mean(x, dim=(2, 3), keepdim=True)
            x = x * torch.sigmoid(self._se_expand(self._swish(self._se_reduce(squeezed))))
        x = self._bn2(self._project_conv(x))
        if self.has_skip:
            x = drop_connect(x, self.drop_connect_rate, self.training) + inputs
        return x


def drop_connect(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero the residual branch of whole samples with probability ``rate``, rescale the rest."""
    if not training or rate <= 0.0:
        return x
    keep = 1.0 - rate
    mask = torch.floor(keep + torch.rand((x.shape[0], 1, 1, 1), dtype=x.dtype, device=x.device))
    return x / keep * mask


class EfficientNet(nn.Module):
    """EfficientNet feature extractor: ``forward(x)`` → pooled ``(B, C)``; ``forward_features(x)`` → ``(B, C, h, w)``.

    No classifier (as in the released Mammo-CLIP encoders). In training, dropout ``config.dropout`` is applied to the
    pooled vector, and drop-connect to the residual branches.
    """

    def __init__(self, config: EfficientNetConfig) -> None:
        super().__init__()
        self.config = config
        bn = {"eps": config.bn_eps, "momentum": config.bn_momentum}
        stem = round_filters(config.stem_channels, config.width_mult, config.depth_divisor)
        self._conv_stem = create_conv2d(config.in_channels, stem, 3, stride=2, bias=False, padding=config.padding,
                                        image_size=config.static_size)
        self._bn0 = nn.BatchNorm2d(stem, **bn)
        self.block_specs = config.block_specs()
        self._blocks = nn.ModuleList(MBConvBlock(spec, config) for spec in self.block_specs)
        last = self.block_specs[-1].out_channels
        head = round_filters(config.head_channels, config.width_mult, config.depth_divisor)
        self._conv_head = nn.Conv2d(last, head, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(head, **bn)
        self._swish = nn.SiLU()
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(config.dropout)
        self.num_features = head
        self.grad_checkpointing = False
        self.init_weights()

    def init_weights(self) -> None:
        """EfficientNet's initialisation: conv weights ~ N(0, 2 / fan_out) with fan_out = k·k·out / groups, conv
        biases 0, BN scale 1 and shift 0 (PyTorch's default conv init shrinks activations ~1e-12 through 16+ blocks)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
                nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    # -- structure -------------------------------------------------------------------------------------------------
    @property
    def num_blocks(self) -> int:
        return len(self._blocks)

    def stage_blocks(self) -> list[list[int]]:
        """Block indices of each stage."""
        stages: list[list[int]] = [[] for _ in self.config.stages]
        for spec in self.block_specs:
            stages[spec.stage].append(spec.index)
        return [s for s in stages if s]

    def block_reduction(self, index: int) -> int:
        """Cumulative stride (input pixels per output pixel) after block ``index``."""
        reduction = 2
        for spec in self.block_specs[: self._normalise_index(index) + 1]:
            reduction *= spec.stride
        return reduction

    @property
    def default_taps(self) -> tuple[int, int]:
        """Detector taps: the released B5 ``(26, 37)`` / B2 ``(15, 21)``; in general, the last block of the last
        stride-16 stage and ``max(first block of the last stage, num_blocks - 2)`` (the same rule gives B2/B5's)."""
        stages = self.stage_blocks()
        stride16 = [s for s in stages if self.block_reduction(s[-1]) == 16]
        if not stride16:
            raise ValueError("this EfficientNet has no stride-16 stage")
        first = stride16[-1][-1]
        second = max(stages[-1][0], self.num_blocks - 2)
        return first, second

    def tap_channels(self, indices: Sequence[int] | None = None) -> list[int]:
        """Output channels of the blocks ``indices`` (default :attr:`default_taps`)."""
        indices = self.default_taps if indices is None else indices
        return [self.block_specs[self._normalise_index(i)].out_channels for i in indices]

    def padding_table(self) -> list[dict[str, Any]]:
        """Every padded convolution: name, kernel, stride, nominal input size and pads ``(left, right, top, bottom)``
        (static mode; ``None`` pads in dynamic mode, where they depend on the input)."""
        rows = []
        for name, module in self.named_modules():
            if isinstance(module, nn.Conv2d) and (module.kernel_size[0] > 1 or module.stride[0] > 1):
                rows.append({"name": name, "kernel": module.kernel_size[0], "stride": module.stride[0],
                             "nominal_size": getattr(module, "nominal_size", None),
                             "pads": getattr(module, "pads", None)})
        return rows

    def _normalise_index(self, index: int) -> int:
        n = self.num_blocks
        if not -n <= index < n:
            raise IndexError(f"block index {index} out of range for {n} blocks")
        return index % n

    # -- forward ---------------------------------------------------------------------------------------------------
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in backward (less memory, ~30 % more time); training only."""
        self.grad_checkpointing = bool(enable)

    def _run_block(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, x, use_reentrant=False)
        return block(x)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self._swish(self._bn0(self._conv_stem(x)))

    def forward_head_features(self, x: torch.Tensor) -> torch.Tensor:
        """Last block output → head 1×1 conv → BN → swish (the final feature map)."""
        return self._swish(self._bn1(self._conv_head(x)))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Final feature map ``(B, num_features, h, w)`` (48×29 for a 1520×912 input)."""
        x = self.forward_stem(x)
        for block in self._blocks:
            x = self._run_block(block, x)
        return self.forward_head_features(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Global average pool (+ dropout in training) of a feature map → ``(B, num_features)``."""
        return self._dropout(self._avg_pooling(features).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``(B, num_features)``."""
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x: torch.Tensor, indices: Sequence[int] | None = None,
                              output_head: bool = False) -> list[torch.Tensor]:
        """Outputs of the blocks ``indices`` (default :attr:`default_taps`), in the order given; with
        ``output_head=True`` the final feature map is appended. Stops after the last needed block otherwise."""
        indices = list(self.default_taps if indices is None else indices)
        wanted = [self._normalise_index(i) for i in indices]
        stop = self.num_blocks - 1 if output_head else max(wanted)
        outputs: dict[int, torch.Tensor] = {}
        x = self.forward_stem(x)
        for index, block in enumerate(self._blocks):
            x = self._run_block(block, x)
            if index in wanted:
                outputs[index] = x
            if index == stop:
                break
        result = [outputs[i] for i in wanted]
        if output_head:
            result.append(self.forward_head_features(x))
        return result


def efficientnet(variant: str = "b0", **overrides: Any) -> EfficientNet:
    """Build an EfficientNet ``variant`` (:data:`VARIANTS`); keyword arguments override :class:`EfficientNetConfig`
    fields (e.g. ``padding="dynamic"``, ``nominal_size=(1520, 912)``, ``width_mult=0.3``)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown EfficientNet variant {variant!r}; choose from {', '.join(VARIANTS)}")
    width, depth, resolution, dropout = VARIANTS[variant]
    config = EfficientNetConfig(width_mult=width, depth_mult=depth, resolution=resolution, dropout=dropout,
                                variant=variant)
    unknown = set(overrides) - set(EfficientNetConfig.__dataclass_fields__)
    if unknown:
        raise TypeError(f"unknown EfficientNet option(s) {sorted(unknown)}")
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    model = EfficientNet(config)
    return model


def reference_taps(variant: str) -> tuple[int, int] | None:
    """The released detector taps of ``variant`` (B2/B5), if any."""
    return _REFERENCE_TAPS.get(variant)
