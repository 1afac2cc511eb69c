"""MammoClip: presets, embeddings, determinism, overrides, save/load round trip."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mammoclip_kit.models.clip import MammoClip, from_pretrained
from mammoclip_kit.models.factory import create_model, list_models, resolve_config

TEXTS = ["An irregular mass with spiculated margins.", "No mass.", "Benign appearing calcifications in both breasts."]


@pytest.fixture(scope="module")
def smoke():
    return create_model("smoke").eval()


def test_presets_listed():
    assert {"paper-b5", "paper-b2", "classroom", "smoke"} <= set(list_models())
    paper = resolve_config("paper-b5")
    assert paper.image.name == "b5" and paper.image.padding == "static" and paper.image.nominal_size == 456
    assert paper.text.name_or_path == "emilyalsentzer/Bio_ClinicalBERT" and paper.text.pooling == "eos"
    assert paper.embed_dim == 512 and paper.image_size == (1520, 912)
    assert resolve_config("paper-b2").image.nominal_size == 260
    assert resolve_config("classroom").image_size == (320, 192) and resolve_config("smoke").image_size == (160, 96)


def test_smoke_model_embeddings(smoke):
    assert isinstance(smoke, MammoClip)
    assert smoke.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    h, w = smoke.config.image_size
    images = torch.randn(2, 3, h, w)
    tokens = smoke.tokenize(TEXTS)
    with torch.inference_mode():
        out = smoke(images, tokens)
    dim = smoke.config.embed_dim
    assert out["image_embeddings"].shape == (2, dim) and out["text_embeddings"].shape == (3, dim)
    assert torch.allclose(out["image_embeddings"].norm(dim=-1), torch.ones(2), atol=1e-5)
    assert torch.allclose(out["text_embeddings"].norm(dim=-1), torch.ones(3), atol=1e-5)
    assert out["logit_scale"].item() == pytest.approx(1 / 0.07, rel=1e-5)
    with torch.inference_mode():
        raw = smoke.encode_text(TEXTS, normalize=False)
        assert torch.allclose(raw / raw.norm(dim=-1, keepdim=True), out["text_embeddings"], atol=1e-6)
        assert torch.allclose(smoke.encode_text(tokens), smoke.encode_text(TEXTS))


def test_tokenize_pads_right_and_truncates(smoke):
    tokens = smoke.tokenize(TEXTS, max_length=6)
    assert tokens["input_ids"].shape == (3, 6)
    mask = smoke.tokenize(TEXTS)["attention_mask"]
    assert torch.all(mask[:, 0] == 1) and torch.all(mask[:, :-1] >= mask[:, 1:])  # ones then zeros


def test_same_seed_same_weights_other_seed_different():
    a, b, c = create_model("smoke"), create_model("smoke"), create_model("smoke", seed=1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.tokenizer.get_vocab() == b.tokenizer.get_vocab()
    assert not torch.equal(sa["image_projection.projection.weight"], sc["image_projection.projection.weight"])


def test_overrides_from_a_yaml_like_mapping():
    config = resolve_config({"preset": "classroom", "text": {"kind": "minilm"}, "image.name": "micro",
                             "embed_dim": 64})
    assert config.text.kind == "minilm" and config.image.name == "micro" and config.embed_dim == 64
    assert config.image_size == (320, 192)
    with pytest.raises(ValueError, match="unknown model option"):
        resolve_config("smoke", embedding_size=3)
    with pytest.raises(ValueError, match="unknown image tower field"):
        resolve_config("smoke", image={"widht": 2})
    with pytest.raises(ValueError, match="unknown model preset"):
        resolve_config("paper-b9")


def test_small_bert_vocabulary_from_given_texts():
    model = create_model("smoke", texts=["microcalcifications cluster"] * 3)
    assert "microcalcifications" in model.tokenizer.get_vocab()


def test_save_and_load_round_trip(smoke, tmp_path):
    folder = smoke.save_pretrained(tmp_path / "ckpt")
    assert {"model.safetensors", "config.json", "text_encoder"} <= {p.name for p in folder.iterdir()}
    config_text = (folder / "config.json").read_text()
    assert str(tmp_path) not in config_text and '"/' not in config_text
    json.loads(config_text)
    loaded = from_pretrained(folder)
    h, w = smoke.config.image_size
    images = torch.randn(2, 3, h, w)
    with torch.inference_mode():
        assert torch.equal(smoke.encode_image(images), loaded.encode_image(images))
        assert torch.equal(smoke.encode_text(TEXTS), loaded.encode_text(TEXTS))
    assert loaded.config.to_dict() == {**smoke.config.to_dict(), "text": loaded.config.to_dict()["text"]}


def test_image_only_model_refuses_text(tmp_path):
    model = create_model("smoke")
    image_only = MammoClip(model.config, model.image_encoder, None)
    with pytest.raises(RuntimeError, match="image-only"):
        image_only.encode_text(["mass"])
    folder = image_only.save_pretrained(tmp_path / "image_only")
    assert not (folder / "text_encoder").exists()
    reloaded = from_pretrained(folder)
    assert reloaded.text_encoder is None
    x = torch.randn(1, 3, 96, 64)
    with torch.inference_mode():
        assert torch.equal(reloaded.eval().encode_image(x), image_only.eval().encode_image(x))


def test_from_pretrained_on_a_non_checkpoint_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a kit checkpoint"):
        from_pretrained(tmp_path)
