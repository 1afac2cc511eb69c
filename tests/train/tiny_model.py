"""A tiny MammoClip stand-in for the training tests: conv image tower, 1-layer BERT text tower, eos pooling."""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file
from torch import nn
from transformers import BertConfig, BertModel

VOCAB = 64


class TinyClip(nn.Module):
    def __init__(self, dropout: float = 0.1) -> None:
        super().__init__()
        self.image_encoder = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                           nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout))
        cfg = BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=32, hidden_dropout_prob=dropout,
                         attention_probs_dropout_prob=dropout)
        self.text_encoder = BertModel(cfg, add_pooling_layer=False)
        self.image_projection = nn.Linear(8, 12)
        self.text_projection = nn.Linear(16, 12)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.image_size = (24, 16)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        ids = [[2] + [3 + zlib.crc32(w.encode()) % (VOCAB - 3) for w in t.split()][:20] + [1] for t in texts]
        width = max(len(i) for i in ids)
        input_ids = torch.zeros(len(ids), width, dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        for row, seq in enumerate(ids):
            input_ids[row, :len(seq)] = torch.tensor(seq)
            mask[row, :len(seq)] = 1
        return {"input_ids": input_ids, "attention_mask": mask}

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return self.image_projection(self.image_encoder(x))

    def encode_text(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = self.text_encoder(**tokens).last_hidden_state
        eos = tokens["attention_mask"].sum(-1) - 1
        return self.text_projection(hidden[torch.arange(hidden.shape[0]), eos])

    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(folder / "model.safetensors"))
        (folder / "config.json").write_text(json.dumps({"name": "tiny"}))


def make_pairs(root: Path, n: int = 12, size: tuple[int, int] = (24, 16), seed: int = 0) -> pd.DataFrame:
    """``n`` breasts with a CC and an MLO PNG; half carry a bright blob that the text mentions."""
    import cv2

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        mass = i % 2 == 1
        paths = {}
        for view in ("CC", "MLO"):
            image = (rng.random(size) * 60).astype(np.uint8)
            if mass:
                image[8:16, 4:12] = 220
            rel = f"png/p{i}/{view}.png"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / rel), image)
            paths[view] = [rel]
        text = ["there is a mass in the breast", "suspicious mass"] if mass else ["no mass", "negative exam"]
        rows.append({"patient_id": f"p{i}", "laterality": "L", "views": ["CC", "MLO"], **paths, "text": text,
                     "text_augment": [t + " seen" for t in text], "fold": 0 if i < 4 else 1, "mass": int(mass)})
    return pd.DataFrame(rows)
