"""RetinaNet on the Mammo-CLIP image tower: configuration, backbone adapter, FPN, anchors and focal loss.

The paper's detector taps the EfficientNet image tower at two blocks, C3 at stride 16 and C4 at
stride 32, and takes the post-head map C5 (stride 32). Because C4 and C5 share a stride, the standard torchvision
:class:`~torchvision.ops.FeaturePyramidNetwork` (which expects every input to halve the resolution) does not fit, so
:class:`PaperFPN` implements the paper's pyramid:

* ``P5_1 = 1×1(C5)``, ``P5 = 3×3(P5_1)`` (stride 32);
* ``P4_sum = up2(1×1(C4)) + up2(P5_1)``, ``P4 = 3×3(P4_sum)`` (stride 16);
* ``P3 = 3×3(up2(1×1(C3)) + up2(P4_sum))`` (stride 8);
* ``P6 = 3×3 s2(C5)`` (stride 64), ``P7 = 3×3 s2(ReLU(P6))`` (stride 128); nearest upsampling throughout.

Everything else is torchvision's :class:`~torchvision.models.detection.RetinaNet` with three documented substitutions:

* :class:`PaperAnchorGenerator` uses the fixed strides ``2**level`` and centres anchors at ``(i + 0.5) · stride`` like the
  paper (torchvision derives strides from ``image_size // grid`` and centres at ``i · stride``, which distorts the grid
  when the image size is not a multiple of 128);
* :class:`FocalClassificationHead` exposes the focal loss' α and γ (torchvision hard-codes 0.25 / 2);
* :class:`IdentityResizeTransform` never resizes (the dataset already delivers model-ready tensors at the configured size
  and normalisation), so ``image_mean = 0`` and ``image_std = 1``.

Regression uses smooth-L1 (β = 1/9) on ``(dx, dy, dw, dh)`` divided by ``[0.1, 0.1, 0.2, 0.2]`` as in the paper (box-coder
weights ``(10, 10, 5, 5)``). The heads are initialised as in the paper (:func:`paper_head_init`): fan-out He normal for the
four tower convs, zero weights for both output convs, the prior-probability bias (0.01) for classification. torchvision's
N(0, 0.01) init shrinks the signal ~10× per conv when the pyramid is narrow (the classroom's 64 channels) and stalls
the first hundreds of steps.
"""

from __future__ import annotations

import hashlib
import inspect
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection import RetinaNet
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.retinanet import (
    RetinaNetClassificationHead,
    RetinaNetHead,
    RetinaNetRegressionHead,
)
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import sigmoid_focal_loss

from mammoclip_kit.config import StageConfig

#: The paper's anchor base sizes for pyramid levels 3–7 (``2 ** (level + 2)``) at its 512 × 512 detector input.
PAPER_ANCHOR_SIZES: tuple[float, ...] = (32.0, 64.0, 128.0, 256.0, 512.0)
#: Pyramid levels P3..P7 and their strides.
PYRAMID_LEVELS: tuple[int, ...] = (3, 4, 5, 6, 7)


