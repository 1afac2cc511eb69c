"""Tiny stand-in models for the inference / zero-shot tests (no download, milliseconds on CPU)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn


class TinyClip(nn.Module):
    """A CLIP-shaped toy: conv image tower, byte-level bag-of-embeddings text tower, learnable logit scale."""

    def __init__(self, image_size: tuple[int, int] = (32, 16), dim: int = 8, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.config = SimpleNamespace(image_size=image_size)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.image_projection = nn.Linear(16, dim)
        self.token_embedding = nn.Embedding(256, 12)
        self.text_projection = nn.Linear(12, dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return self.image_projection(F.adaptive_avg_pool2d(self.bn(self.conv(x)), 2).flatten(1))

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        encoded = [list(t.encode())[:64] for t in texts]
        length = max(len(e) for e in encoded)
        ids = torch.zeros(len(texts), length, dtype=torch.long)
        mask = torch.zeros(len(texts), length, dtype=torch.long)
        for i, e in enumerate(encoded):
            ids[i, : len(e)] = torch.tensor(e)
            mask[i, : len(e)] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def encode_text(self, tokens: Mapping[str, torch.Tensor]) -> torch.Tensor:
        mask = tokens["attention_mask"].unsqueeze(-1).float()
        pooled = (self.token_embedding(tokens["input_ids"]) * mask).sum(1) / mask.sum(1)
        return self.text_projection(pooled)


class LookupModel(nn.Module):
    """Text embeddings looked up from a table: lets tests fix every prompt's direction exactly."""

    def __init__(self, vectors: Mapping[str, Sequence[float]], logit_scale: float = 1.0) -> None:
        super().__init__()
        self.vectors = {k: torch.tensor(v, dtype=torch.float32) for k, v in vectors.items()}
        self.logit_scale = nn.Parameter(torch.tensor(math.log(logit_scale)))

    def tokenize(self, texts: Sequence[str]) -> list[str]:
        return list(texts)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        return torch.stack([self.vectors[t] for t in texts])
