"""TensorFlow-style "SAME" padding for convolutions, static or dynamic.

TensorFlow's SAME rule pads a convolution so that the output has ``ceil(size / stride)`` pixels along each axis. The total
padding along one axis is ``max((ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)``; the smaller
half goes before (top / left) and the larger half after (bottom / right).

Two ways to choose ``size``:

* **static** — ``size`` is fixed at construction, from a *nominal* input resolution propagated through the network with
  ``ceil(size / stride)``. The released Mammo-CLIP encoders were built this way from 260 (B2) / 456 (B5) and then run on
  1520×912 images, so reproducing their embeddings needs exactly these pads (docs/reference-notes.md §2.4).
* **dynamic** — ``size`` is the real input size, computed at every forward (what timm's ``tf_*`` models do).

For stride 1 and an odd kernel both rules give the symmetric ``(k - 1) / 2`` on each side.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

PADDING_MODES: tuple[str, ...] = ("static", "dynamic")


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TF-SAME padding ``(before, after)`` of one axis of length ``size``.

    >>> same_padding(65, 5, 2)
    (2, 2)
    >>> same_padding(456, 3, 2)
    (0, 1)
    """
    if size < 1 or kernel < 1 or stride < 1 or dilation < 1:
        raise ValueError(f"same_padding needs positive size/kernel/stride/dilation, got {size}, {kernel}, {stride}, "
                         f"{dilation}")
    total = max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def as_pair(value: int | Sequence[int]) -> tuple[int, int]:
    """``7 -> (7, 7)``; ``(h, w) -> (h, w)``."""
    if isinstance(value, int):
        return value, value
    pair = tuple(int(v) for v in value)
    if len(pair) != 2:
        raise ValueError(f"expected an int or a (height, width) pair, got {value!r}")
    return pair  # type: ignore[return-value]


def output_size(size: int | Sequence[int], stride: int) -> tuple[int, int]:
    """Spatial size after a SAME convolution of ``stride``: ``ceil(size / stride)`` per axis."""
    h, w = as_pair(size)
    return math.ceil(h / stride), math.ceil(w / stride)


class Conv2dStaticSame(nn.Conv2d):
    """``nn.Conv2d`` preceded by a zero pad fixed from a nominal input size (lukemelas-compatible parameter names).

    The pad module is stored as ``static_padding`` (no state), so the weights keep the names ``weight`` / ``bias``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1,
                 bias: bool = True, dilation: int = 1, image_size: int | Sequence[int] = 224) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0, dilation=dilation,
                         groups=groups, bias=bias)
        height, width = as_pair(image_size)
        top, bottom = same_padding(height, kernel_size, stride, dilation)
        left, right = same_padding(width, kernel_size, stride, dilation)
        self.pads: tuple[int, int, int, int] = (left, right, top, bottom)
        self.nominal_size: tuple[int, int] = (height, width)
        self.static_padding: nn.Module = nn.ZeroPad2d(self.pads) if any(self.pads) else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.static_padding(x))


class Conv2dDynamicSame(nn.Conv2d):
    """``nn.Conv2d`` with TF-SAME padding computed from the real input at every forward."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1,
                 bias: bool = True, dilation: int = 1) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0, dilation=dilation,
                         groups=groups, bias=bias)

    def pads_for(self, height: int, width: int) -> tuple[int, int, int, int]:
        """``(left, right, top, bottom)`` for an input of ``height × width``."""
        top, bottom = same_padding(height, self.kernel_size[0], self.stride[0], self.dilation[0])
        left, right = same_padding(width, self.kernel_size[1], self.stride[1], self.dilation[1])
        return left, right, top, bottom

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = self.pads_for(x.shape[-2], x.shape[-1])
        if any(pads):
            x = F.pad(x, pads)
        return super().forward(x)


def create_conv2d(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1,
                  bias: bool = False, padding: str = "static",
                  image_size: int | Sequence[int] | None = None) -> nn.Conv2d:
    """One SAME convolution: a plain ``nn.Conv2d`` for 1×1 stride-1 kernels (no padding either way), else the
    static or dynamic variant. ``image_size`` is the nominal input size of this conv (static mode only)."""
    if padding not in PADDING_MODES:
        raise ValueError(f"padding must be one of {PADDING_MODES}, got {padding!r}")
    if kernel_size == 1 and stride == 1:
        return nn.Conv2d(in_channels, out_channels, 1, bias=bias, groups=groups)
    if padding == "dynamic":
        return Conv2dDynamicSame(in_channels, out_channels, kernel_size, stride=stride, groups=groups, bias=bias)
    if image_size is None:
        raise ValueError("static SAME padding needs the nominal image_size of the conv input")
    return Conv2dStaticSame(in_channels, out_channels, kernel_size, stride=stride, groups=groups, bias=bias,
                            image_size=image_size)