@dataclass
class DetectorConfig(StageConfig):
    """Everything that defines a detector (saved as ``config.json`` next to its weights; ``model:`` of a profile's
    ``detection`` section).

    Attributes:
        finding: the finding column it detects (``Mass`` or ``Suspicious_Calcification``); one class per detector, as
            the paper trains one detector per concept.
        image_size: detector input ``(height, width)``; ``None`` = the encoder's own input size (resolved by
            :func:`mammoclip_kit.eval.detection.detection_settings`). The paper resizes to 512 × 512.
        fpn_channels: channels of every pyramid level and of the heads (paper 256).
        anchor_sizes: base anchor size per level P3..P7 in input pixels (paper 32…512).
        anchor_scale: multiplies ``anchor_sizes``; < 1 for small classroom images whose lesions are a few pixels wide.
        anchor_ratios: aspect ratios (height / width) per cell.
        anchor_octaves: scales per cell (paper 2^0, 2^(1/3), 2^(2/3)).
        taps: encoder block indices giving C3 (stride 16) and C4 (stride 32); ``None`` = the encoder's ``default_taps``.
        freeze_encoder: ``True`` keeps the tower in eval mode without gradients (the paper's "frozen encoder"; the
            reference left BN training, the kit freezes properly); ``False`` fine-tunes it.
        memoize_encoder: with a frozen encoder, skip it for images already seen (see :class:`ClipDetectionBackbone`).
        focal_alpha, focal_gamma: focal-loss parameters (paper scripts α = 0.25, γ = 2).
        fg_iou, bg_iou: anchor matching thresholds (paper 0.5 / 0.4).
        allow_low_quality_matches: also match each box to its best anchor (torchvision's default; the paper does not).
        score_threshold, nms_iou, detections_per_image: inference settings (paper 0.05 / 0.5 / 100 inside the model;
            its mAP script then keeps scores > 0.2, see ``eval_score_threshold`` in the training config).
    """

    SECTION = "detection"

    finding: str = "Mass"
    image_size: tuple[int, int] | None = None
    fpn_channels: int = 256
    anchor_sizes: tuple[float, ...] = PAPER_ANCHOR_SIZES
    anchor_scale: float = 1.0
    anchor_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    anchor_octaves: tuple[float, ...] = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
    taps: tuple[int, int] | None = None
    freeze_encoder: bool = True
    memoize_encoder: bool = True
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    fg_iou: float = 0.5
    bg_iou: float = 0.4
    allow_low_quality_matches: bool = True
    score_threshold: float = 0.05
    nms_iou: float = 0.5
    detections_per_image: int = 100

    def __post_init__(self) -> None:
        if self.image_size is not None:
            self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        self.anchor_sizes = tuple(float(s) for s in self.anchor_sizes)
        self.anchor_ratios = tuple(float(r) for r in self.anchor_ratios)
        self.anchor_octaves = tuple(float(o) for o in self.anchor_octaves)
        if self.taps is not None:
            self.taps = (int(self.taps[0]), int(self.taps[1]))
        if len(self.anchor_sizes) != len(PYRAMID_LEVELS):
            raise ValueError(f"anchor_sizes needs one size per level P3..P7 (5), got {self.anchor_sizes}")
        if not 0.0 < self.bg_iou <= self.fg_iou <= 1.0:
            raise ValueError(f"need 0 < bg_iou <= fg_iou <= 1, got bg_iou={self.bg_iou}, fg_iou={self.fg_iou}")
        if self.fpn_channels <= 0 or self.anchor_scale <= 0:
            raise ValueError(f"fpn_channels and anchor_scale must be positive, got {self.fpn_channels}, "
                             f"{self.anchor_scale}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("image_size", "anchor_sizes", "anchor_ratios", "anchor_octaves", "taps"):
            if data[key] is not None:
                data[key] = list(data[key])
        return data

    def anchor_sizes_per_level(self) -> tuple[tuple[float, ...], ...]:
        """The anchor sizes of each level: base size × anchor_scale × each octave scale."""
        return tuple(tuple(base * self.anchor_scale * octave for octave in self.anchor_octaves)
                     for base in self.anchor_sizes)


def encoder_taps(encoder: nn.Module, x: Tensor, taps: Sequence[int]) -> tuple[Tensor, Tensor, Tensor]:
    """Return ``(C3, C4, C5)``: the two tapped block outputs and the post-head map of ``encoder`` for ``x``.

    One pass through ``encoder.forward_intermediates(x, taps, output_head=True)`` when the tower offers
    ``output_head`` (the kit's towers do); otherwise the taps, then ``forward_features`` for the post-head map.
    """
    if "output_head" in inspect.signature(encoder.forward_intermediates).parameters:
        maps = encoder.forward_intermediates(x, list(taps), output_head=True)
        if len(maps) != 3:
            raise ValueError(f"forward_intermediates returned {len(maps)} maps for taps {list(taps)} + head; "
                             "expected 3")
        return maps[0], maps[1], maps[2]
    maps = encoder.forward_intermediates(x, list(taps))
    if len(maps) != 2:
        raise ValueError(f"forward_intermediates returned {len(maps)} maps for taps {list(taps)}; expected 2")
    return maps[0], maps[1], encoder.forward_features(x)


class PaperFPN(nn.Module):
    """The paper's feature pyramid (module docstring): C3 (s16), C4 (s32), C5 (s32) → P3..P7 (s8..s128)."""

    def __init__(self, in_channels: Sequence[int], out_channels: int = 256) -> None:
        super().__init__()
        c3, c4, c5 = (int(c) for c in in_channels)
        self.lat5 = nn.Conv2d(c5, out_channels, 1)
        self.out5 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.lat4 = nn.Conv2d(c4, out_channels, 1)
        self.out4 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.lat3 = nn.Conv2d(c3, out_channels, 1)
        self.out3 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.p6 = nn.Conv2d(c5, out_channels, 3, stride=2, padding=1)
        self.p7 = nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1)

    @staticmethod
    def _up(x: Tensor, size: tuple[int, int]) -> Tensor:
        return F.interpolate(x, size=size, mode="nearest")

    def forward(self, c3: Tensor, c4: Tensor, c5: Tensor, image_hw: tuple[int, int]) -> OrderedDict[str, Tensor]:
        """Pyramid maps keyed ``p3``..``p7``; each level ``l`` has ``ceil(H / 2**l) × ceil(W / 2**l)`` cells."""
        h, w = image_hw
        grid = {level: (math.ceil(h / 2 ** level), math.ceil(w / 2 ** level)) for level in PYRAMID_LEVELS}
        p5_1 = self.lat5(c5)
        if p5_1.shape[-2:] != grid[5]:
            p5_1 = self._up(p5_1, grid[5])
        p4_sum = self._up(self.lat4(c4), grid[4]) + self._up(p5_1, grid[4])
        p3 = self.out3(self._up(self.lat3(c3), grid[3]) + self._up(p4_sum, grid[3]))
        p6 = self.p6(c5)
        p7 = self.p7(F.relu(p6))
        return OrderedDict(p3=p3, p4=self.out4(p4_sum), p5=self.out5(p5_1), p6=p6, p7=p7)


