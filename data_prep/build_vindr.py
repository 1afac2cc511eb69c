"""Build the VinDr-Mammo tables: vindr_images.csv (one row per image, one-hot findings, density 0-3, birads,
split, fold, png_path), vindr_boxes.csv (one row per box and finding, original and PNG coordinates) and
vindr_pretrain.csv (patient x laterality, PNG lists and findings per view) from breast-level_annotations.csv and
finding_annotations.csv.

Example::

    python -m data_prep.build_vindr --data-root data/cohort/classroom --png-dir runs/classroom/png/vindr --out runs/classroom/tables

With the authors' PNG release instead of DICOMs, pass ``--png-root <folder>/images_png`` (``<study_id>/<image_id>.png``);
boxes are then scaled by the PNG size (see ``mammoclip_kit.data.records``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mammoclip_kit.data.records import build_cli


def main(argv: Sequence[str] | None = None) -> dict[str, Path]:
    """Run the builder with command-line arguments ``argv`` (default ``sys.argv``); returns table name → path."""
    return build_cli("vindr", argv, description=__doc__)


def cli() -> int:
    """Console-script entry point: run :func:`main` and exit 0 (errors exit non-zero with their message)."""
    main()
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
