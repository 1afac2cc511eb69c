"""ImageNet weights for the paper towers from a local file (``image_init: <file>``): timm names and the authors' /
efficientnet_pytorch names map completely and exactly onto the kit EfficientNet.

The source models are built by timm and efficientnet_pytorch with random weights (and randomised batch-norm
statistics, so that a swapped BN shows up), saved the way those libraries save them, loaded into the kit tower; the kit
tower must then give the same feature maps as the source model.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mammoclip_kit.models.efficientnet import efficientnet
from mammoclip_kit.models.imagenet import (
    WeightMappingError,
    detect_naming,
    efficientnet_key_mapping,
    is_weights_file,
    load_image_init,
    map_efficientnet_state,
)

timm = pytest.importorskip("timm")
efficientnet_pytorch = pytest.importorskip("efficientnet_pytorch")


def _randomise_bn(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            module.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    return model.eval()


@pytest.mark.parametrize("variant", ["b2", "b5"])
def test_timm_mapping_is_complete_and_one_to_one(variant: str) -> None:
    tower = efficientnet(variant, padding="static", nominal_size=64)
    source = timm.create_model(f"tf_efficientnet_{variant}", pretrained=False).state_dict()
    mapping = efficientnet_key_mapping(tower, "timm")
    assert sorted(mapping.values()) == sorted(tower.state_dict())        # every kit entry, once
    assert set(mapping) == {k for k in source if not k.startswith("classifier.")}  # every timm entry but the head
    assert mapping["blocks.0.0.conv_pw.weight"] == "_blocks.0._project_conv.weight"   # depthwise-separable block
    assert mapping["blocks.1.0.conv_pw.weight"] == "_blocks.{}._expand_conv.weight".format(3 if variant == "b5" else 2)
    assert mapping["bn2.running_var"] == "_bn1.running_var"


@pytest.mark.parametrize("variant", ["b2", "b5"])
def test_timm_file_gives_identical_outputs(variant: str, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    source = _randomise_bn(timm.create_model(f"tf_efficientnet_{variant}", pretrained=False), 1)
    path = tmp_path / f"tf_efficientnet_{variant}.safetensors"  # as timm / the HF hub store it
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    size = (64, 48)  # static pads computed from the input size equal timm's dynamic TF-"SAME" pads
    tower = efficientnet(variant, padding="static", nominal_size=size).eval()
    report = load_image_init(tower, path)
    assert report.naming == "timm" and report.loaded == len(tower.state_dict())
    assert report.dropped == ["classifier.bias", "classifier.weight"]
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(tower.forward_features(x), source.forward_features(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", ["b2", "b5"])
def test_authors_names_file_gives_identical_outputs(variant: str, tmp_path: Path) -> None:
    from efficientnet_pytorch import EfficientNet as LukeNet

    torch.manual_seed(0)
    source = _randomise_bn(LukeNet.from_name(f"efficientnet-{variant}", image_size=64), 3)
    path = tmp_path / f"efficientnet-{variant}.pth"  # what efficientnet_pytorch downloads: a bare state dict
    torch.save(source.state_dict(), path)
    tower = efficientnet(variant, padding="static", nominal_size=64).eval()
    report = load_image_init(tower, path)
    assert report.naming == "efficientnet_pytorch" and report.dropped == ["_fc.bias", "_fc.weight"]
    assert report.loaded == len(tower.state_dict())
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(tower.forward_features(x), source.extract_features(x), rtol=1e-5, atol=1e-5)


def test_wrong_variant_and_foreign_files_are_refused(tmp_path: Path) -> None:
    b2 = timm.create_model("tf_efficientnet_b2", pretrained=False).state_dict()
    tower = efficientnet("b5", padding="static", nominal_size=64)
    with pytest.raises(WeightMappingError, match="shape mismatches") as info:
        map_efficientnet_state(b2, tower, label="b2.pth")
    assert "b2.pth" in str(info.value) and "tower keys not filled" in str(info.value)
    extra = {**efficientnet("b5").state_dict(), "_blocks.99._bn0.weight": torch.ones(1)}
    with pytest.raises(WeightMappingError, match=r"source keys not used \(1\)"):
        map_efficientnet_state(extra, tower)
    with pytest.raises(WeightMappingError, match="not an EfficientNet state dict"):
        detect_naming({"encoder.layer.0.weight"})
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_image_init(tower, tmp_path / "missing.pth")
    assert is_weights_file("w/x.safetensors") and is_weights_file("a.PTH") and not is_weights_file("shapes")


def test_kit_and_module_prefixes_are_stripped() -> None:
    tower = efficientnet("b2", padding="static", nominal_size=64)
    wrapped = {f"module.image_encoder.{k}": v for k, v in efficientnet("b2").state_dict().items()}
    state, report = map_efficientnet_state(wrapped, tower)
    assert report.naming == "efficientnet_pytorch" and set(state) == set(tower.state_dict())
