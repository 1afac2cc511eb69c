"""Zero-shot probabilities for a few images from the command line.

    python -m mammoclip_kit.predict --checkpoint CKPT --image a.dcm b.png [--prompts prompts.json]
                                    [--text-encoder DIR] [--scoring ensemble|reference] [--json]

``CKPT`` is a kit checkpoint folder (``config.json`` + ``model.safetensors``) or a released ``.tar`` file, loaded with
the kit's one loader :func:`mammoclip_kit.models.loader.load_model` (a released file needs ``--text-encoder``: a local
folder or hub id of the text encoder). ``prompts.json`` maps each task to one entry per class, each a prompt or a list
of prompts::

    {"mass": [["no mass", "no mass is seen"], ["mass", "a mass is seen"]],
     "density": {"A": ["fatty breasts"], "B": ["scattered fibroglandular tissue"], "C": ["..."], "D": ["..."]}}

Without ``--prompts`` the kit's prompt sets (:data:`mammoclip_kit.data.text.PROMPTS`) are used. The output is a table with
one row per image (binary tasks: the probability of the positive class; multi-class tasks: one column per class and
the predicted class), or JSON records with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mammoclip_kit.errors import cli_errors
from mammoclip_kit.models.loader import load_model


def load_prompts(path: str | Path | None) -> dict[str, Any]:
    """Prompts from a JSON file, or the kit's default prompt sets when ``path`` is None."""
    if path is None:
        from mammoclip_kit.data.text import PROMPTS

        return dict(PROMPTS)
    path = Path(path)
    try:
        prompts = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{path}: no such prompts file") from error
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    from mammoclip_kit.inference import normalize_prompts

    try:
        normalize_prompts(prompts)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error
    return prompts


def predict(images: Sequence[str | Path], model: Any, prompts: dict[str, Any], scoring: str = "ensemble",
            batch_size: int = 4, dicom_mode: str = "voi", progress: bool = False) -> pd.DataFrame:
    """Per-image probabilities (rows: images as given, columns: see :func:`mammoclip_kit.inference.zero_shot`)."""
    from mammoclip_kit.inference import zero_shot

    return zero_shot([str(i) for i in images], model, prompts, scoring=scoring, batch_size=batch_size,
                     progress=progress, dicom_mode=dicom_mode, index=[str(i) for i in images])


#: Smallest image side (pixels) accepted as a mammogram by :func:`inspect_image`.
MIN_IMAGE_SIDE = 32
#: PIL modes that are not grayscale: such files are converted to grey (and the user is told).
_COLOUR_MODES = ("RGB", "RGBA", "P", "PA", "LA", "CMYK", "YCbCr", "LAB", "HSV")


def inspect_image(path: str | Path) -> str | None:
    """Check that ``path`` can be a mammogram before it is embedded; returns a note for the user or None.

    Refuses (``ValueError`` naming the file) a missing or undecodable file, an image smaller than
    :data:`MIN_IMAGE_SIDE` on a side and a blank (constant) image; a colour or palette PNG/JPEG is accepted with a note
    saying it was converted to grey.
    """
    from mammoclip_kit.inference import is_dicom

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    note = None
    if is_dicom(path):
        from mammoclip_kit.data.dicom import read_dicom

        array = read_dicom(path).pixels
    else:
        from PIL import Image, UnidentifiedImageError

        from mammoclip_kit.data.transforms import load_image

        try:
            with Image.open(path) as handle:
                mode = handle.mode
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f"{path}: not a readable image ({' '.join(str(error).split())})") from None
        if mode in _COLOUR_MODES:
            note = f"{path}: {mode} image (not grayscale) converted to grey"
        array = load_image(path)
    if array.ndim != 2 or min(array.shape) < MIN_IMAGE_SIDE:
        raise ValueError(f"{path}: image is {array.shape[-1]}×{array.shape[0]} px; too small to be a mammogram "
                         f"(each side must be ≥ {MIN_IMAGE_SIDE} px)")
    low, high = array.min(), array.max()
    if low == high:
        raise ValueError(f"{path}: blank image (every pixel is {low}); not a mammogram")
    return note