class ClipDetectionBackbone(nn.Module):
    """The CLIP image tower as a torchvision detection backbone (``forward(x) -> OrderedDict`` with ``out_channels``).

    Args:
        encoder: an image tower offering ``forward_intermediates``, ``tap_channels``, ``default_taps``,
            ``forward_features`` and ``num_features`` (the kit's EfficientNet / timm towers).
        taps: block indices for C3 (stride 16) and C4 (stride 32); ``None`` = ``encoder.default_taps``.
        out_channels: pyramid channels.
        freeze: keep the encoder in eval mode (BN statistics fixed, dropout off) without gradients.
        memoize: with a frozen encoder, remember the encoder maps of every input image (keyed by its exact bytes) so
            that an image seen again (un-augmented training images in the next epoch, the validation images) skips
            the encoder. Exact — a frozen encoder in eval mode is a pure per-image function — and it turns frozen
            training on a CPU into training the pyramid and heads only, like the linear probe's feature cache.
    """

    def __init__(self, encoder: nn.Module, taps: Sequence[int] | None = None, out_channels: int = 256,
                 freeze: bool = True, memoize: bool = False) -> None:
        super().__init__()
        self.encoder = encoder
        self.taps = tuple(int(t) for t in (taps if taps is not None else encoder.default_taps))
        if len(self.taps) != 2:
            raise ValueError(f"need two taps (strides 16 and 32), got {self.taps}")
        tap_channels = [int(c) for c in encoder.tap_channels(list(self.taps))]
        self.in_channels = (*tap_channels, int(encoder.num_features))
        self.fpn = PaperFPN(self.in_channels, out_channels)
        self.out_channels = out_channels
        self.frozen = False
        self.memoize = bool(memoize)
        self._memo: dict[bytes, tuple[Tensor, Tensor, Tensor]] = {}
        self.memo_hits = 0
        self.set_frozen(freeze)

    def set_frozen(self, frozen: bool) -> None:
        """Freeze (eval mode, ``requires_grad=False``) or unfreeze the encoder."""
        self.frozen = bool(frozen)
        self._memo.clear()
        for p in self.encoder.parameters():
            p.requires_grad_(not self.frozen)
        if self.frozen:
            self.encoder.eval()

    def share_memo(self, other: ClipDetectionBackbone) -> None:
        """Use ``other``'s memo of encoder maps (same frozen encoder object, e.g. another seed's detector): the maps of
        every image it has seen are reused instead of recomputed. Raises when the encoders differ or one is not
        frozen, where shared maps would be wrong."""
        if other.encoder is not self.encoder or not (self.frozen and other.frozen) or other.taps != self.taps:
            raise ValueError("share_memo: both backbones need the same frozen encoder object and the same taps")
        self._memo = other._memo

    def train(self, mode: bool = True) -> ClipDetectionBackbone:
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        return self

    def _memoized_taps(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        keys = [hashlib.blake2b(xi.detach().cpu().numpy().tobytes(), digest_size=16).digest() for xi in x]
        missing = [i for i, key in enumerate(keys) if key not in self._memo]
        self.memo_hits += len(keys) - len(missing)
        if missing:
            maps = encoder_taps(self.encoder, x[missing], self.taps)
            for j, i in enumerate(missing):
                self._memo[keys[i]] = tuple(m[j : j + 1].clone() for m in maps)
        return tuple(torch.cat([self._memo[k][level] for k in keys]) for level in range(3))

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        if self.frozen:
            with torch.no_grad():
                if self.memoize:
                    c3, c4, c5 = self._memoized_taps(x)
                else:
                    c3, c4, c5 = encoder_taps(self.encoder, x, self.taps)
        else:
            c3, c4, c5 = encoder_taps(self.encoder, x, self.taps)
        return self.fpn(c3, c4, c5, (x.shape[-2], x.shape[-1]))


class PaperAnchorGenerator(AnchorGenerator):
    """Anchors at fixed strides ``2**level`` centred at ``(i + 0.5) · stride`` (the paper's ``anchors.py`` layout)."""

    def __init__(self, sizes: Sequence[Sequence[float]], aspect_ratios: Sequence[float],
                 levels: Sequence[int] = PYRAMID_LEVELS) -> None:
        sizes = tuple(tuple(float(s) for s in level) for level in sizes)
        super().__init__(sizes=sizes, aspect_ratios=(tuple(aspect_ratios),) * len(sizes))
        self.strides = tuple(2 ** int(level) for level in levels)
        # torchvision rounds base anchors to integers; keep them exact so small anchors keep their ratios.
        self.cell_anchors = [self._exact_anchors(s, tuple(aspect_ratios)) for s in sizes]

    @staticmethod
    def _exact_anchors(scales: Sequence[float], ratios: Sequence[float]) -> Tensor:
        scales_t = torch.as_tensor(scales, dtype=torch.float32)
        h_ratios = torch.sqrt(torch.as_tensor(ratios, dtype=torch.float32))
        ws = (scales_t[None, :] / h_ratios[:, None]).reshape(-1)
        hs = (scales_t[None, :] * h_ratios[:, None]).reshape(-1)
        return torch.stack([-ws, -hs, ws, hs], dim=1) / 2

    def forward(self, image_list: ImageList, feature_maps: list[Tensor]) -> list[Tensor]:
        dtype, device = feature_maps[0].dtype, feature_maps[0].device
        self.set_cell_anchors(dtype, device)
        per_level = []
        for fmap, stride, base in zip(feature_maps, self.strides, self.cell_anchors, strict=True):
            gh, gw = fmap.shape[-2:]
            xs = (torch.arange(gw, dtype=dtype, device=device) + 0.5) * stride
            ys = (torch.arange(gh, dtype=dtype, device=device) + 0.5) * stride
            sy, sx = torch.meshgrid(ys, xs, indexing="ij")
            shifts = torch.stack((sx.reshape(-1), sy.reshape(-1), sx.reshape(-1), sy.reshape(-1)), dim=1)
            per_level.append((shifts.view(-1, 1, 4) + base.view(1, -1, 4)).reshape(-1, 4))
        anchors = torch.cat(per_level)
        return [anchors for _ in range(len(image_list.image_sizes))]


class FocalClassificationHead(RetinaNetClassificationHead):
    """torchvision's classification head with the focal loss' α and γ as parameters."""

    def __init__(self, in_channels: int, num_anchors: int, num_classes: int, alpha: float = 0.25,
                 gamma: float = 2.0) -> None:
        super().__init__(in_channels, num_anchors, num_classes)
        self.alpha = float(alpha)
        self.gamma = float(gamma)

    def compute_loss(self, targets, head_outputs, matched_idxs):  # noqa: D102 (same contract as torchvision)
        losses = []
        for target, logits, matched in zip(targets, head_outputs["cls_logits"], matched_idxs, strict=True):
            foreground = matched >= 0
            num_foreground = int(foreground.sum())
            gt = torch.zeros_like(logits)
            gt[foreground, target["labels"][matched[foreground]]] = 1.0
            valid = matched != self.BETWEEN_THRESHOLDS
            loss = sigmoid_focal_loss(logits[valid], gt[valid], alpha=self.alpha, gamma=self.gamma, reduction="sum")
            losses.append(loss / max(1, num_foreground))
        return sum(losses) / len(targets)


class IdentityResizeTransform(GeneralizedRCNNTransform):
    """Batching without resizing: the dataset already delivers tensors at the detector's size."""

    def resize(self, image: Tensor, target: dict[str, Tensor] | None = None):
        return image, target

    def postprocess(self, result, image_shapes, original_image_sizes):
        return result


def paper_head_init(head: RetinaNetHead, prior: float = 0.01) -> None:
    """The reference head init: tower convs N(0, √(2 / (k·k·out))), output convs zero, cls bias −log((1 − π) / π)."""
    for tower in (head.classification_head.conv, head.regression_head.conv):
        for layer in tower.modules():
            if isinstance(layer, nn.Conv2d):
                k = layer.kernel_size[0] * layer.kernel_size[1]
                nn.init.normal_(layer.weight, std=math.sqrt(2.0 / (k * layer.out_channels)))
                nn.init.zeros_(layer.bias)
    nn.init.zeros_(head.classification_head.cls_logits.weight)
    nn.init.constant_(head.classification_head.cls_logits.bias, -math.log((1 - prior) / prior))
    nn.init.zeros_(head.regression_head.bbox_reg.weight)
    nn.init.zeros_(head.regression_head.bbox_reg.bias)


def create_detector(encoder: nn.Module, config: DetectorConfig) -> RetinaNet:
    """torchvision RetinaNet on ``encoder`` (the CLIP image tower) following the paper's design (module docstring).

    Returns a :class:`~torchvision.models.detection.RetinaNet` with one class (``config.finding``, label 0) whose
    ``backbone`` is a :class:`ClipDetectionBackbone`. In training mode ``model(images, targets)`` returns the losses
    ``{"classification", "bbox_regression"}``; in eval mode ``model(images)`` returns per-image
    ``{"boxes", "scores", "labels"}`` in input pixels.
    """
    backbone = ClipDetectionBackbone(encoder, config.taps, config.fpn_channels, freeze=config.freeze_encoder,
                                     memoize=config.memoize_encoder)
    anchors = PaperAnchorGenerator(config.anchor_sizes_per_level(), config.anchor_ratios)
    num_anchors = anchors.num_anchors_per_location()[0]
    head = RetinaNetHead(config.fpn_channels, num_anchors, 1)
    head.classification_head = FocalClassificationHead(config.fpn_channels, num_anchors, 1, config.focal_alpha,
                                                       config.focal_gamma)
    regression = RetinaNetRegressionHead(config.fpn_channels, num_anchors)
    regression.box_coder = det_utils.BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
    regression._loss_type = "smooth_l1"
    head.regression_head = regression
    paper_head_init(head)
    matcher = det_utils.Matcher(config.fg_iou, config.bg_iou,
                                allow_low_quality_matches=config.allow_low_quality_matches)
    model = RetinaNet(backbone, num_classes=1, min_size=1, max_size=1, image_mean=[0.0, 0.0, 0.0],
                      image_std=[1.0, 1.0, 1.0], anchor_generator=anchors, head=head, proposal_matcher=matcher,
                      score_thresh=config.score_threshold, nms_thresh=config.nms_iou,
                      detections_per_img=config.detections_per_image)
    model.box_coder = det_utils.BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
    model.transform = IdentityResizeTransform(1, 1, [0.0, 0.0, 0.0], [1.0, 1.0, 1.0], size_divisible=1)
    model.detector_config = config
    return model


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters that receive gradients (the encoder's only when it is fine-tuned)."""
    return [p for p in model.parameters() if p.requires_grad]
