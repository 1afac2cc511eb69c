"""The one checkpoint loader: kit folders, released files and presets load alike; errors name the path."""

from __future__ import annotations

import pytest
import torch

from mammoclip_kit.inference import model_image_size
from mammoclip_kit.models.factory import create_model
from mammoclip_kit.models.loader import describe_source, image_tower, load_model
from mammoclip_kit.models.reference import load_reference_checkpoint


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    first, second = a.state_dict(), b.state_dict()
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_kit_folder_loads_the_saved_weights(tmp_path):
    model = create_model("smoke", seed=3)
    model.save_pretrained(tmp_path / "kit")
    loaded = load_model(tmp_path / "kit", device="cpu")
    assert _same_weights(model, loaded) and not loaded.training and loaded.has_text


def test_released_file_loads_like_the_reference_loader(b2_reference, tiny_bert, capsys):
    _, path = b2_reference
    direct, _ = load_reference_checkpoint(path, text_encoder=tiny_bert)
    loaded = load_model(path, text_encoder=tiny_bert, device="cpu")
    assert _same_weights(direct, loaded) and not loaded.training
    assert loaded.load_report.coverage == 100.0
    assert "coverage 100.0 %" in capsys.readouterr().err
    image_only = load_model(path, image_only=True, device="cpu", verbose=False)
    assert image_only.text_encoder is None
    assert torch.equal(image_only.image_encoder.state_dict()["_conv_stem.weight"],
                       direct.image_encoder.state_dict()["_conv_stem.weight"])
    assert describe_source(path) == "b2-model-best-epoch-10"


def test_preset_names_build_seeded_models_and_image_only_keeps_the_image_weights():
    full = load_model("smoke", device="cpu")
    image_only = load_model("smoke", image_only=True, device="cpu")
    assert image_only.text_encoder is None and full.text_encoder is not None
    assert _same_weights(full.image_encoder, image_only.image_encoder)


def test_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        load_model(tmp_path / "nothing-here")
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"")
    with pytest.raises(ValueError, match="weights.bin"):
        load_model(weights)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: not a kit checkpoint folder"):
        load_model(tmp_path / "empty")


def test_image_tower_records_the_model_input_size():
    model = load_model("smoke", image_only=True, device="cpu")
    tower = image_tower(model)
    assert tower is model.image_encoder and not tower.training
    assert model_image_size(tower) == model_image_size(model) == (160, 96)
    with pytest.raises(TypeError, match=r"\(model, report\)"):
        image_tower((model, None))
