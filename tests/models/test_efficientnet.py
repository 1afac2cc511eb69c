"""The kit's EfficientNet: released names and sizes, the static padding table, shapes, timm parity, taps."""

from __future__ import annotations

import math

import pytest
import torch

from mammoclip_kit.models.efficientnet import efficientnet, reference_taps, round_filters, round_repeats
from mammoclip_kit.models.padding import Conv2dDynamicSame, same_padding

# Stage layout of the released encoders as stated in docs/reference-notes.md §2.2: (first block, last block,
# kernel, stride, expansion, in channels, out channels).
SPEC_LAYOUT = {
    "b5": [(0, 2, 3, 1, 1, 48, 24), (3, 7, 3, 2, 6, 24, 40), (8, 12, 5, 2, 6, 40, 64), (13, 19, 3, 2, 6, 64, 128),
           (20, 26, 5, 1, 6, 128, 176), (27, 35, 5, 2, 6, 176, 304), (36, 38, 3, 1, 6, 304, 512)],
    "b2": [(0, 1, 3, 1, 1, 32, 16), (2, 4, 3, 2, 6, 16, 24), (5, 7, 5, 2, 6, 24, 48), (8, 11, 3, 2, 6, 48, 88),
           (12, 15, 5, 1, 6, 88, 120), (16, 20, 5, 2, 6, 120, 208), (21, 22, 3, 1, 6, 208, 352)],
}
SPEC_HEAD = {"b5": 2048, "b2": 1408}
SPEC_ENTRIES = {"b5": 852, "b2": 506}
SPEC_PARAMS_M = {"b5": 28.34, "b2": 7.70}
# Static pads (before, after) of the stride-2 convs, docs/reference-notes.md §2.4 table: stem, then the first
# depthwise of stages 2/3/4/6.
SPEC_STATIC_PADS = {
    "b2": {"_conv_stem": (0, 1), "_blocks.2._depthwise_conv": (0, 1), "_blocks.5._depthwise_conv": (2, 2),
           "_blocks.8._depthwise_conv": (1, 1), "_blocks.16._depthwise_conv": (2, 2)},
    "b5": {"_conv_stem": (0, 1), "_blocks.3._depthwise_conv": (0, 1), "_blocks.8._depthwise_conv": (1, 2),
           "_blocks.13._depthwise_conv": (1, 1), "_blocks.27._depthwise_conv": (2, 2)},
}
BN_SUFFIXES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def expected_state_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    """The lukemelas-style key set and shapes, derived from the layout in docs/reference-notes.md §2.2 only
    (not from the kit's code)."""
    shapes: dict[str, tuple[int, ...]] = {}

    def bn(prefix: str, channels: int) -> None:
        for suffix in BN_SUFFIXES:
            shapes[f"{prefix}.{suffix}"] = () if suffix == "num_batches_tracked" else (channels,)

    stem = SPEC_LAYOUT[arch][0][5]
    shapes["_conv_stem.weight"] = (stem, 3, 3, 3)
    bn("_bn0", stem)
    for first, last, kernel, _, expand, cin, cout in SPEC_LAYOUT[arch]:
        for i in range(first, last + 1):
            block_in = cin if i == first else cout
            mid = block_in * expand
            p = f"_blocks.{i}"
            if expand != 1:
                shapes[f"{p}._expand_conv.weight"] = (mid, block_in, 1, 1)
                bn(f"{p}._bn0", mid)
            shapes[f"{p}._depthwise_conv.weight"] = (mid, 1, kernel, kernel)
            bn(f"{p}._bn1", mid)
            squeezed = max(1, int(block_in * 0.25))
            shapes[f"{p}._se_reduce.weight"] = (squeezed, mid, 1, 1)
            shapes[f"{p}._se_reduce.bias"] = (squeezed,)
            shapes[f"{p}._se_expand.weight"] = (mid, squeezed, 1, 1)
            shapes[f"{p}._se_expand.bias"] = (mid,)
            shapes[f"{p}._project_conv.weight"] = (cout, mid, 1, 1)
            bn(f"{p}._bn2", cout)
    last_channels = SPEC_LAYOUT[arch][-1][6]
    shapes["_conv_head.weight"] = (SPEC_HEAD[arch], last_channels, 1, 1)
    bn("_bn1", SPEC_HEAD[arch])
    return shapes


