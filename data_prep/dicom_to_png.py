"""Convert DICOM mammograms to model-ready PNGs (paper-exact or header-aware "voi" mode).

Examples::

    python -m data_prep.dicom_to_png data/vindr/images --out runs/paper/png/vindr --mode paper --workers 8
    python -m data_prep.dicom_to_png files.csv --root data/rsna --out png/rsna --mode voi --height 1520 --bits 16

The input is a folder (``<patient_id>/<image_id>.dcm|.dicom``, or DICOMs directly in it) or a CSV with a ``path``
column (relative paths are taken under ``--root``, default the CSV's folder). Outputs go to
``OUT/<patient_id>/<image_id>.png`` with ``OUT/manifest.csv`` (crop box and scale per image) and ``OUT/errors.csv``
(one row per file that could not be converted). Finished images are skipped on a rerun unless ``--no-resume``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mammoclip_kit.data.batch import find_sources, preprocess_many, read_source_list
from mammoclip_kit.data.preprocess import MODES
from mammoclip_kit.errors import cli_errors


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m data_prep.dicom_to_png", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", type=Path, help="folder of DICOMs, or a CSV with a 'path' column")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--mode", choices=MODES, default="voi",
                        help="paper = the reference algorithm exactly; voi = header VOI/window + robust breast mask")
    parser.add_argument("--height", type=int, default=1520, help="output rows (default 1520, the paper's)")
    parser.add_argument("--width", type=int, default=None, help="output columns (default height·3/5, 912 for 1520)")
    parser.add_argument("--bits", type=int, choices=(8, 16), default=8, help="PNG bit depth (16: voi mode only)")
    parser.add_argument("--workers", type=int, default=1, help="processes (use the number of cores)")
    parser.add_argument("--root", type=Path, default=None,
                        help="data root: manifest sources are stored relative to it; CSV paths are resolved under it")
    parser.add_argument("--column", default=None, help="CSV column holding the paths (default: path/source/file)")
    parser.add_argument("--stretch", action="store_true",
                        help="voi mode: stretch the breast box to the output size instead of growing it to 5:3")
    parser.add_argument("--window-index", type=int, default=0, help="voi mode: which header window / VOI LUT")
    resume = parser.add_mutually_exclusive_group()
    resume.add_argument("--resume", dest="resume", action="store_true", default=True,
                        help="skip images already converted with the same settings (default)")
    resume.add_argument("--no-resume", dest="resume", action="store_false", help="convert everything again")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--skip-burned-in", action="store_true",
                        help="leave out images whose header says BurnedInAnnotation = YES (listed in errors.csv)")
    return parser


@cli_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.input.is_dir():
        sources = find_sources(args.input)
        root = args.root or args.input
    elif args.input.is_file() and args.input.suffix.lower() == ".csv":
        sources = read_source_list(args.input, args.column, args.root)
        root = args.root or args.input.parent
    else:
        print(f"error: {args.input}: not a folder or a .csv file", file=sys.stderr)
        return 2
    if not sources:
        print(f"error: {args.input}: no DICOM files (*.dcm, *.dicom) found", file=sys.stderr)
        return 2
    options = {"keep_aspect": not args.stretch, "window_index": args.window_index} if args.mode == "voi" else {}
    try:
        result = preprocess_many(sources, args.out, mode=args.mode, height=args.height, width=args.width,
                                 bits=args.bits, workers=args.workers, resume=args.resume, root=root,
                                 progress=not args.quiet, skip_burned_in=args.skip_burned_in, **options)
    except ValueError as exc:  # bad settings (e.g. --bits 16 with --mode paper)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.out}: {result.summary()}")
    if result.burned_in:
        print(f"warning: {result.burned_in} image(s) have BurnedInAnnotation = YES (column burned_in_annotation of "
              f"{args.out / 'manifest.csv'}); --skip-burned-in leaves them out", file=sys.stderr)
    if result.failed:
        print(f"{result.failed} file(s) failed; reasons in {args.out / 'errors.csv'}:")
        for row in result.errors.head(10).itertuples():
            print(f"  {row.source}: {row.error}: {row.message}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
