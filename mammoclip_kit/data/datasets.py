"""Pretraining datasets: multi-view image–text pairs (docs/reference-notes.md §7.5), image-label rows turned
into text, and a collate.

Every sample is a patient × laterality ("a breast"). It yields two images — two distinct views in random order, or two
independent augmentations of one image when the breast has a single view — and two texts. All random choices of a
sample come from ``np.random.default_rng([seed, salt, epoch, index])``, so a run is reproducible with any number of
loader workers and an interrupted run resumes on exactly the same samples. Validation samples use no augmentation and a
generator that ignores the epoch, so the validation set is the same every epoch (the reference re-draws it).

Table rows follow ``docs/DESIGN.md`` (``reports_pretrain.csv`` and ``vindr_pretrain.csv`` read with
``records.read_table``): a ``views`` (or ``view``) list and one list of PNG paths per view (columns named by the view,
``CC`` / ``MLO``), paths relative to ``root`` (the profile's ``output_dir``).
"""

from __future__ import annotations

import ast
import json
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import ConcatDataset, Dataset

from mammoclip_kit.data.transforms import (
    PAPER_MEAN,
    PAPER_STD,
    ImageAugmentConfig,
    augment,
    load_image,
    resize_to,
    to_model_input,
)

__all__ = ["ImageTextDataset", "ImageLabelDataset", "MixedDataset", "PairCollate", "as_list", "sample_images",
           "sample_texts"]

#: A label → text function: (finding names of one view, laterality "L"/"R", rng or None for deterministic) → text.
LabelToText = Callable[[Sequence[str], str, "np.random.Generator | None"], str]


def as_list(value: Any, *, where: str = "") -> list:
    """A table cell holding a list (already decoded, or a JSON / Python-literal string) → list; NaN / "" → []."""
    if isinstance(value, (list, tuple)):
        return list(value)
    if value is None or (isinstance(value, float) and np.isnan(value)) or (isinstance(value, str) and not value.strip()):
        return []
    if isinstance(value, str):
        for parse in (json.loads, ast.literal_eval):
            try:
                parsed = parse(value)
            except (ValueError, SyntaxError):
                continue
            if isinstance(parsed, (list, tuple)):
                return list(parsed)
        raise ValueError(f"{where}: expected a list (JSON or Python literal), got {value!r}")
    raise ValueError(f"{where}: expected a list, got {type(value).__name__} {value!r}")


def _views_of(row: pd.Series, where: str) -> list[str]:
    key = "views" if "views" in row.index else "view" if "view" in row.index else None
    if key is None:
        raise ValueError(f"{where}: the table has no 'views' (or 'view') column")
    views = [str(v) for v in as_list(row[key], where=f"{where}, column {key!r}")]
    missing = [v for v in views if v not in row.index]
    if missing:
        raise ValueError(f"{where}: view(s) {missing} listed in {key!r} have no column of image paths")
    return [v for v in views if as_list(row[v], where=f"{where}, column {v!r}")]


def sample_images(files_per_view: dict[str, list[str]], rng: np.random.Generator, train: bool) -> list[str]:
    """docs/reference-notes.md §7.5: two distinct views in random order, one random file each; a single view
    gives 1 or 2 files.

    With one view, training picks two distinct files when the view has more than one, else one (the caller then
    re-augments the same image); validation always picks one.
    """
    views = [v for v, files in files_per_view.items() if files]
    if not views:
        raise ValueError("no view has any image file")
    if len(views) >= 2:
        first, second = rng.choice(len(views), size=2, replace=False)
        return [str(rng.choice(files_per_view[views[i]])) for i in (first, second)]
    files = files_per_view[views[0]]
    if train and len(files) > 1:
        return [str(files[i]) for i in rng.choice(len(files), size=2, replace=False)]
    return [str(files[rng.integers(len(files))])]


def sample_texts(texts: list[str], augmented: list[str], rng: np.random.Generator) -> tuple[str, str]:
    """docs/reference-notes.md §7.5: two indexes with replacement, each text augmented with p = 0.5; one text
    → (orig, aug) in random order.

    An index without an augmented version (missing or empty) falls back to the original text.
    """
    if not texts:
        raise ValueError("no text to sample")

    def aug(i: int) -> str:
        return augmented[i] if i < len(augmented) and str(augmented[i]).strip() else texts[i]

    if len(texts) >= 2:
        picks = rng.integers(len(texts), size=2)
        return tuple(aug(int(i)) if rng.random() < 0.5 else texts[int(i)] for i in picks)  # type: ignore[return-value]
    pair = (texts[0], aug(0))
    return pair if rng.random() < 0.5 else (pair[1], pair[0])


