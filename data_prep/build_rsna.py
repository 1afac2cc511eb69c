"""Build rsna_images.csv from the RSNA train.csv: the RSNA rows plus fold (GroupKFold by patient_id),
breast_id (patient_id_laterality, the grouping key of the breast-level AUC) and png_path.

Example::

    python -m data_prep.build_rsna --data-root data/cohort/classroom --png-dir runs/classroom/png/rsna --out runs/classroom/tables

With the authors' PNG release, pass ``--png-root <folder>/train_images_png`` (``<patient_id>/<image_id>.png``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mammoclip_kit.data.records import build_cli


def main(argv: Sequence[str] | None = None) -> dict[str, Path]:
    """Run the builder with command-line arguments ``argv`` (default ``sys.argv``); returns table name → path."""
    return build_cli("rsna", argv, description=__doc__)


def cli() -> int:
    """Console-script entry point: run :func:`main` and exit 0 (errors exit non-zero with their message)."""
    main()
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
