"""Zero-shot probabilities for a few images from the command line.

    python -m mammoclip_kit.predict --checkpoint CKPT --image a.dcm b.png [--prompts prompts.json]
                                    [--text-encoder DIR] [--scoring ensemble|reference] [--json]

``CKPT`` is a kit checkpoint folder (``config.json`` + ``model.safetensors``) or a released ``.tar`` file, loaded with
the kit's one loader :func:`mammoclip_kit.models.loader.load_model` (a released file needs ``--text-encoder``: a local
folder or hub id of the text encoder; the file holds the text tower's weights but not its tokenizer). The checkpoint,
the text encoder and every image path are checked before any model is loaded. ``prompts.json`` maps each task to one
entry per class, each a prompt or a list of prompts::

    {"mass": [["no mass", "no mass is seen"], ["mass", "a mass is seen"]],
     "density": {"A": ["fatty breasts"], "B": ["scattered fibroglandular tissue"], "C": ["..."], "D": ["..."]}}

Without ``--prompts`` the kit's prompt sets (:data:`mammoclip_kit.data.text.PROMPTS`) are used. The output is a table with
one row per image — a binary task: the probability of the positive class; a task with more classes: the predicted
class (its name, e.g. density ``C``) and one probability per class named by the class (``density_A`` …
``density_D``) — or JSON records with ``--json``. Both say which checkpoint (with a short SHA-256), prompts, scoring
rule and DICOM mode were used: header lines above the table, fields of every JSON record.

DICOM files are converted like the PNG converter does (:mod:`mammoclip_kit.data.preprocess`), in one mode chosen by one
rule that does not depend on how the checkpoint is stored: ``--dicom-mode`` if given, else the mode the checkpoint
records (``preprocessing.json`` of a kit folder), else ``paper`` — the preprocessing of the paper and of its released
checkpoints. A released ``.tar`` and its converted folder therefore give the same probabilities.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mammoclip_kit.artifacts import RELEASED_SUFFIXES, checkpoint_identity, describe_checkpoint
from mammoclip_kit.errors import cli_errors
from mammoclip_kit.models.loader import load_model

#: The DICOM mode when neither ``--dicom-mode`` nor the checkpoint says otherwise: the paper's preprocessing.
DEFAULT_DICOM_MODE = "paper"
SCORING_RULES = {
    "ensemble": "prompt ensemble: mean of each class's prompt embeddings, softmax of the model's logit scale × cosine",
    "reference": "the paper's rule: first prompt of each class, softmax of the raw cosine",
}


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
            batch_size: int = 4, dicom_mode: str = DEFAULT_DICOM_MODE, progress: bool = False) -> pd.DataFrame:
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


def inspect_images(images: Sequence[str | Path]) -> tuple[list[str], dict[str, str], list[str]]:
    """:func:`inspect_image` over ``images``: (usable images, ``{image: reason}`` of the others, notes)."""
    from mammoclip_kit.errors import one_line, user_error_types

    good: list[str] = []
    failures: dict[str, str] = {}
    notes: list[str] = []
    for image in (str(i) for i in images):
        try:
            note = inspect_image(image)
        except user_error_types() as error:
            failures[image] = one_line(error)
            continue
        if note:
            notes.append(note)
        good.append(image)
    return good, failures, notes


def predict_each(images: Sequence[str | Path], model: Any, prompts: dict[str, Any], scoring: str = "ensemble",
                 batch_size: int = 4, dicom_mode: str = DEFAULT_DICOM_MODE, inspect: bool = True,
                 ) -> tuple[pd.DataFrame, dict[str, str], list[str]]:
    """:func:`predict` that skips bad images instead of failing the batch.

    Returns the table of the images that worked, ``{image: reason}`` for the ones that did not (unreadable, blank,
    too small, non-finite output) and the notes of :func:`inspect_image` (e.g. colour converted to grey).
    ``inspect=False`` skips :func:`inspect_images` (the caller already ran it, before loading the model).
    """
    from mammoclip_kit.errors import one_line, user_error_types

    if inspect:
        good, failures, notes = inspect_images(images)
    else:
        good, failures, notes = [str(i) for i in images], {}, []
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


def resolve_dicom_mode(checkpoint: str | Path, given: str | None = None) -> tuple[str, str]:
    """(mode, why) of the one DICOM-mode rule: ``given`` (``--dicom-mode``), else the mode the checkpoint records
    (:func:`mammoclip_kit.data.preprocess.read_preprocessing_record`), else :data:`DEFAULT_DICOM_MODE`."""
    from mammoclip_kit.data.preprocess import PREPROCESSING_RECORD, read_preprocessing_record

    if given:
        return given, "--dicom-mode"
    recorded = read_preprocessing_record(checkpoint) if Path(checkpoint).expanduser().is_dir() else None
    if recorded is not None:
        return str(recorded["mode"]), f"recorded by the checkpoint ({PREPROCESSING_RECORD})"
    return DEFAULT_DICOM_MODE, "default: the paper's preprocessing; the checkpoint records none"


def check_inputs(checkpoint: str, text_encoder: str | None, images: Sequence[str]) -> list[str]:
    """Refuse, before any model is loaded, a checkpoint, text encoder or image path that cannot work.

    Raises ``FileNotFoundError`` / ``ValueError`` with one line saying what to pass instead: a missing checkpoint, a
    folder that is not a kit checkpoint, a released file without ``text_encoder``, a text-encoder folder without
    ``config.json``, image paths that do not exist (all of them named). Returns notes for the user (an ignored
    ``--text-encoder``).
    """
    notes: list[str] = []
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(f"{path}: not a kit checkpoint folder (no config.json); pass a kit folder or a released "
                             f".tar, or convert a release with python -m mammoclip_kit.convert")
        if text_encoder is not None:
            notes.append(f"--text-encoder {text_encoder} is ignored: the kit folder {path} carries its own text tower")
    elif path.is_file():
        if path.suffix.lower() not in RELEASED_SUFFIXES:
            raise ValueError(f"{path}: expected a kit checkpoint folder or a released checkpoint file "
                             f"({', '.join(RELEASED_SUFFIXES)})")
        if text_encoder is None:
            raise ValueError(f"{path} is a released checkpoint: it holds the text tower's weights but not its tokenizer "
                             "and configuration, so pass --text-encoder DIR (a local Bio_ClinicalBERT folder with "
                             "config.json and the tokenizer files, or its hub id when online)")
    else:
        raise FileNotFoundError(f"{path}: no such checkpoint folder or file (pass a kit folder, e.g. "
                                "runs/<profile>/checkpoints/mammoclip, or a released .tar)")
    if text_encoder is not None and not path.is_dir():
        encoder = Path(text_encoder).expanduser()
        looks_like_path = encoder.is_absolute() or str(text_encoder).startswith((".", "~")) \
            or str(text_encoder).count("/") > 1
        if encoder.exists() and not (encoder / "config.json").is_file():
            raise ValueError(f"{encoder}: not a text-encoder folder (no config.json); pass the folder of a Hugging "
                             "Face model such as Bio_ClinicalBERT (config.json, weights, tokenizer files)")
        if not encoder.exists() and looks_like_path:
            raise FileNotFoundError(f"{encoder}: no such text-encoder folder")
    missing = [str(i) for i in images if not Path(i).is_file()]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise FileNotFoundError(f"{len(missing)} of {len(images)} image path(s) do not exist: {shown} (nothing was "
                                "loaded; fix or leave out these paths)")
    return notes


def name_classes(table: pd.DataFrame, prompts: Mapping[str, Any]) -> pd.DataFrame:
    """Columns of a task with more than two classes named by its classes: ``task_p0 … task_p{K-1}`` become
    ``task_<class>`` (the keys of a ``{class: prompts}`` mapping, e.g. ``density_A`` … ``density_D``) and
    ``task_pred`` becomes ``task``, the predicted class's name. Tasks whose classes have no names keep ``task_p{c}``
    and give the class index in ``task``."""
    from mammoclip_kit.inference import normalize_prompts

    out = table.copy()
    for task, classes in normalize_prompts(prompts).items():
        if f"{task}_pred" not in out.columns:
            continue
        given = prompts[task]
        names = [str(n) for n in given] if isinstance(given, Mapping) else [f"p{c}" for c in range(len(classes))]
        predicted = out.pop(f"{task}_pred").astype(int)
        out = out.rename(columns={f"{task}_p{c}": f"{task}_{name}" for c, name in enumerate(names)})
        position = out.columns.get_loc(f"{task}_{names[0]}")
        out.insert(position, task, [names[k] if isinstance(given, Mapping) else int(k) for k in predicted])
    return out


def describe_run(checkpoint: str, prompts_path: str | None, scoring: str, dicom_mode: tuple[str, str]
                 ) -> dict[str, Any]:
    """What produced the predictions: checkpoint (path, short SHA-256), prompts (file or ``kit``), scoring rule and
    DICOM mode (with why); printed above the table and added to every JSON record."""
    identity = checkpoint_identity(checkpoint)
    return {"checkpoint": str(checkpoint), "checkpoint_sha256": identity["sha256"],
            "checkpoint_kind": identity["kind"], "prompts": str(prompts_path) if prompts_path else "kit",
            "scoring": scoring, "dicom_mode": dicom_mode[0], "dicom_mode_source": dicom_mode[1]}


def _header(run: Mapping[str, Any]) -> list[str]:
    identity = {"name": run["checkpoint"], "kind": run["checkpoint_kind"], "sha256": run["checkpoint_sha256"]}
    prompts = run["prompts"] if run["prompts"] != "kit" else "kit (mammoclip_kit.data.text.PROMPTS)"
    return [f"# checkpoint : {describe_checkpoint(identity)}", f"# prompts    : {prompts}",
            f"# scoring    : {run['scoring']} ({SCORING_RULES[run['scoring']]})",
            f"# DICOM mode : {run['dicom_mode']} ({run['dicom_mode_source']})"]


def _json_value(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mammoclip_kit.predict", description="Zero-shot probabilities of mammograms (PNG/JPEG/DICOM).",
        epilog="The output names the checkpoint (path, SHA-256), prompts, scoring rule and DICOM mode it used (header "
               "lines of the table; fields of each --json record). A binary task gives P(positive); density gives the "
               "predicted category (density: A-D) and one probability per category (density_A ... density_D).")
    parser.add_argument("--checkpoint", required=True, help="kit checkpoint folder or released .tar file")
    parser.add_argument("--image", nargs="+", required=True, help="image files (PNG, JPEG or DICOM)")
    parser.add_argument("--prompts", default=None, help="JSON file {task: [class-0 prompts, class-1 prompts, ...]}")
    parser.add_argument("--text-encoder", default=None,
                        help="local folder or hub id of the text encoder; required by a released .tar (its tokenizer "
                             "and configuration), ignored for a kit folder")
    parser.add_argument("--scoring", choices=["ensemble", "reference"], default="ensemble",
                        help="prompt ensemble with the model's logit scale, or the reference's single-prompt rule")
    parser.add_argument("--dicom-mode", choices=["paper", "voi"], default=None,
                        help="how DICOM files are converted (as the PNG converter's --mode); default: the mode the "
                             "checkpoint records (preprocessing.json of a kit folder), else paper — the same for a "
                             "released .tar and its converted folder")
    parser.add_argument("--device", default=None, help="default: CUDA, then MPS, then CPU")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--json", action="store_true", help="print JSON records instead of a table")
    return parser


@cli_errors
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        notes = check_inputs(args.checkpoint, args.text_encoder, args.image)
        prompts = load_prompts(args.prompts)
        dicom_mode = resolve_dicom_mode(args.checkpoint, args.dicom_mode)
        good, failures, image_notes = inspect_images(args.image)  # every image before any model
        run = describe_run(args.checkpoint, args.prompts, args.scoring, dicom_mode)
        table = pd.DataFrame()
        if good:
            model = load_model(args.checkpoint, text_encoder=args.text_encoder, device=args.device)
            from mammoclip_kit.models.clip import check_finite

            check_finite(model, args.checkpoint)
            table, more, _ = predict_each(good, model, prompts, scoring=args.scoring, batch_size=args.batch_size,
                                          dicom_mode=dicom_mode[0], inspect=False)
            failures.update(more)
            table = name_classes(table, prompts) if len(table) else table
    except (FileNotFoundError, ValueError, KeyError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for note in notes + image_notes:
        print(f"note: {note}", file=sys.stderr)
    for reason in failures.values():
        print(f"skipped: {reason}", file=sys.stderr)
    if args.json:
        records = [{"image": name, **{k: _json_value(v) for k, v in zip(table.columns, values, strict=True)}, **run}
                   for name, values in zip(table.index, table.itertuples(index=False), strict=True)]
        records += [{"image": name, "error": reason, **run} for name, reason in failures.items()]
        print(json.dumps(records, indent=2, allow_nan=False))
    else:
        print("\n".join(_header(run)))
        if len(table):
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