def test_same_padding_hand_computed():
    # total = max((ceil(i/s) - 1) * s + k - i, 0), smaller half first
    assert same_padding(65, 5, 2) == (2, 2)  # (33-1)*2+5-65 = 4
    assert same_padding(114, 5, 2) == (1, 2)  # (57-1)*2+5-114 = 3
    assert same_padding(33, 3, 2) == (1, 1)  # (17-1)*2+3-33 = 2
    assert same_padding(1520, 3, 2) == (0, 1)
    assert same_padding(95, 3, 2) == (1, 1)
    assert same_padding(190, 5, 2) == (1, 2)
    assert same_padding(10, 5, 1) == (2, 2)
    assert same_padding(8, 1, 2) == (0, 0)


def test_round_filters_and_repeats():
    assert [round_filters(c, 1.6) for c in (32, 16, 24, 40, 80, 112, 192, 320, 1280)] == \
        [48, 24, 40, 64, 128, 176, 304, 512, 2048]
    assert [round_filters(c, 1.1) for c in (32, 16, 24, 40, 80, 112, 192, 320, 1280)] == \
        [32, 16, 24, 48, 88, 120, 208, 352, 1408]
    assert [round_repeats(r, 2.2) for r in (1, 2, 2, 3, 3, 4, 1)] == [3, 5, 5, 7, 7, 9, 3]
    assert [round_repeats(r, 1.2) for r in (1, 2, 2, 3, 3, 4, 1)] == [2, 3, 3, 4, 4, 5, 2]


@pytest.mark.parametrize("arch", ["b2", "b5"])
def test_state_dict_matches_released_layout(arch):
    with torch.device("meta"):
        model = efficientnet(arch)
    state = model.state_dict()
    expected = expected_state_shapes(arch)
    assert len(state) == SPEC_ENTRIES[arch] == len(expected)
    assert set(state) == set(expected)
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    assert not any(k.startswith("_fc") for k in state)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    assert params == pytest.approx(SPEC_PARAMS_M[arch], abs=0.005)
    assert model.num_features == SPEC_HEAD[arch]


@pytest.mark.parametrize("arch", ["b2", "b5"])
def test_static_padding_table_of_the_spec(arch):
    with torch.device("meta"):
        model = efficientnet(arch)
    stride2 = {row["name"]: row["pads"] for row in model.padding_table() if row["stride"] == 2}
    assert set(stride2) == set(SPEC_STATIC_PADS[arch])
    for name, (before, after) in SPEC_STATIC_PADS[arch].items():
        assert stride2[name] == (before, after, before, after), name
    # every stride-1 depthwise conv pads (k-1)/2 on each side
    for row in model.padding_table():
        if row["stride"] == 1:
            half = (row["kernel"] - 1) // 2
            assert row["pads"] == (half, half, half, half), row["name"]


@pytest.mark.parametrize("arch", ["b2", "b5"])
def test_final_feature_map_is_48x29_at_1520x912(arch):
    with torch.device("meta"):  # shapes only, no arithmetic
        model = efficientnet(arch).eval()
        features = model.forward_features(torch.zeros(1, 3, 1520, 912))
        taps = model.forward_intermediates(torch.zeros(1, 3, 1520, 912))
    assert tuple(features.shape) == (1, SPEC_HEAD[arch], 48, 29)
    assert [tuple(t.shape[1:]) for t in taps] == [(model.tap_channels()[0], 95, 57), (model.tap_channels()[1], 48, 29)]
    # the same by hand from the static pads: out = (in + pads - k) // s + 1
    h, w = 1520, 912
    for row in model.padding_table():
        if row["stride"] == 2:
            left, right, top, bottom = row["pads"]
            h = (h + top + bottom - row["kernel"]) // 2 + 1
            w = (w + left + right - row["kernel"]) // 2 + 1
    assert (h, w) == (48, 29)