class _BreastDataset(Dataset):
    """Shared image handling: path resolution, optional in-memory cache, resize, augmentation, normalisation."""

    def __init__(self, rows: pd.DataFrame, root: str | Path, image_size: tuple[int, int], train: bool, seed: int = 0,
                 augment_config: ImageAugmentConfig | None = None, cache_images: bool = False, name: str = "data",
                 table: str | None = None, mean: float = PAPER_MEAN, std: float = PAPER_STD) -> None:
        if len(rows) == 0:
            raise ValueError(f"{table or name}: the table has no rows for this split")
        self.rows = rows.reset_index(drop=True)
        self.root = Path(root)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.train = train
        self.seed = int(seed)
        self.augment_config = augment_config or ImageAugmentConfig()
        self.cache_images = cache_images
        self.name = name
        self.table = table or name
        self.mean, self.std = mean, std
        self.epoch = 0
        self._salt = zlib.crc32(name.encode())
        self._cache: dict[str, np.ndarray] = {}
        self._files = [self._row_files(i) for i in range(len(self.rows))]
        #: relative path -> cached model input (e.g. a frozen trunk's feature map); replaces image, augmentation and
        #: normalisation when set (mammoclip_kit.train.trunk_cache)
        self.feature_cache: Mapping[str, torch.Tensor] | None = None

    def _where(self, index: int) -> str:
        return f"{self.table} row {index}"

    def _row_files(self, index: int) -> dict[str, list[str]]:
        row = self.rows.iloc[index]
        where = self._where(index)
        views = _views_of(row, where)
        if not views:
            raise ValueError(f"{where}: no image file in any view")
        return {v: [str(p) for p in as_list(row[v], where=f"{where}, column {v!r}")] for v in views}

    def set_epoch(self, epoch: int) -> None:
        """Draw this epoch's views, texts and augmentations (call before each epoch, as with DistributedSampler)."""
        self.epoch = int(epoch)

    def rng(self, index: int) -> np.random.Generator:
        """The generator of one sample: depends on (seed, dataset name, epoch if training, index)."""
        epoch = self.epoch if self.train else -1
        return np.random.default_rng([self.seed, self._salt, epoch + 1, index])

    def __len__(self) -> int:
        return len(self.rows)

    def load(self, relative: str) -> np.ndarray:
        """Read one PNG (relative to ``root``), resized to ``image_size`` if it differs."""
        if relative in self._cache:
            return self._cache[relative]
        path = Path(relative)
        path = path if path.is_absolute() else self.root / path
        image = resize_to(load_image(path), *self.image_size)
        if self.cache_images:
            self._cache[relative] = image
        return image

    def files(self) -> list[str]:
        """Every image file (relative path) the dataset can return, once each."""
        return list(dict.fromkeys(f for per_view in self._files for files in per_view.values() for f in files))

    def model_input(self, relative: str, rng: np.random.Generator | None = None) -> torch.Tensor:
        """One file as model input: the cached features when :attr:`feature_cache` is set, else the resized image,
        augmented with ``rng`` when training, through ``to_model_input``."""
        if self.feature_cache is not None:
            if relative not in self.feature_cache:
                raise KeyError(f"{self.table}: {relative} is missing from the feature cache")
            return self.feature_cache[relative].float()
        array = self.load(relative)
        if self.train and rng is not None:
            array = augment(array, rng, self.augment_config)
        return to_model_input(array, self.mean, self.std)

    def _pair(self, index: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        files = sample_images(self._files[index], rng, self.train)
        if len(files) == 1:
            files = [files[0], files[0]]
        return self.model_input(files[0], rng), self.model_input(files[1], rng), files


class ImageTextDataset(_BreastDataset):
    """Image–report pairs (``reports_pretrain.csv``): two images and two texts per breast
    (docs/reference-notes.md §7.5).

    ``rows`` need ``views`` / per-view path lists, ``text`` (list of cleaned sections) and optionally
    ``text_augment`` (augmented versions, same order).
    """

    def __init__(self, rows: pd.DataFrame, root: str | Path, image_size: tuple[int, int], train: bool,
                 seed: int = 0, name: str = "reports", **kwargs: Any) -> None:
        super().__init__(rows, root, image_size, train, seed=seed, name=name, **kwargs)
        if "text" not in self.rows.columns:
            raise ValueError(f"{self.table}: missing column 'text'")
        self._texts = []
        for i in range(len(self.rows)):
            texts = [str(t) for t in as_list(self.rows.at[i, "text"], where=f"{self._where(i)}, column 'text'")]
            texts = [t for t in texts if t.strip()]
            if not texts:
                raise ValueError(f"{self._where(i)}, column 'text': no non-empty text")
            aug = (as_list(self.rows.at[i, "text_augment"], where=f"{self._where(i)}, column 'text_augment'")
                   if "text_augment" in self.rows.columns else [])
            self._texts.append((texts, [str(a) for a in aug]))

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = self.rng(index)
        image, image2, files = self._pair(index, rng)
        texts, augmented = self._texts[index]
        text, text2 = sample_texts(texts, augmented, rng)
        return {"image": image, "image2": image2, "text": text, "text2": text2, "files": files, "source": self.name}


class ImageLabelDataset(_BreastDataset):
    """Image-label rows (``vindr_pretrain.csv``) turned into report-like text per view
    (docs/reference-notes.md §7.5, VinDr rows).

    The two images are two views in random order; ``text`` describes the findings of the first image's view and
    ``text2`` those of the second (``<VIEW>_findings`` columns, flat lists of finding names) through ``label_to_text``,
    random in training and deterministic in validation.
    """

    def __init__(self, rows: pd.DataFrame, root: str | Path, image_size: tuple[int, int], train: bool,
                 label_to_text: LabelToText | None = None, seed: int = 0, name: str = "vindr", **kwargs: Any) -> None:
        super().__init__(rows, root, image_size, train, seed=seed, name=name, **kwargs)
        self.label_to_text = label_to_text or default_label_to_text()
        self._findings = []
        for i in range(len(self.rows)):
            row = self.rows.iloc[i]
            per_view = {}
            for view in self._files[i]:
                column = next((c for c in (f"{view}_findings", f"{view.lower()}_findings", f"{view}_FINDING")
                               if c in row.index), None)
                if column is None:
                    raise ValueError(f"{self._where(i)}: no findings column for view {view!r} (expected {view}_findings)")
                per_view[view] = [str(f) for f in as_list(row[column], where=f"{self._where(i)}, column {column!r}")]
            lat = str(row.get("laterality", ""))
            if lat not in {"L", "R"}:
                raise ValueError(f"{self._where(i)}, column 'laterality': expected 'L' or 'R', got {lat!r}")
            self._findings.append((per_view, lat))

    def findings(self, index: int) -> tuple[dict[str, list[str]], str]:
        """The finding names per view of row ``index`` and its laterality (what ``label_to_text`` describes)."""
        return self._findings[index]

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = self.rng(index)
        files_per_view = self._files[index]
        per_view, laterality = self._findings[index]
        views = [v for v, f in files_per_view.items() if f]
        if len(views) >= 2:
            first, second = (views[i] for i in rng.choice(len(views), size=2, replace=False))
        else:
            first = second = views[0]
        files = [str(rng.choice(files_per_view[first])), str(rng.choice(files_per_view[second]))]
        images = [self.model_input(f, rng) for f in files]
        text_rng = rng if self.train else None
        texts = [self.label_to_text(per_view[v], laterality, text_rng) for v in (first, second)]
        return {"image": images[0],
                "image2": images[1],
                "text": texts[0], "text2": texts[1], "files": files, "source": self.name}


def default_label_to_text() -> LabelToText:
    """The kit's label → text templates (``mammoclip_kit.data.text``), adapted to ``(findings, laterality, rng)``."""
    from mammoclip_kit.data import text as text_module

    for name in ("labels_to_text", "label_to_text", "report_from_labels", "generate_report_from_labels"):
        fn = getattr(text_module, name, None)
        if fn is not None:
            return _adapt_label_to_text(fn)
    raise ImportError("mammoclip_kit.data.text has no label → text function (labels_to_text)")


def _adapt_label_to_text(fn: Callable[..., str]) -> LabelToText:
    import inspect

    params = inspect.signature(fn).parameters

    def call(findings: Sequence[str], laterality: str, rng: np.random.Generator | None) -> str:
        kwargs: dict[str, Any] = {}
        if "deterministic" in params:
            kwargs["deterministic"] = rng is None
        if "rng" in params:
            kwargs["rng"] = rng
        return fn(list(findings), laterality, **kwargs)

    return call


class MixedDataset(ConcatDataset):
    """Concatenation of image-text and image-label datasets that forwards :meth:`set_epoch` to each part."""

    def set_epoch(self, epoch: int) -> None:
        for dataset in self.datasets:
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)


class PairCollate:
    """Stack the two image batches and tokenise both text lists (``tokenize(list[str]) -> dict of tensors``)."""

    def __init__(self, tokenize: Callable[[list[str]], dict[str, torch.Tensor]] | None = None) -> None:
        self.tokenize = tokenize

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        batch: dict[str, Any] = {
            "image": torch.stack([s["image"] for s in samples]),
            "image2": torch.stack([s["image2"] for s in samples]),
            "text": [s["text"] for s in samples],
            "text2": [s["text2"] for s in samples],
            "files": [s["files"] for s in samples],
            "source": [s["source"] for s in samples],
        }
        if self.tokenize is not None:
            batch["tokens"] = dict(self.tokenize(batch["text"]))
            batch["tokens2"] = dict(self.tokenize(batch["text2"]))
        return batch
