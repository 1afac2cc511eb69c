"""Image in, embeddings and probabilities out: the kit's inference API.

* :func:`embed_images` turns PNG/JPEG paths, DICOM paths or 2-D arrays into L2-normalised image embeddings. Every image
  goes through the one inference transform (:func:`mammoclip_kit.data.transforms.to_model_input`: per-image min–max, the
  paper's mean/std, 3 channels), after an area resize to the model's input size when it differs. DICOM files are first
  turned into the same 2-D array the PNG converter would write (:mod:`mammoclip_kit.data.preprocess`).
* :func:`embed_texts` tokenises with the model's tokenizer and returns L2-normalised text embeddings.
* :func:`zero_shot` scores images against prompt sets. ``scoring="ensemble"`` (default) averages the normalised
  embeddings of all prompts of a class, re-normalises and applies the model's logit scale before the softmax (CLIP /
  open_clip practice). ``scoring="reference"`` is the released evaluation's exact rule: one prompt per class (the first
  one), softmax over the raw cosine similarities, no logit scale.
* :func:`image_features` is the one batched image → features loop of the kit (embeddings here, frozen probe features
  in :mod:`mammoclip_kit.eval.features`): images read one batch at a time, the model in eval mode
  (:func:`eval_mode`) under ``torch.inference_mode``.
* :func:`resolve_image_size` is the one image-size rule: every consumer feeds a model at the model's own input size
  (:func:`model_image_size`, like timm's ``resolve_data_config``); the PNG size is only what preprocessing wrote, and a
  deliberately different size is an explicit setting that is printed when used.
* ``python -m mammoclip_kit.bench embed ...`` (:func:`benchmark`) measures image-embedding throughput.

Example::

    from mammoclip_kit import from_pretrained, zero_shot
    model = from_pretrained("runs/classroom/checkpoints/mammoclip")
    probs = zero_shot(["a.png", "b.dcm"], model, prompts={"mass": (["no mass"], ["mass"])})
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from mammoclip_kit.data.transforms import load_image, resize_to, to_model_input

__all__ = [
    "DICOM_SUFFIXES",
    "PromptSet",
    "benchmark",
    "class_embeddings",
    "embed_images",
    "embed_texts",
    "eval_mode",
    "image_batches",
    "image_features",
    "load_model_input",
    "model_device",
    "model_image_size",
    "normalize_prompts",
    "resolve_image_size",
    "zero_shot",
    "zero_shot_probabilities",
]

#: File suffixes read as DICOM (any other file is also tried as DICOM when it carries the ``DICM`` magic).
DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
#: One task's prompts: one entry per class (index = class id), each a prompt or a list of prompts.
PromptSet = Sequence[str | Sequence[str]]

ImageLike = str | os.PathLike | np.ndarray | torch.Tensor


# ----------------------------------------------------------------------------------------------------------------------
# Model plumbing
# ----------------------------------------------------------------------------------------------------------------------


def model_image_size(model: Any) -> tuple[int, int] | None:
    """The model's input ``(height, width)``, or None when the model states none.

    Read from ``model.config.image_size`` (a :class:`~mammoclip_kit.models.clip.MammoClip`; an int means a square), else
    from ``model.image_size`` (an image tower taken out of its model by
    :func:`mammoclip_kit.models.loader.image_tower`, which records the size it was trained at).
    """
    config = getattr(model, "config", None)
    size = getattr(config, "image_size", None) if config is not None else None
    if size is None and isinstance(config, Mapping):
        size = config.get("image_size")
    if size is None:
        size = getattr(model, "image_size", None)
    if size is None:
        return None
    if isinstance(size, int):
        return (size, size)
    height, width = (int(v) for v in size)
    return height, width


def resolve_image_size(model: Any, image_size: Sequence[int] | None = None, *,
                       where: str = "images") -> tuple[int, int] | None:
    """The input size to feed ``model``: its own (:func:`model_image_size`) unless ``image_size`` is set explicitly.

    The kit's one image-size rule: a model sees images at the size it was trained at. An explicit ``image_size`` that
    differs from the model's is honoured and printed (``where`` names the consumer), so a deliberate change is never
    silent. None when neither is known (the images keep the size they have on disk).
    """
    own = model_image_size(model)
    if image_size is None:
        return own
    explicit = (int(image_size[0]), int(image_size[1]))
    if explicit != own:
        stated = f"{own[0]}×{own[1]}" if own else "none stated"
        print(f"{where}: image_size {explicit[0]}×{explicit[1]} set explicitly (the model's input size: {stated})")
    return explicit


def model_device(model: Any) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def _resolve_device(model: Any, device: Any) -> torch.device:
    """``device`` if given (the model is moved there), else the model's own device."""
    if device is None:
        return model_device(model)
    device = torch.device(device)
    if model_device(model) != device:
        model.to(device)
    return device


