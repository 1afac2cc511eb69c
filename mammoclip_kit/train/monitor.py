"""Held-out metrics computed during pretraining: zero-shot AUC and image ↔ text retrieval recall@k.

Zero-shot follows docs/reference-notes.md §8.1 (softmax over cosine similarities to a negative and a positive
prompt class) with the kit's prompt ensembles (:data:`mammoclip_kit.data.text.PROMPTS`, ``"ensemble"``
scoring) and, for comparison, the paper's single prompts (``"reference"`` scoring). The AUC does not depend on
the logit scale: with two classes the positive probability is a monotone function of the cosine difference.
Retrieval follows docs/reference-notes.md §8.2: texts are de-duplicated, an image counts as retrieved at k
when its own text ranks within the top k; a text when any of its images does.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mammoclip_kit.data.transforms import load_image, resize_to, to_model_input
from mammoclip_kit.inference import eval_mode

__all__ = ["HeldOutMonitor", "binary_auc", "retrieval_recall", "encode_texts", "encode_images", "similarity_matrix"]


def binary_auc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """ROC AUC (ties count ½); NaN when only one class is present."""
    y = np.asarray(labels, dtype=int)
    s = np.asarray(scores, dtype=float)
    pos, neg = s[y == 1], s[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def retrieval_recall(image_emb: torch.Tensor, texts: Sequence[str], text_emb_by_text: dict[str, torch.Tensor],
                     ks: Sequence[int]) -> dict[str, float]:
    """Image→text and text→image recall@k over de-duplicated texts (docs/reference-notes.md §8.2); also the
    mean image→text rank."""
    unique = list(dict.fromkeys(texts))
    position = {t: i for i, t in enumerate(unique)}
    target = torch.tensor([position[t] for t in texts])
    text_emb = torch.stack([text_emb_by_text[t] for t in unique])
    sim = F.normalize(image_emb.float(), dim=-1) @ F.normalize(text_emb.float(), dim=-1).T   # (images, texts)
    own = sim[torch.arange(len(texts)), target]
    i2t_rank = (sim > own[:, None]).sum(dim=1) + 1                                           # 1 = best
    out: dict[str, float] = {"i2t_mean_rank": float(i2t_rank.float().mean())}
    t2i_best = torch.full((len(unique),), len(texts) + 1)
    for t in range(len(unique)):
        mine = target == t
        col = sim[:, t]
        ranks = torch.stack([(col > col[i]).sum() + 1 for i in torch.nonzero(mine).flatten()])
        t2i_best[t] = ranks.min()
    for k in ks:
        out[f"i2t_R@{k}"] = float((i2t_rank <= k).float().mean())
        out[f"t2i_R@{k}"] = float((t2i_best <= k).float().mean())
    out["n_images"], out["n_texts"] = len(texts), len(unique)
    return out


@torch.no_grad()
def encode_texts(model: Any, texts: Sequence[str], device: torch.device, batch_size: int = 64) -> torch.Tensor:
    """L2-normalised text embeddings with the model's tokenizer (eval mode is the caller's job)."""
    out = []
    for start in range(0, len(texts), batch_size):
        tokens = model.tokenize(list(texts[start:start + batch_size]))
        tokens = {k: v.to(device) for k, v in dict(tokens).items()}
        out.append(F.normalize(model.encode_text(tokens).float(), dim=-1).cpu())
    return torch.cat(out)


@torch.no_grad()
def encode_images(model: Any, arrays: Sequence[np.ndarray], device: torch.device, batch_size: int = 32,
                  channels_last: bool = False) -> torch.Tensor:
    """L2-normalised image embeddings of preprocessed grayscale arrays (normalised with :func:`to_model_input`)."""
    out = []
    for start in range(0, len(arrays), batch_size):
        x = torch.stack([to_model_input(a) for a in arrays[start:start + batch_size]]).to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out.append(F.normalize(model.encode_image(x).float(), dim=-1).cpu())
    return torch.cat(out)


class HeldOutMonitor:
    """Zero-shot AUC on labelled held-out images and retrieval on held-out image–text pairs.

    Args:
        image_size: (H, W) the model expects; images are read once, resized and kept as uint8 arrays.
        zs_images, zs_labels: held-out image paths and 0/1 labels of the zero-shot task.
        prompts: ``(negative prompts, positive prompts)`` for the kit's ensemble scoring.
        reference_prompts: the paper's single ``(negative, positive)`` prompt pair.
        retrieval_images, retrieval_texts: held-out pairs (one text per image).
    """

    def __init__(self, image_size: Sequence[int], zs_images: Sequence[str | Path] = (), zs_labels: Sequence[int] = (),
                 prompts: tuple[Sequence[str], Sequence[str]] | None = None,
                 reference_prompts: tuple[str, str] | None = None, retrieval_images: Sequence[str | Path] = (),
                 retrieval_texts: Sequence[str] = (), ks: Sequence[int] = (1, 5, 10), task: str = "mass") -> None:
        if len(zs_images) != len(zs_labels):
            raise ValueError(f"zero-shot images ({len(zs_images)}) and labels ({len(zs_labels)}) differ in length")
        if len(retrieval_images) != len(retrieval_texts):
            raise ValueError(f"retrieval images ({len(retrieval_images)}) and texts ({len(retrieval_texts)}) differ")
        h, w = int(image_size[0]), int(image_size[1])
        self.task = task
        self.zs_arrays = [resize_to(load_image(p), h, w) for p in zs_images]
        self.zs_labels = np.asarray(zs_labels, dtype=int)
        self.prompts = prompts
        self.reference_prompts = reference_prompts
        self.ret_arrays = [resize_to(load_image(p), h, w) for p in retrieval_images]
        self.ret_texts = list(retrieval_texts)
        self.ks = list(ks)

    @torch.no_grad()
    def __call__(self, model: Any, device: torch.device, channels_last: bool = False) -> dict[str, float]:
        with eval_mode(model):
            out: dict[str, float] = {}
            if self.zs_arrays and self.prompts is not None:
                img = encode_images(model, self.zs_arrays, device, channels_last=channels_last)
                neg, pos = (encode_texts(model, list(p), device) for p in self.prompts)
                cls = F.normalize(torch.stack([F.normalize(neg.mean(0), dim=-1), F.normalize(pos.mean(0), dim=-1)]),
                                  dim=-1)
                p1 = (img @ cls.T).softmax(dim=-1)[:, 1].numpy()
                out[f"zs_{self.task}_auc"] = binary_auc(self.zs_labels, p1)
                if self.reference_prompts is not None:
                    ref = encode_texts(model, list(self.reference_prompts), device)
                    p1 = (img @ ref.T).softmax(dim=-1)[:, 1].numpy()
                    out[f"zs_{self.task}_auc_paper_prompts"] = binary_auc(self.zs_labels, p1)
                out["zs_n_images"], out["zs_n_positive"] = len(self.zs_labels), int(self.zs_labels.sum())
            if self.ret_arrays:
                img = encode_images(model, self.ret_arrays, device, channels_last=channels_last)
                unique = list(dict.fromkeys(self.ret_texts))
                emb = dict(zip(unique, encode_texts(model, unique, device), strict=True))
                out.update({f"retrieval_{k}": v for k, v in retrieval_recall(img, self.ret_texts, emb,
                                                                              self.ks).items()})
            return out


@torch.no_grad()
def similarity_matrix(model: Any, images: Sequence[str | Path], texts: Sequence[str], device: torch.device,
                      image_size: Sequence[int] | None = None) -> np.ndarray:
    """Cosine similarity of each image (rows) with each text (columns), model in eval mode for the call."""
    size = tuple(image_size or model.config.image_size)
    arrays = [resize_to(load_image(p), int(size[0]), int(size[1])) for p in images]
    with eval_mode(model):
        img = encode_images(model, arrays, device)
        txt = encode_texts(model, list(texts), device)
    return (img @ txt.T).numpy()
