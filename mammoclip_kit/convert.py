"""Convert a released Mammo-CLIP ``.tar`` checkpoint into the kit's folder format, and check the conversion.

    python -m mammoclip_kit.convert b5-model-best-epoch-7.tar runs/paper/checkpoints/b5 --text-encoder BIO_CLINICALBERT_DIR --check
    python -m mammoclip_kit.convert b2-model-best-epoch-10.tar OUT_DIR --image-only --check

The output folder (``model.safetensors`` + ``config.json`` + ``text_encoder/``) loads offline with
``mammoclip_kit.from_pretrained(OUT_DIR)``. ``--check`` reloads both the original file and the conversion and prints
the largest absolute difference of image and text embeddings on a fixed random batch (0 for an exact conversion).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import torch

from mammoclip_kit.errors import cli_errors
from mammoclip_kit.inference import eval_mode, resolve_image_size
from mammoclip_kit.models.clip import MammoClip
from mammoclip_kit.models.loader import load_model

__all__ = ["convert", "check_parity", "main"]

CHECK_TEXTS = ("no mass", "an irregular spiculated mass", "benign appearing calcifications",
               "fine pleomorphic calcifications in a segmental distribution")


def check_output_folder(out_dir: str | os.PathLike, force: bool = False) -> None:
    """Refuse an output that would mix files of two models: an existing file, a non-empty folder (unless ``force``
    and it is a kit checkpoint folder, which is then replaced whole), or a folder that is not a checkpoint at all."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir}: exists and is a file; give a folder for the converted checkpoint")
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    if not (out_dir / "config.json").is_file():
        raise FileExistsError(f"{out_dir}: not empty and not a kit checkpoint folder (no config.json); refusing to "
                              "write into it — choose a new folder")
    if not force:
        raise FileExistsError(f"{out_dir}: already holds a checkpoint (its metrics.json / train/ would no longer match "
                              "the new weights); pass --force to replace the whole folder, or choose a new one")


def _replace_folder(staging: Path, out_dir: Path) -> None:
    """Move ``staging`` to ``out_dir``; an existing ``out_dir`` is moved aside first and deleted only afterwards."""
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.replaced-{os.getpid()}"
        os.replace(out_dir, old)
    os.replace(staging, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def convert(checkpoint: str | os.PathLike, out_dir: str | os.PathLike, text_encoder: str | os.PathLike | None = None,
            image_only: bool = False, strict: bool = True, force: bool = False) -> tuple[Path, Any]:
    """Load ``checkpoint`` safely (:func:`~mammoclip_kit.models.loader.load_model`) and write it to ``out_dir`` in the kit format; returns the folder and the
    :class:`~mammoclip_kit.models.reference.LoadReport`.

    An existing checkpoint folder is refused unless ``force``; then the folder is replaced whole (no old
    ``metrics.json`` or ``train/`` survives next to the new weights). The conversion is written into a sibling folder
    first, so a failed conversion leaves ``out_dir`` as it was.
    """
    from mammoclip_kit.artifacts import atomic_write_json

    out_dir = Path(out_dir)
    check_output_folder(out_dir, force)
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"{checkpoint}: no such released checkpoint file")
    model = load_model(checkpoint, text_encoder=text_encoder, image_only=image_only, strict=strict, device="cpu",
                       verbose=False)
    report = model.load_report
    staging = out_dir.parent / f".{out_dir.name}.converting-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        model.save_pretrained(staging)
        summary = {"source": Path(checkpoint).name, "arch": report.arch, "coverage": report.coverage,
                   "missing": report.missing, "unexpected": report.unexpected, "skipped": report.skipped,
                   "dropped_paths": report.dropped_paths, "epoch": report.epoch, "train_loss": report.train_loss}
        atomic_write_json(staging / "conversion.json", summary)
        _replace_folder(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir, report


@torch.inference_mode()
def check_parity(original: MammoClip, converted: MammoClip, image_size: tuple[int, int] | None = None,
                 batch: int = 2, seed: int = 0) -> dict[str, float]:
    """Max absolute differences of image (and text) embeddings between two models on a fixed random batch.

    The batch has the model's input size unless ``image_size`` is set (printed when it differs).
    """
    size = resolve_image_size(original, image_size, where="parity check")
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, *size, generator=generator)
    with eval_mode(original), eval_mode(converted):
        return _parity(original, converted, images)


def _parity(original: MammoClip, converted: MammoClip, images: torch.Tensor) -> dict[str, float]:
    result = {"image_max_abs_diff": float((original.encode_image(images) - converted.encode_image(images)).abs().max()),
              "image_features_max_abs_diff": float((original.image_features(images)
                                                    - converted.image_features(images)).abs().max())}
    if original.has_text and converted.has_text:
        texts = list(CHECK_TEXTS)
        result["text_max_abs_diff"] = float((original.encode_text(texts) - converted.encode_text(texts)).abs().max())
    result["logit_scale_abs_diff"] = float((original.logit_scale - converted.logit_scale).abs())
    return result


@cli_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mammoclip_kit.convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="released .tar file (e.g. b5-model-best-epoch-7.tar)")
    parser.add_argument("out_dir", help="output folder (kit format)")
    parser.add_argument("--text-encoder", default=None,
                        help="local folder or hub id of the text encoder (Bio_ClinicalBERT); default: the hub id stored "
                             "in the file")
    parser.add_argument("--image-only", action="store_true", help="convert the image tower and projections only")
    parser.add_argument("--check", action="store_true", help="print embedding parity of the conversion vs the file")
    parser.add_argument("--check-size", type=int, nargs=2, default=(320, 192), metavar=("H", "W"),
                        help="image size of the parity batch (1520 912 reproduces the paper input; slower on CPU)")
    parser.add_argument("--non-strict", action="store_true", help="convert even if keys are missing or unused")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing kit checkpoint folder at OUT_DIR (the whole folder)")
    args = parser.parse_args(argv)
    try:
        out, report = convert(args.checkpoint, args.out_dir, text_encoder=args.text_encoder,
                              image_only=args.image_only, strict=not args.non_strict, force=args.force)
    except (FileNotFoundError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report.summary())
    print(f"wrote           {out}")
    if args.check:
        original = load_model(args.checkpoint, text_encoder=args.text_encoder, image_only=args.image_only,
                              strict=not args.non_strict, device="cpu", verbose=False)
        parity = check_parity(original, load_model(out, device="cpu"), image_size=tuple(args.check_size))
        for key, value in parity.items():
            print(f"{key:<28}{value:.3g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
