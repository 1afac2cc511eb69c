"""The real-data layout under ``data_root`` and the check that a user's folder follows it.

::

    vindr/images/<study_id>/<image_id>.dicom, vindr/breast-level_annotations.csv, vindr/finding_annotations.csv
    rsna/train_images/<patient_id>/<image_id>.dcm, rsna/train.csv
    reports/images/<patient_id>/<image_id>.dcm, reports/reports.csv

The embedded teaching cohort is written in exactly this layout (:mod:`mammoclip_kit.cohort`), so that real data and
the cohort go through the same pipeline.
"""

from __future__ import annotations

from pathlib import Path

#: What each part of a user's data root must hold (relative paths); one present part is enough.
REQUIRED_FILES: dict[str, list[str]] = {
    "vindr": ["vindr/breast-level_annotations.csv", "vindr/finding_annotations.csv", "vindr/images"],
    "rsna": ["rsna/train.csv", "rsna/train_images"],
    "reports": ["reports/reports.csv", "reports/images"],
}


def check_user_data(root: str | Path) -> Path:
    """Check a real-data root: it must exist and hold at least one complete part; prints which parts are missing."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data_root {root} does not exist: point data_root at a folder holding vindr/, "
                                "rsna/ and/or reports/ (see README 'Real data')")
    complete, problems = [], []
    for part, needed in REQUIRED_FILES.items():
        missing = [rel for rel in needed if not (root / rel).exists()]
        if not (root / part).exists():
            problems.append(f"{part}/ absent")
        elif missing:
            problems.append(f"{part}/ incomplete: missing {', '.join(missing)}")
        else:
            complete.append(part)
    if not complete:
        raise FileNotFoundError(f"data_root {root} holds no complete dataset part: " + "; ".join(problems))
    if problems:
        print(f"data_root {root}: using {', '.join(complete)}; " + "; ".join(problems))
    return root