@contextlib.contextmanager
def eval_mode(model: Any) -> Iterator[Any]:
    """Context manager: ``model`` in eval mode inside, its previous train/eval state restored afterwards.

    Batch-norm statistics and dropout behave as at inference, and a model that was training goes on training after the
    block (even when the block raises).
    """
    was_training = bool(getattr(model, "training", False))
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _tokenize(model: Any, texts: list[str]) -> Any:
    """Tokenise with the model's own rule (``model.tokenize``) or its Hugging Face tokenizer (``model.tokenizer``)."""
    if hasattr(model, "tokenize"):
        return model.tokenize(texts)
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise AttributeError(f"{type(model).__name__} has neither tokenize() nor a tokenizer: cannot embed texts")
    config = getattr(model, "config", None)
    max_length = int(getattr(config, "max_length", None) or getattr(config, "context_length", None) or 256)
    return tokenizer(texts, padding="longest", truncation=True, max_length=max_length, return_tensors="pt")


def _to_device(tokens: Any, device: torch.device) -> Any:
    if isinstance(tokens, torch.Tensor):
        return tokens.to(device)
    if isinstance(tokens, Mapping):
        return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in tokens.items()}
    if hasattr(tokens, "to"):
        return tokens.to(device)
    return tokens


def _logit_scale(model: Any) -> float:
    """``exp(model.logit_scale)`` (the parameter is stored in log space, initialised to ln(1/0.07))."""
    scale = getattr(model, "logit_scale", None)
    if scale is None:
        raise AttributeError(f"{type(model).__name__} has no logit_scale; pass logit_scale= or scoring='reference'")
    return float(torch.as_tensor(scale).detach().float().exp().cpu())


# ----------------------------------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------------------------------


def is_dicom(path: Path) -> bool:
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _read_dicom_as_png_array(path: Path, size: tuple[int, int] | None, mode: str) -> np.ndarray:
    """The 2-D array the kit's PNG converter would write for ``path`` (``mode`` = ``"paper"`` or ``"voi"``).

    Uses :func:`mammoclip_kit.data.preprocess.process_image` at the model's input size (the paper's 1520×912 when the
    model states none), so a DICOM and the PNG converted from it give the same embedding.
    """
    from mammoclip_kit.data.dicom import read_dicom
    from mammoclip_kit.data.preprocess import PreprocessConfig, process_image

    height, width = size if size is not None else (1520, 912)
    return process_image(read_dicom(path), PreprocessConfig(mode=mode, height=height, width=width)).image


def load_model_input(image: ImageLike, size: tuple[int, int] | None = None, dicom_mode: str = "voi",
                     transform: Callable[[np.ndarray], np.ndarray] | None = None) -> torch.Tensor:
    """One image → the model's input tensor ``3×H×W`` (float32, normalised as the paper: per-image min–max, mean/std).

    ``image`` is a PNG/JPEG path (8- or 16-bit), a DICOM path (converted with ``dicom_mode`` like the PNG converter) or a
    2-D array / tensor of gray values. When ``size`` (height, width) is given and differs, the image is area-resized;
    then the optional ``transform`` (a 2-D array → 2-D array, e.g. a robustness shift) is applied, then
    :func:`~mammoclip_kit.data.transforms.to_model_input`.
    """
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such image file")
        array = _read_dicom_as_png_array(path, size, dicom_mode) if is_dicom(path) else load_image(path)
    elif isinstance(image, torch.Tensor):
        array = image.detach().cpu().numpy()
    elif isinstance(image, np.ndarray):
        array = image
    else:
        raise TypeError(f"expected an image path, a 2-D array or a tensor, got {type(image).__name__}")
    if array.ndim == 3 and array.shape[0] in (1, 3) and isinstance(image, torch.Tensor):
        array = array[0]  # a C×H×W gray tensor repeated over channels
    if array.ndim != 2:
        raise ValueError(f"{_describe(image)}: expected a 2-D grayscale image, got shape {tuple(array.shape)}")
    if not np.isfinite(array).all():
        raise ValueError(f"{_describe(image)}: image contains NaN or inf")
    if size is not None:
        array = resize_to(array, *size)
    if transform is not None:
        array = transform(array)
    return to_model_input(array)