def test_small_variant_forward_on_zeros_gives_48x29():
    model = efficientnet("micro", padding="static", nominal_size=(1520, 912)).eval()
    with torch.inference_mode():
        features = model.forward_features(torch.zeros(1, 3, 1520, 912))
    assert tuple(features.shape[2:]) == (48, 29)


def test_detector_taps():
    with torch.device("meta"):
        b5, b2 = efficientnet("b5"), efficientnet("b2")
    assert b5.default_taps == (26, 37) and b5.tap_channels() == [176, 512]
    assert b2.default_taps == (15, 21) and b2.tap_channels() == [120, 352]
    assert reference_taps("b5") == b5.default_taps and reference_taps("b2") == b2.default_taps
    micro = efficientnet("micro", padding="dynamic")
    first, second = micro.default_taps
    assert micro.block_reduction(first) == 16 and micro.block_reduction(second) == 32
    assert second == micro.num_blocks - 1  # its last stage has one block
    outs = micro.forward_intermediates(torch.randn(1, 3, 64, 96), output_head=True)
    assert [tuple(o.shape) for o in outs] == [(1, micro.tap_channels()[0], 4, 6), (1, micro.tap_channels()[1], 2, 3),
                                              (1, micro.num_features, 2, 3)]


def _timm_name(name: str, specs) -> str:
    """Kit (lukemelas) key → timm ``tf_efficientnet`` key (docs/reference-notes.md §2.5 naming note)."""
    if not name.startswith("_blocks."):
        module, rest = name.split(".", 1)
        return {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2"}[module] + "." + rest
    _, index, module, rest = name.split(".", 3)
    spec = specs[int(index)]
    first_of_stage = min(s.index for s in specs if s.stage == spec.stage)
    if spec.expand_ratio == 1:
        table = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_se_reduce": "se.conv_reduce",
                 "_se_expand": "se.conv_expand", "_project_conv": "conv_pw", "_bn2": "bn2"}
    else:
        table = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                 "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand", "_project_conv": "conv_pwl",
                 "_bn2": "bn3"}
    return f"blocks.{spec.stage}.{spec.index - first_of_stage}.{table[module]}.{rest}"


