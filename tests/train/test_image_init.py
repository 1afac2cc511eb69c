"""``image_init: <weights file>``: the pretraining model starts from the file's weights (timm names mapped), and a
missing or ill-fitting file stops the run before the datasets are built."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_pipeline import _tables

from mammoclip_kit.models.factory import resolve_config
from mammoclip_kit.models.imagenet import WeightMappingError, efficientnet_key_mapping
from mammoclip_kit.models.towers import create_image_tower
from mammoclip_kit.train.config import PretrainConfig
from mammoclip_kit.train.pipeline import build_pretrain_model, run_pretraining

#: weights files fit the kit EfficientNet (the paper towers); the smoke preset's own tower is timm's Lite0, so these
#: tests give it the kit's tiny "micro" EfficientNet instead
MICRO = {"image": {"kind": "efficientnet", "name": "micro", "padding": "dynamic"}}


def _timm_named_file(path: Path, seed: int = 5) -> dict[str, torch.Tensor]:
    """A smoke image tower's weights (random, seeded) saved under timm's names, plus a 1000-way classifier."""
    torch.manual_seed(seed)
    tower = create_image_tower(resolve_config("smoke", **MICRO).image)
    kit_to_timm = {v: k for k, v in efficientnet_key_mapping(tower, "timm").items()}
    state = {kit_to_timm[k]: v.clone() for k, v in tower.state_dict().items()}
    state.update({"classifier.weight": torch.zeros(1000, tower.num_features), "classifier.bias": torch.zeros(1000)})
    torch.save({"state_dict": state}, path)
    return tower.state_dict()


def test_build_pretrain_model_loads_a_timm_named_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    expected = _timm_named_file(tmp_path / "imagenet.pth")
    model = build_pretrain_model(PretrainConfig(model="smoke", model_overrides=MICRO, image_init=str(tmp_path / "imagenet.pth")))
    got = model.image_encoder.state_dict()
    assert set(got) == set(expected)
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    assert "timm names" in capsys.readouterr().out


def test_bad_image_init_file_fails_before_the_datasets(tmp_path: Path) -> None:
    _tables(tmp_path)
    cfg = PretrainConfig(model="smoke", model_overrides=MICRO, image_init=str(tmp_path / "missing.safetensors"), tensorboard=False)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        run_pretraining(cfg, tmp_path / "tables", tmp_path, tmp_path / "ckpt", progress=False)
    torch.save({"conv_stem.weight": torch.zeros(1, 3, 3, 3)}, tmp_path / "other.pt")
    cfg = PretrainConfig(model="smoke", model_overrides=MICRO, image_init=str(tmp_path / "other.pt"), tensorboard=False)
    with pytest.raises(WeightMappingError, match="other.pt"):
        run_pretraining(cfg, tmp_path / "tables", tmp_path, tmp_path / "ckpt", progress=False)
    assert not (tmp_path / "ckpt").exists()


def test_image_cache_only_without_loader_workers(tmp_path: Path) -> None:
    from mammoclip_kit.train.pipeline import build_datasets

    tables = _tables(tmp_path)
    for workers, cached in ((0, True), (4, False)):
        cfg = PretrainConfig(model="smoke", num_workers=workers, cache_images=True)
        train, val, _ = build_datasets(cfg, tables, tmp_path, (48, 32))
        assert train.cache_images is cached and val["reports"].cache_images is cached