def _describe(image: Any) -> str:
    if isinstance(image, (str, os.PathLike)):
        return str(image)
    return f"{type(image).__name__} image"


def _batches(items: Sequence[Any], batch_size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), batch_size):
        yield items[start:start + batch_size]


def _as_image_list(images: Any) -> list[Any]:
    if isinstance(images, (str, os.PathLike)):
        return [images]
    if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 2:
        return [images]
    if isinstance(images, pd.Series):
        return images.tolist()
    return list(images)


class _ModelInputs(torch.utils.data.Dataset):
    """Images (paths or arrays) → model inputs with :func:`load_model_input`; ``transform(image, key)`` per image."""

    def __init__(self, items: Sequence[ImageLike], size: tuple[int, int] | None, dicom_mode: str,
                 transform: Callable[[np.ndarray, str], np.ndarray] | None, keys: Sequence[str] | None) -> None:
        self.items, self.size, self.dicom_mode, self.transform = list(items), size, dicom_mode, transform
        self.keys = list(keys) if keys is not None else [str(i) for i in range(len(self.items))]
        if len(self.keys) != len(self.items):
            raise ValueError(f"image_batches: {len(self.keys)} keys for {len(self.items)} images")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> torch.Tensor:
        transform = None
        if self.transform is not None:
            key, shift = self.keys[index], self.transform

            def transform(array: np.ndarray) -> np.ndarray:
                return shift(array, key)
        return load_model_input(self.items[index], self.size, self.dicom_mode, transform)


