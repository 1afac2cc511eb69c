"""Tiny stand-ins shared by the probe and robustness tests: a BN + dropout encoder and a PNG table on disk."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from torch import nn


class TinyEncoder(nn.Module):
    """Conv → BN → ReLU → dropout → global pool: has BN buffers and dropout, like the real towers."""

    num_features = 8

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, self.num_features, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(self.num_features)
        self.drop = nn.Dropout(0.5)
        self.calls = 0  # number of forward passes (the cache test counts them)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.drop(torch.relu(self.bn(self.conv(x)))).mean(dim=(2, 3))


def make_table(root: Path, n_patients: int = 24, images_per_patient: int = 2, size: tuple[int, int] = (40, 24),
               seed: int = 0) -> pd.DataFrame:
    """PNGs under ``root/png`` and a VinDr-like table: a bright blob marks a 'Mass', brightness sets 'density'.

    Every fourth patient is in the test split (and in fold 3); every third patient is positive; density and vendor change
    every four patients, so both splits hold every density class and every vendor.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        positive = p % 3 == 0
        density = (p // 4) % 4
        for i in range(images_per_patient):
            image = rng.normal(60 + 30 * density, 10, size=size)
            if positive:
                y, x = rng.integers(8, size[0] - 8), rng.integers(6, size[1] - 6)
                image[y - 4:y + 4, x - 4:x + 4] += 120
            image = np.clip(image, 0, 255).astype(np.uint8)
            rel = Path("png") / f"P{p:03d}" / f"I{p:03d}_{i}.png"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / rel), image)
            rows.append({"patient_id": f"P{p:03d}", "image_id": f"I{p:03d}_{i}", "laterality": "LR"[i % 2],
                         "view": "CC", "split": "test" if p % 4 == 3 else "training", "fold": p % 4,
                         "density": density, "Mass": int(positive), "Suspicious_Calcification": int(p % 5 == 0),
                         "cancer": int(positive), "breast_id": f"P{p:03d}_{'LR'[i % 2]}",
                         "vendor": "ABC"[(p // 4) % 3], "png_path": rel.as_posix()})
    return pd.DataFrame(rows)