def randomize_bn(model: torch.nn.Module) -> None:
    """Non-trivial BN statistics and affine parameters (fresh ones make eval outputs ~1e-6 and comparisons weak)."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.05, 0.3)
            module.weight.data.uniform_(0.8, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)


def test_dynamic_mode_matches_timm_tf_efficientnet_b0():
    import timm

    torch.manual_seed(0)
    reference = timm.create_model("tf_efficientnet_b0", pretrained=False, num_classes=0).eval()
    randomize_bn(reference)
    ours = efficientnet("b0", padding="dynamic").eval()
    source = reference.state_dict()
    ours.load_state_dict({k: source[_timm_name(k, ours.block_specs)] for k in ours.state_dict()}, strict=True)
    x = torch.randn(2, 3, 97, 61)  # odd sizes: asymmetric pads everywhere
    with torch.inference_mode():
        expected, got = reference(x), ours(x)
        expected_map, got_map = reference.forward_features(x), ours.forward_features(x)
    assert got.shape == expected.shape == (2, 1280)
    assert expected.abs().max() > 0.05  # the comparison below is not between near-zero vectors
    assert torch.allclose(got, expected, atol=1e-5, rtol=0)
    assert torch.allclose(got_map, expected_map, atol=1e-5, rtol=0)


def test_static_equals_dynamic_at_the_nominal_size_only():
    torch.manual_seed(0)
    static = efficientnet("micro", padding="static", nominal_size=64).eval()
    randomize_bn(static)
    dynamic = efficientnet("micro", padding="dynamic").eval()
    dynamic.load_state_dict(static.state_dict())
    with torch.inference_mode():
        x = torch.randn(1, 3, 64, 64)
        assert torch.equal(static(x), dynamic(x))
        y = torch.randn(1, 3, 130, 66)  # ceil-propagated pads from 64 differ from the input's own
        assert static(y).shape == dynamic(y).shape
        assert not torch.allclose(static(y), dynamic(y), atol=1e-4)


def test_dynamic_conv_output_is_ceil_of_stride():
    conv = Conv2dDynamicSame(1, 1, 5, stride=2)
    for h, w in [(65, 64), (1520, 912), (7, 3)]:
        assert tuple(conv(torch.zeros(1, 1, h, w)).shape[2:]) == (math.ceil(h / 2), math.ceil(w / 2))


def test_grad_checkpointing_gives_identical_gradients():
    torch.manual_seed(0)
    model = efficientnet("micro", padding="dynamic", drop_connect_rate=0.0, dropout=0.0).train()
    x = torch.randn(2, 3, 64, 48)

    def grads(enable: bool) -> list[torch.Tensor]:
        model.zero_grad()
        model.set_grad_checkpointing(enable)
        model(x).square().sum().backward()
        return [p.grad.clone() for p in model.parameters()]

    plain, checkpointed = grads(False), grads(True)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain, checkpointed, strict=True))


def test_drop_connect_and_dropout_only_in_training():
    torch.manual_seed(0)
    model = efficientnet("micro", padding="dynamic", drop_connect_rate=0.5, dropout=0.5)
    x = torch.randn(4, 3, 64, 48)
    model.eval()
    with torch.inference_mode():
        assert torch.equal(model(x), model(x))
        model.train()
        assert not torch.equal(model(x), model(x))
    rates = [spec.drop_connect for spec in model.block_specs]
    assert rates[0] == 0.0 and rates == sorted(rates) and rates[-1] == pytest.approx(0.5 * (len(rates) - 1) / len(rates))


@pytest.mark.parametrize("arch, size", [("b2", (190, 114)), ("b5", (114, 72))])
def test_static_mode_matches_the_upstream_lukemelas_port(arch, size):
    """The released encoders are a copy of lukemelas/EfficientNet-PyTorch (docs/reference-notes.md §2.1); the
    kit's static mode must give its outputs (1e-5), while dynamic padding must not (the bold cells of the
    table in docs/reference-notes.md §2.4)."""
    from efficientnet_pytorch import EfficientNet as Upstream

    torch.manual_seed(0)
    ours = efficientnet(arch).eval()
    for module in ours.modules():  # moderate BN statistics: 23–39 blocks must not blow up or vanish
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.8, 1.2)
            module.bias.data.uniform_(-0.2, 0.2)
    upstream = Upstream.from_name(f"efficientnet-{arch}").eval()
    result = upstream.load_state_dict(ours.state_dict(), strict=False)
    assert result.missing_keys == ["_fc.weight", "_fc.bias"] and result.unexpected_keys == []  # same names
    dynamic = efficientnet(arch, padding="dynamic").eval()
    dynamic.load_state_dict(ours.state_dict())
    x = torch.randn(1, 3, *size)
    with torch.inference_mode():
        expected_map = upstream.extract_features(x)
        expected = expected_map.mean(dim=(2, 3))
        got_map, got = ours.forward_features(x), ours(x)
        assert expected.abs().max() > 0.05
        assert torch.allclose(got_map, expected_map, atol=1e-5, rtol=1e-5)
        assert torch.allclose(got, expected, atol=1e-5, rtol=0)
        assert (dynamic(x) - expected).abs().max() > 1e-3