def image_batches(images: Sequence[ImageLike], *, size: tuple[int, int] | None, batch_size: int = 16,
                  num_workers: int = 0, dicom_mode: str = "voi",
                  transform: Callable[[np.ndarray, str], np.ndarray] | None = None,
                  keys: Sequence[str] | None = None) -> torch.utils.data.DataLoader:
    """Batches ``(B, 3, H, W)`` of model inputs of ``images``, in order, read one batch at a time.

    Each image goes through :func:`load_model_input` at ``size`` (resize, then ``transform(image, key)`` with the
    image's entry of ``keys`` when given, then the inference transform). ``num_workers`` reads batches in worker
    processes.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    dataset = _ModelInputs(images, size, dicom_mode, transform, keys)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)


def image_features(model: torch.nn.Module, images: Sequence[ImageLike], *, size: tuple[int, int] | None,
                   forward: Callable[[torch.Tensor], torch.Tensor] | None = None, batch_size: int = 16,
                   device: Any = None, num_workers: int = 0, dicom_mode: str = "voi",
                   transform: Callable[[np.ndarray, str], np.ndarray] | None = None,
                   keys: Sequence[str] | None = None, channels_last: bool = True, amp: bool = False,
                   progress: bool = True, desc: str = "images") -> torch.Tensor:
    """The kit's one image → features loop: ``forward(batch)`` over :func:`image_batches`, concatenated on the CPU.

    ``model`` is put in eval mode for the loop (:func:`eval_mode`) and runs under ``torch.inference_mode``, so no
    parameter, batch-norm statistic or dropout mask changes; its previous mode is restored. ``forward`` defaults to
    ``model`` itself (e.g. ``model.encode_image`` for embeddings). ``device`` None uses the model's device.
    ``channels_last`` (default) feeds channels-last batches: the same maths, and the convolutions keep that layout
    (B2 at 1520 × 912 and 760 × 456 on a CPU: 1.2–1.3× faster than contiguous NCHW; docs/DESIGN.md); ``amp`` runs
    under float16 autocast on CUDA (ignored elsewhere). Returns float32 ``(N, ...)``.
    """
    from mammoclip_kit.env import progress_bar as tqdm

    device = torch.device(device) if device is not None else model_device(model)
    forward = forward if forward is not None else model
    loader = image_batches(images, size=size, batch_size=batch_size, num_workers=num_workers, dicom_mode=dicom_mode,
                           transform=transform, keys=keys)
    use_amp = amp and device.type == "cuda"
    out: list[torch.Tensor] = []
    with eval_mode(model), torch.inference_mode():
        for batch in tqdm(loader, desc=desc, disable=not progress or len(loader) < 2, leave=False, unit="batch"):
            batch = batch.to(device)
            if channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_amp):
                features = forward(batch)
            out.append(features.float().cpu())
    if not out:
        raise ValueError(f"{desc}: no images given")
    return torch.cat(out)


def embed_images(images: ImageLike | Sequence[ImageLike], model: Any, batch_size: int = 16, device: Any = None,
                 progress: bool = True, dicom_mode: str = "voi", channels_last: bool = True) -> torch.Tensor:
    """L2-normalised image embeddings ``(N, D)`` (float32, on the CPU) of paths or arrays, in input order.

    Images are fed at the model's input size (:func:`model_image_size`) through :func:`image_features`: read batch by
    batch (memory stays at one batch), the model in eval mode under ``torch.inference_mode`` and returned to its
    previous mode afterwards. ``device`` None uses the model's device (a given device moves the model there). DICOM
    files are converted with ``dicom_mode`` (``"voi"``, the kit converter's default, or ``"paper"``, the recipe that
    the released checkpoints were trained with).
    """
    items = _as_image_list(images)
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    if not items:
        raise ValueError("embed_images: no images given")
    device = _resolve_device(model, device)

    def encode(x: torch.Tensor) -> torch.Tensor:
        return F.normalize(model.encode_image(x).float(), dim=-1)

    return image_features(model, items, size=model_image_size(model), forward=encode, batch_size=batch_size,
                          device=device, dicom_mode=dicom_mode, channels_last=channels_last,
                          progress=progress and len(items) > batch_size, desc="embed images")


# ----------------------------------------------------------------------------------------------------------------------
# Texts
# ----------------------------------------------------------------------------------------------------------------------


def embed_texts(texts: str | Sequence[str], model: Any, batch_size: int = 64, device: Any = None,
                progress: bool = False) -> torch.Tensor:
    """L2-normalised text embeddings ``(N, D)`` (float32, on the CPU) of ``texts``, tokenised by the model's rule."""
    items = [texts] if isinstance(texts, str) else list(texts)
    for i, text in enumerate(items):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"embed_texts: text {i} is {text!r}; expected a non-empty string")
    device = _resolve_device(model, device)
    out: list[torch.Tensor] = []
    batches = list(_batches(items, batch_size))
    if progress and len(batches) > 1:
        from mammoclip_kit.env import progress_bar as tqdm

        batches = tqdm(batches, desc="embed texts", unit="batch")
    with eval_mode(model), torch.inference_mode():
        for batch in batches:
            tokens = _to_device(_tokenize(model, list(batch)), device)
            out.append(F.normalize(model.encode_text(tokens).float(), dim=-1).cpu())
    if not out:
        raise ValueError("embed_texts: no texts given")
    return torch.cat(out)


# ----------------------------------------------------------------------------------------------------------------------
# Zero-shot
# ----------------------------------------------------------------------------------------------------------------------


def normalize_prompts(prompts: Mapping[str, Any]) -> dict[str, list[list[str]]]:
    """Validate a prompt mapping → ``{task: [[class-0 prompts], [class-1 prompts], ...]}``.

    Accepted per task: a sequence with one entry per class, each a string or a list of strings (``("no mass", "mass")``
    or ``(["no mass", "normal"], ["mass", "a mass"])``), or a mapping class name → prompts (class ids follow its order,
    as :data:`mammoclip_kit.data.text.PROMPTS` gives density A–D). At least two classes; every prompt a non-empty
    string.
    """
    if not isinstance(prompts, Mapping) or not prompts:
        raise ValueError("prompts must be a non-empty mapping {task: (class-0 prompts, class-1 prompts, ...)}")
    out: dict[str, list[list[str]]] = {}
    for task, classes in prompts.items():
        if isinstance(classes, Mapping):
            classes = list(classes.values())
        if isinstance(classes, str) or not isinstance(classes, Sequence) or len(classes) < 2:
            raise ValueError(f"prompts[{task!r}]: expected one entry per class (at least 2), got {classes!r}")
        parsed = []
        for c, entry in enumerate(classes):
            texts = [entry] if isinstance(entry, str) else list(entry)
            if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
                raise ValueError(f"prompts[{task!r}][{c}]: expected a prompt or a non-empty list of prompts, "
                                 f"got {entry!r}")
            parsed.append(texts)
        out[str(task)] = parsed
    return out


