"""Text pooling, the small-BERT builder, the MiniLM tower and the timm image tower."""

from __future__ import annotations

import pytest
import torch

from mammoclip_kit.models.towers import (
    ImageTowerConfig,
    TextTowerConfig,
    TimmImageTower,
    create_image_tower,
    create_text_tower,
    pool_hidden,
    train_wordpiece,
)


def test_eos_pooling_picks_the_last_non_pad_token():
    hidden = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    pooled = pool_hidden(hidden, mask, "eos")
    assert torch.equal(pooled[0], hidden[0, 2]) and torch.equal(pooled[1], hidden[1, 4])
    assert torch.equal(pool_hidden(hidden, mask, "cls"), hidden[:, 0])
    assert torch.allclose(pool_hidden(hidden, mask, "mean")[0], hidden[0, :3].mean(0))
    with pytest.raises(ValueError, match="pooling"):
        pool_hidden(hidden, mask, "max")


def test_eos_pooling_in_the_tower_reads_the_sep_position(tiny_bert):
    tower, tokenizer = create_text_tower(TextTowerConfig(kind="hf", name_or_path=str(tiny_bert)))
    tokens = tokenizer(["mass", "a round mass with indistinct margins"], padding=True, return_tensors="pt")
    assert tokenizer.padding_side == "right"
    last = tokens["attention_mask"].sum(-1) - 1
    assert tokens["input_ids"][0, last[0]] == tokenizer.sep_token_id
    tower.eval()
    with torch.inference_mode():
        hidden = tower.text_encoder(**tokens).last_hidden_state
        pooled = tower(**tokens)
    assert torch.equal(pooled[0], hidden[0, last[0]]) and torch.equal(pooled[1], hidden[1, last[1]])
    # the pooler is kept (released checkpoints have it) but frozen: it is never used
    assert all(not p.requires_grad for p in tower.text_encoder.pooler.parameters())


def test_wordpiece_is_deterministic_and_covers_ascii():
    texts = ["Irregular spiculated mass in the left breast.", "No suspicious calcification."] * 3
    first, second = train_wordpiece(texts, vocab_size=120), train_wordpiece(list(reversed(texts)), vocab_size=120)
    assert first.get_vocab() == second.get_vocab()
    tokens = first.tokenize("Zebra-like QUX 42mm masses")
    assert "[UNK]" not in tokens
    assert "mass" in first.get_vocab() and "spiculated" in first.get_vocab()
    assert first("mass")["input_ids"][0] == first.cls_token_id and first("mass")["input_ids"][-1] == first.sep_token_id


def test_small_bert_folder_loads_offline(tiny_bert):
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(tiny_bert, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert, local_files_only=True)
    assert model.config.hidden_size == 32 and model.config.num_hidden_layers == 1
    assert "[UNK]" not in tokenizer.tokenize("spiculated mass")


def test_missing_local_text_folder_is_named(tmp_path):
    missing = tmp_path / "no_such_bert"
    with pytest.raises(FileNotFoundError, match="no_such_bert"):
        create_text_tower(TextTowerConfig(kind="hf", name_or_path=str(missing)))


def test_minilm_tower_loads_offline():
    tower, tokenizer = create_text_tower(TextTowerConfig(kind="minilm", name_or_path=None, add_pooler=False))
    assert tower.out_dim == 384 and tower.text_encoder.pooler is None
    tokens = tokenizer(["mass", "no mass"], padding=True, return_tensors="pt")
    with torch.inference_mode():
        assert tower.eval()(**tokens).shape == (2, 384)


def test_timm_tower_loads_local_weights_only(tmp_path):
    source = TimmImageTower("test_efficientnet")
    state = {k: v + 0.01 if v.is_floating_point() else v for k, v in source.model.state_dict().items()}
    state["classifier.weight"] = torch.zeros(10, source.num_features)  # a classifier in the file is ignored
    torch.save(state, tmp_path / "weights.pth")
    tower = create_image_tower(ImageTowerConfig(kind="timm", name="test_efficientnet",
                                                pretrained_path=str(tmp_path / "weights.pth")))
    assert tower.load_report == {"missing": [], "unexpected": []}
    loaded = tower.model.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in loaded)
    x = torch.randn(1, 3, 64, 64)
    tower.eval()
    with torch.inference_mode():
        assert tower(x).shape == (1, tower.num_features)
        taps = tower.forward_intermediates(x)
    assert [t.shape[1] for t in taps] == tower.tap_channels()
    assert [x.shape[-1] // t.shape[-1] for t in taps] == [16, 32]
