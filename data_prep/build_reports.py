"""Build reports_pretrain.csv from an image-report table (reports/reports.csv, one row per image): one row per
patient x laterality with the PNGs per view, text = [cleaned FINDINGS sentences about this breast, cleaned
IMPRESSION], text_augment (offline augmentation, or back-translation with two local MarianMT folders) and fold.

Example::

    python -m data_prep.build_reports --data-root data/cohort/classroom --png-dir runs/classroom/png/reports --out runs/classroom/tables --seed 0
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mammoclip_kit.data.records import build_cli


def main(argv: Sequence[str] | None = None) -> dict[str, Path]:
    """Run the builder with command-line arguments ``argv`` (default ``sys.argv``); returns table name → path."""
    return build_cli("reports", argv, description=__doc__)


def cli() -> int:
    """Console-script entry point: run :func:`main` and exit 0 (errors exit non-zero with their message)."""
    main()
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