def class_embeddings(prompt_embeddings: Sequence[torch.Tensor], scoring: str = "ensemble") -> torch.Tensor:
    """One unit vector per class from its prompts' embeddings (each ``(n_prompts, D)``) → ``(n_classes, D)``.

    ``"ensemble"``: mean of the L2-normalised prompt embeddings, re-normalised. ``"reference"``: the first prompt only.
    """
    if scoring not in ("ensemble", "reference"):
        raise ValueError(f"scoring must be 'ensemble' or 'reference', got {scoring!r}")
    rows = []
    for emb in prompt_embeddings:
        emb = F.normalize(torch.as_tensor(emb).float().reshape(-1, emb.shape[-1]), dim=-1)
        rows.append(emb[0] if scoring == "reference" else F.normalize(emb.mean(0), dim=-1))
    return torch.stack(rows)


def zero_shot_probabilities(image_embeddings: torch.Tensor, class_emb: torch.Tensor,
                            logit_scale: float | None = None) -> torch.Tensor:
    """Softmax over classes of ``scale × cos(image, class)`` → ``(N, n_classes)``; ``logit_scale`` None means 1.

    With ``logit_scale=None`` this is the reference's rule (softmax over raw cosine values).
    """
    images = F.normalize(torch.as_tensor(image_embeddings).float(), dim=-1)
    logits = images @ F.normalize(class_emb.float(), dim=-1).T
    if logit_scale is not None:
        logits = logits * float(logit_scale)
    return logits.softmax(dim=-1)


def zero_shot(images_or_embeddings: Any, model: Any, prompts: Mapping[str, Any] | None = None, scoring: str = "ensemble",
              batch_size: int = 16, device: Any = None, progress: bool = True, logit_scale: float | None = None,
              dicom_mode: str = "voi", index: Sequence[Any] | None = None) -> pd.DataFrame:
    """Per-image zero-shot probabilities for each task of ``prompts``.

    ``images_or_embeddings`` is a list of images (paths / arrays, embedded with :func:`embed_images`) or a 2-D
    ``torch.Tensor`` of image embeddings (reused, e.g. to compare prompt sets without re-embedding). ``prompts`` maps a
    task to one entry per class (see :func:`normalize_prompts`); class 0 is the negative class of a binary task. ``None``
    uses the kit's prompt sets (:data:`mammoclip_kit.data.text.PROMPTS`: mass, suspicious calcification, malignancy,
    density A–D).

    Returns one row per image: for a binary task a column ``task`` = P(class 1); for a task with K > 2 classes columns
    ``task_p0 … task_p{K-1}`` and ``task_pred`` (the arg-max class). The index is ``index``, else the image file
    names for paths, else 0…N−1. ``scoring`` is ``"ensemble"`` (prompt ensemble, scaled by ``logit_scale`` or the
    model's learned scale) or ``"reference"`` (first prompt per class, raw cosine, no scale, as the paper's evaluation code).
    """
    if prompts is None:
        from mammoclip_kit.data.text import PROMPTS

        prompts = PROMPTS
    parsed = normalize_prompts(prompts)
    if scoring not in ("ensemble", "reference"):
        raise ValueError(f"scoring must be 'ensemble' or 'reference', got {scoring!r}")
    if isinstance(images_or_embeddings, torch.Tensor) and images_or_embeddings.ndim == 2:
        image_emb = images_or_embeddings.detach().float().cpu()
        names = None
    else:
        items = _as_image_list(images_or_embeddings)
        image_emb = embed_images(items, model, batch_size=batch_size, device=device, progress=progress,
                                 dicom_mode=dicom_mode)
        names = [Path(i).name if isinstance(i, (str, os.PathLike)) else None for i in items]
        names = names if all(n is not None for n in names) and len(set(names)) == len(names) else None
    scale = None if scoring == "reference" else (logit_scale if logit_scale is not None else _logit_scale(model))
    flat = [text for classes in parsed.values() for texts in classes for text in texts]
    unique = list(dict.fromkeys(flat))
    text_emb = dict(zip(unique, embed_texts(unique, model, device=device), strict=True))
    columns: dict[str, np.ndarray] = {}
    for task, classes in parsed.items():
        cls = class_embeddings([torch.stack([text_emb[t] for t in texts]) for texts in classes], scoring)
        probs = zero_shot_probabilities(image_emb, cls, scale).numpy()
        if probs.shape[1] == 2:
            columns[task] = probs[:, 1]
        else:
            for c in range(probs.shape[1]):
                columns[f"{task}_p{c}"] = probs[:, c]
            columns[f"{task}_pred"] = probs.argmax(axis=1)
    if index is not None and len(index) != len(image_emb):
        raise ValueError(f"zero_shot: index has {len(index)} entries for {len(image_emb)} images")
    return pd.DataFrame(columns, index=index if index is not None else names)


