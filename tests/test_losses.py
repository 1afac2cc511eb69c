"""Each MVS / CLIP loss term against a direct re-derivation (NumPy log-softmax loops) on fixed embeddings."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mammoclip_kit.losses import ClipLoss, LossConfig, MultiViewClipLoss, create_loss, gather_with_grad


def _emb(seed: int, b: int = 5, d: int = 8) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(b, d, generator=g, dtype=torch.float64), dim=1)


def _ce_direct(rows: np.ndarray, cols: np.ndarray, s: float, smoothing: float = 0.0) -> float:
    """Mean over rows of -[(1-ε) log p_ii + ε/n Σ_j log p_ij], p = softmax(s · rows · colsᵀ)."""
    n = cols.shape[0]
    total = 0.0
    for i in range(rows.shape[0]):
        z = [s * float(np.dot(rows[i], cols[j])) for j in range(n)]
        m = max(z)
        lse = m + math.log(sum(math.exp(v - m) for v in z))
        logp = [v - lse for v in z]
        total += -((1 - smoothing) * logp[i] + smoothing / n * sum(logp))
    return total / rows.shape[0]


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_mvs_terms_match_direct_derivation(smoothing: float) -> None:
    i1, i2, t1, t2 = (_emb(k) for k in range(4))
    s = 1 / 0.07
    out = MultiViewClipLoss(label_smoothing=smoothing)(i1, i2, t1, t2, torch.tensor(s, dtype=torch.float64))
    a = {k: v.numpy() for k, v in {"i1": i1, "i2": i2, "t1": t1, "t2": t2}.items()}
    ce = _ce_direct
    i2t = (ce(a["i1"], a["t1"], s, smoothing) + ce(a["i2"], a["t1"], s, smoothing)
           + ce(a["i1"], a["t2"], s, smoothing) + ce(a["i2"], a["t2"], s, smoothing)) / 4
    t2i = (ce(a["t1"], a["i1"], s, smoothing) + ce(a["t1"], a["i2"], s, smoothing)
           + ce(a["t2"], a["i1"], s, smoothing) + ce(a["t2"], a["i2"], s, smoothing)) / 4
    i2i = (ce(a["i1"], a["i2"], s) + ce(a["i2"], a["i1"], s)) / 2   # never smoothed
    t2t = (ce(a["t2"], a["t1"], s) + ce(a["t1"], a["t2"], s)) / 2
    assert out["i2t"].item() == pytest.approx(i2t, rel=1e-6)
    assert out["t2i"].item() == pytest.approx(t2i, rel=1e-6)
    assert out["i2i"].item() == pytest.approx(i2i, rel=1e-6)
    assert out["t2t"].item() == pytest.approx(t2t, rel=1e-6)
    assert out["loss"].item() == pytest.approx((i2t + t2i) / 2 + 1.0 * i2i + 0.5 * t2t, rel=1e-6)


def test_hand_computed_two_by_two() -> None:
    # Orthogonal unit vectors, s = 1: logits are the identity, CE = log(1 + e^-1) for every row.
    e = torch.eye(2, dtype=torch.float64)
    out = ClipLoss()(e, e, torch.tensor(1.0, dtype=torch.float64))
    expected = math.log(1 + math.exp(-1))
    assert out["loss"].item() == pytest.approx(expected, abs=1e-12)
    mvs = MultiViewClipLoss()(e, e, e, e, torch.tensor(1.0, dtype=torch.float64))
    assert mvs["loss"].item() == pytest.approx(expected * (1 + 1.0 + 0.5), abs=1e-12)


def test_clip_loss_matches_direct_and_is_symmetric_mean() -> None:
    img, txt = _emb(10), _emb(11)
    s = 3.0
    out = ClipLoss()(img, txt, torch.tensor(s, dtype=torch.float64))
    i2t, t2i = _ce_direct(img.numpy(), txt.numpy(), s), _ce_direct(txt.numpy(), img.numpy(), s)
    assert out["i2t"].item() == pytest.approx(i2t, rel=1e-9)
    assert out["t2i"].item() == pytest.approx(t2i, rel=1e-9)
    assert out["loss"].item() == pytest.approx((i2t + t2i) / 2, rel=1e-9)


def test_mvs_weights_and_factory() -> None:
    i1, i2, t1, t2 = (_emb(k + 20) for k in range(4))
    s = torch.tensor(5.0, dtype=torch.float64)
    base = MultiViewClipLoss()(i1, i2, t1, t2, s)
    heavy = create_loss(LossConfig(name="mvs", i2i_weight=2.0, t2t_weight=0.0))(i1, i2, t1, t2, s)
    assert heavy["loss"].item() == pytest.approx(((base["i2t"] + base["t2i"]) / 2 + 2 * base["i2i"]).item())
    assert isinstance(create_loss({"name": "clip"}), ClipLoss)
    with pytest.raises(ValueError, match="unknown loss name 'siglip'"):
        create_loss({"name": "siglip"})


def test_gather_is_identity_without_process_group() -> None:
    x = torch.randn(3, 4, requires_grad=True)
    assert gather_with_grad(x) is x


def test_loss_decreases_when_pairs_align() -> None:
    t = _emb(30)
    noisy = F.normalize(t + 0.5 * _emb(31), dim=1)
    s = torch.tensor(10.0, dtype=torch.float64)
    assert ClipLoss()(t, t, s)["loss"] < ClipLoss()(noisy, t, s)["loss"]