def predict_each(images: Sequence[str | Path], model: Any, prompts: dict[str, Any], scoring: str = "ensemble",
                 batch_size: int = 4, dicom_mode: str = "voi") -> tuple[pd.DataFrame, dict[str, str], list[str]]:
    """:func:`predict` that skips bad images instead of failing the batch.

    Returns the table of the images that worked, ``{image: reason}`` for the ones that did not (unreadable, blank,
    too small, non-finite output) and the notes of :func:`inspect_image` (e.g. colour converted to grey).
    """
    from mammoclip_kit.errors import one_line, user_error_types

    failures: dict[str, str] = {}
    notes: list[str] = []
    good: list[str] = []
    for image in (str(i) for i in images):
        try:
            note = inspect_image(image)
        except user_error_types() as error:
            failures[image] = one_line(error)
            continue
        if note:
            notes.append(note)
        good.append(image)
    tables = []
    if good:
        try:
            tables.append(predict(good, model, prompts, scoring=scoring, batch_size=batch_size, dicom_mode=dicom_mode))
        except user_error_types():
            for image in good:  # find the image that broke the batch; the others still get their row
                try:
                    tables.append(predict([image], model, prompts, scoring=scoring, batch_size=1,
                                          dicom_mode=dicom_mode))
                except user_error_types() as error:
                    failures[image] = one_line(error)
    table = pd.concat(tables) if tables else pd.DataFrame()
    if len(table):
        numeric = table.select_dtypes("number").to_numpy(dtype=float)
        finite = np.isfinite(numeric).all(axis=1)
        for image in table.index[~finite]:
            failures[str(image)] = (f"{image}: non-finite model output (NaN/inf); the checkpoint or the image is "
                                    "corrupted")
        table = table[finite]
    return table, failures, notes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mammoclip_kit.predict",
                                     description="Zero-shot probabilities of mammograms (PNG/JPEG/DICOM).")
    parser.add_argument("--checkpoint", required=True, help="kit checkpoint folder or released .tar file")
    parser.add_argument("--image", nargs="+", required=True, help="image files (PNG, JPEG or DICOM)")
    parser.add_argument("--prompts", default=None, help="JSON file {task: [class-0 prompts, class-1 prompts, ...]}")
    parser.add_argument("--text-encoder", default=None, help="local folder or hub id of the text encoder")
    parser.add_argument("--scoring", choices=["ensemble", "reference"], default="ensemble",
                        help="prompt ensemble with the model's logit scale, or the reference's single-prompt rule")
    parser.add_argument("--dicom-mode", choices=["paper", "voi"], default=None,
                        help="how DICOM files are converted (as the PNG converter's --mode); default: paper for a "
                             "released .tar, voi for a kit folder")
    parser.add_argument("--device", default=None, help="default: CUDA, then MPS, then CPU")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--json", action="store_true", help="print JSON records instead of a table")
    return parser


@cli_errors
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        model = load_model(args.checkpoint, text_encoder=args.text_encoder, device=args.device)
        prompts = load_prompts(args.prompts)
        from mammoclip_kit.models.clip import check_finite

        check_finite(model, args.checkpoint)
        dicom_mode = args.dicom_mode or ("voi" if Path(args.checkpoint).is_dir() else "paper")
        table, failures, notes = predict_each(args.image, model, prompts, scoring=args.scoring,
                                              batch_size=args.batch_size, dicom_mode=dicom_mode)
    except (FileNotFoundError, ValueError, KeyError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    for reason in failures.values():
        print(f"skipped: {reason}", file=sys.stderr)
    if args.json:
        records = [{"image": name, **{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}}
                   for name, row in table.iterrows()]
        records += [{"image": name, "error": reason} for name, reason in failures.items()]
        print(json.dumps(records, indent=2, allow_nan=False))
    elif len(table):
        with pd.option_context("display.max_columns", None, "display.width", 200, "display.float_format",
                               "{:.4f}".format):
            print(table.rename_axis("image").to_string())
    if failures:
        print(f"error: {len(failures)} of {len(args.image)} image(s) failed (listed above as 'skipped')",
              file=sys.stderr)
        return 2 if len(table) == 0 else 1  # 1: some images have results, 2: none
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
