"""Formula-driven (shapes) initialisation of the image tower: rendering, training, caching, loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mammoclip_kit.models.factory import resolve_config
from mammoclip_kit.models.towers import create_image_tower
from mammoclip_kit.train import shapes as S
from mammoclip_kit.train.config import PretrainConfig, load_config
from mammoclip_kit.train.pipeline import build_pretrain_model

SMALL = {"steps": 3, "batch_size": 4, "warmup_steps": 1}


def _tower() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_image_tower(resolve_config("smoke").image)


def test_render_is_deterministic_bounded_and_shape_specific() -> None:
    first = S.render_shapes(np.random.default_rng(3), 1, 64, 40)
    again = S.render_shapes(np.random.default_rng(3), 1, 64, 40)
    np.testing.assert_array_equal(first, again)
    assert first.shape == (64, 40) and first.dtype == np.float32 and 0.0 <= first.min() and first.max() <= 1.0
    # same random stream, other label: the background is drawn first and identical, the drawing differs
    disk, star = (S.render_shapes(np.random.default_rng(7), S.SHAPES.index(n), 224, 128) for n in ("disk", "star"))
    assert not np.array_equal(disk, star)
    # "none" draws nothing: its pixels keep the 1/f background statistics (no saturated object)
    nothing = S.render_shapes(np.random.default_rng(7), 0, 224, 128)
    assert np.abs(nothing - np.median(nothing)).max() < np.abs(disk - np.median(disk)).max()
    with pytest.raises(ValueError, match="out of range"):
        S.render_shapes(np.random.default_rng(0), len(S.SHAPES), 32, 32)


def test_pretrain_saves_a_tower_that_loads_back_exactly(tmp_path: Path) -> None:
    tower = _tower()
    before = {k: v.clone() for k, v in tower.state_dict().items()}
    summary = S.pretrain_on_shapes(tower, S.ShapesConfig(image_size=(48, 32), **SMALL), out_dir=tmp_path,
                                   progress=False)
    assert summary["steps"] == 3 and np.isfinite(summary["final_loss"]) and 0 <= summary["final_accuracy"] <= 1
    assert any(not torch.equal(before[k], v) for k, v in tower.state_dict().items()), "training changes the tower"
    fresh = S.load_shapes_init(_tower(), tmp_path)
    for key, value in tower.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[key], value, rtol=0, atol=0)
    with pytest.raises(FileNotFoundError, match="no shapes-pretrained image tower"):
        S.load_shapes_init(_tower(), tmp_path / "missing")


def test_ensure_trains_once_per_setting(tmp_path: Path, monkeypatch) -> None:
    image = resolve_config("smoke").image
    folder = S.ensure_shapes_init(image, (48, 32), SMALL, tmp_path / "init", progress=False)
    weights = (folder / "image_tower.safetensors").read_bytes()

    def refuse(*args, **kwargs):
        raise AssertionError("same settings must reuse the stored tower")

    monkeypatch.setattr(S, "pretrain_on_shapes", refuse)
    assert S.ensure_shapes_init(image, (48, 32), SMALL, tmp_path / "init", progress=False) == folder
    monkeypatch.undo()
    S.ensure_shapes_init(image, (48, 32), {**SMALL, "steps": 4}, tmp_path / "init", progress=False)
    assert (folder / "image_tower.safetensors").read_bytes() != weights  # other settings: trained again
    calls = []
    monkeypatch.setattr(S, "pretrain_on_shapes", lambda *args, **kwargs: calls.append(kwargs["out_dir"]))
    S.ensure_shapes_init(image, (48, 32), {**SMALL, "steps": 4}, tmp_path / "init", progress=False, retrain=True)
    assert calls == [folder]                                               # retrain: trained again
    with pytest.raises(ValueError, match=r"shapes settings: unknown setting\(s\) \['stepz'\]"):
        S.ensure_shapes_init(image, (48, 32), {"stepz": 2}, tmp_path / "init", progress=False)


def test_pretraining_config_starts_from_the_shapes_tower(tmp_path: Path) -> None:
    tower = _tower()
    S.pretrain_on_shapes(tower, S.ShapesConfig(image_size=(48, 32), **SMALL), out_dir=tmp_path, progress=False)
    model = build_pretrain_model(PretrainConfig(model="smoke", image_init=str(tmp_path)))
    for key, value in tower.state_dict().items():
        torch.testing.assert_close(model.image_encoder.state_dict()[key], value, rtol=0, atol=0)
    with pytest.raises(ValueError, match="must be resolved"):
        build_pretrain_model(PretrainConfig(model="smoke", image_init="shapes"))
    with pytest.raises(ValueError, match="unknown shapes field"):
        load_config(overrides={"image_init": "shapes", "shapes": {"stepz": 3}})