# ----------------------------------------------------------------------------------------------------------------------
# Benchmark
# ----------------------------------------------------------------------------------------------------------------------


def _build_image_model(preset: str) -> Any:
    """The preset's model without a text tower: timing the image tower needs no text-encoder download."""
    from mammoclip_kit.models.loader import load_model

    return load_model(preset, image_only=True, device="cpu")


def benchmark(argv: Sequence[str] | None = None) -> dict[str, float]:
    """``python -m mammoclip_kit.bench embed``: image-embedding throughput (img/s) of a preset's image tower.

    Runs ``--warmup`` untimed and ``--steps`` timed batches of random input at ``--height × --width`` under
    ``torch.inference_mode`` (optionally channels_last and bf16 autocast) and prints img/s, s/batch and peak memory.
    """
    parser = argparse.ArgumentParser(prog="python -m mammoclip_kit.bench embed", description=benchmark.__doc__)
    parser.add_argument("--preset", default="paper-b2", help="model preset (paper-b2, paper-b5, classroom, smoke)")
    parser.add_argument("--height", type=int, default=None, help="input height (default: the preset's)")
    parser.add_argument("--width", type=int, default=None, help="input width (default: the preset's)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2, help="timed batches")
    parser.add_argument("--warmup", type=int, default=1, help="untimed batches first")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                        help="channels-last input batches (embed_images' default)")
    parser.add_argument("--model-channels-last", action="store_true",
                        help="also convert the model's weights to channels-last")
    parser.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none",
                        help="autocast dtype (bf16 works on CPU and CUDA, fp16 on CUDA)")
    parser.add_argument("--device", default=None, help="default: CUDA, then MPS, then CPU")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(list(argv) if argv is not None else None)

    from mammoclip_kit.env import pick_device, seed_everything

    if args.threads:
        torch.set_num_threads(args.threads)
    seed_everything(0)
    device = pick_device(args.device)
    model = _build_image_model(args.preset).to(device).eval()
    size = model_image_size(model) or (args.height, args.width)
    height, width = args.height or size[0], args.width or size[1]
    x = torch.randn(args.batch, 3, height, width, device=device)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    if args.model_channels_last:
        model = model.to(memory_format=torch.channels_last)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            model.encode_image(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    with torch.inference_mode():
        for _ in range(args.warmup):
            step()
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        elapsed = time.perf_counter() - start
    per_batch = elapsed / max(args.steps, 1)
    result = {"img_per_s": args.batch * args.steps / elapsed, "s_per_batch": per_batch,
              "peak_mem_gb": _peak_memory_gb(device)}
    print(f"embed {args.preset} {height}x{width} batch {args.batch} on {device} "
          f"(channels_last input={args.channels_last}, model={args.model_channels_last}, amp={args.amp}, "
          f"threads={torch.get_num_threads()})")
    print(f"  {result['img_per_s']:.3f} img/s, {per_batch:.3f} s/batch, peak memory {result['peak_mem_gb']:.2f} GB")
    return result


def _peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux
    except (ImportError, AttributeError):
        return float("nan")
