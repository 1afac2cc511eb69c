"""The paper's reported numbers (read from its result figures, ±0.01) and the kit's tables laid out beside them.

Every value here is labelled "reported by the paper"; cells the figures only resolve to a range are stored as the
range's midpoint with the range kept as text. Source: Ghosh et al., MICCAI 2024 (see README citation).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

PAPER_LABEL = "reported by the paper"

#: model order of the paper's figures
PAPER_MODELS = ("CLIP RN-50", "CLIP EN-B5", "Mammo-CLIP EN-B2", "Mammo-CLIP EN-B5", "Mammo-CLIP EN-B5 + VinDr")

# RSNA malignancy, breast-level AUC: zero-shot, fine-tune at 10/50/100 %, linear probe at 100 %.
RSNA_MALIGNANCY = {
    "columns": ("zero-shot", "FT 10%", "FT 50%", "FT 100%", "LP 100%"),
    "rows": {
        "CLIP RN-50": (0.28, 0.62, 0.67, 0.72, 0.58),
        "CLIP EN-B5": (0.42, 0.80, 0.84, 0.86, 0.70),
        "Mammo-CLIP EN-B2": (0.60, 0.82, 0.86, 0.89, 0.72),
        "Mammo-CLIP EN-B5": (0.62, 0.85, 0.89, 0.90, 0.75),
        "Mammo-CLIP EN-B5 + VinDr": (0.60, 0.85, 0.90, 0.91, 0.79),
    },
}
# VinDr image-level tasks: zero-shot, linear probe at 10/50/100 %, fine-tune at 100 %.
_VINDR_COLUMNS = ("zero-shot", "LP 10%", "LP 50%", "LP 100%", "FT 100%")
VINDR_CALCIFICATION = {
    "columns": _VINDR_COLUMNS,
    "rows": {
        "CLIP RN-50": (0.37, 0.42, 0.51, 0.55, 0.68),
        "CLIP EN-B5": (0.53, 0.53, 0.60, 0.65, 0.90),
        "Mammo-CLIP EN-B2": (0.68, 0.90, 0.92, 0.92, 0.98),
        "Mammo-CLIP EN-B5": (0.61, 0.91, 0.93, 0.94, 0.98),
        "Mammo-CLIP EN-B5 + VinDr": (0.62, "0.92–0.93", 0.94, 0.96, 0.98),
    },
}
VINDR_MASS = {
    "columns": _VINDR_COLUMNS,
    "rows": {
        "CLIP RN-50": (0.20, 0.34, 0.42, 0.49, 0.57),
        "CLIP EN-B5": (0.32, 0.52, 0.57, 0.59, 0.78),
        "Mammo-CLIP EN-B2": (0.58, 0.69, "0.72–0.73", "0.73–0.74", 0.85),
        "Mammo-CLIP EN-B5": (0.48, "0.73–0.74", 0.78, 0.79, 0.85),
        "Mammo-CLIP EN-B5 + VinDr": (0.76, "0.78–0.80", "0.84–0.85", 0.86, 0.88),
    },
}
VINDR_DENSITY = {
    "columns": _VINDR_COLUMNS,
    "rows": {
        "CLIP RN-50": (0.04, 0.55, 0.61, "0.69–0.70", 0.72),
        "CLIP EN-B5": (0.10, 0.76, 0.76, 0.78, 0.83),
        "Mammo-CLIP EN-B2": (0.13, 0.80, 0.82, 0.84, 0.85),
        "Mammo-CLIP EN-B5": (0.15, 0.83, 0.84, 0.85, 0.88),
        "Mammo-CLIP EN-B5 + VinDr": (0.15, "0.83–0.86", 0.86, "0.86–0.88", 0.88),
    },
}
# Supervised localization (RetinaNet), mAP@0.5: frozen encoder at 100 %, fine-tuned at 10/50/100 %.
_DETECTION_COLUMNS = ("frozen 100%", "FT 10%", "FT 50%", "FT 100%")
DETECTION_CALCIFICATION = {
    "columns": _DETECTION_COLUMNS,
    "rows": {
        "CLIP RN-50": (0.08, 0.03, 0.11, 0.17),
        "CLIP EN-B5": (0.10, 0.09, 0.23, 0.29),
        "Mammo-CLIP EN-B2": (0.17, 0.08, 0.20, 0.32),
        "Mammo-CLIP EN-B5": (0.17, 0.12, 0.28, 0.35),
        "Mammo-CLIP EN-B5 + VinDr": (0.17, 0.10, 0.25, 0.35),
    },
}
DETECTION_MASS = {
    "columns": _DETECTION_COLUMNS,
    "rows": {
        "CLIP RN-50": (0.15, 0.23, 0.29, 0.36),
        "CLIP EN-B5": (0.28, 0.34, 0.45, 0.49),
        "Mammo-CLIP EN-B2": (0.37, 0.38, 0.50, 0.55),
        "Mammo-CLIP EN-B5": (0.35, 0.41, 0.52, 0.58),
        "Mammo-CLIP EN-B5 + VinDr": (0.39, 0.43, 0.54, 0.58),
    },
}
# Mammo-FActOR weakly supervised localization, mAP at IoU 0.25 / 0.5.
FACTOR = {
    "columns": ("mass @0.25", "mass @0.5", "calc @0.25", "calc @0.5"),
    "rows": {
        "Mammo-CLIP EN-B2": (0.38, 0.22, 0.20, 0.13),
        "Mammo-CLIP EN-B5": (0.45, 0.37, 0.25, 0.17),
    },
}

PAPER_TABLES: dict[str, dict[str, Any]] = {
    "RSNA malignancy (AUC, breast level)": RSNA_MALIGNANCY,
    "VinDr mass (AUC, image level)": VINDR_MASS,
    "VinDr suspicious calcification (AUC, image level)": VINDR_CALCIFICATION,
    "VinDr density (accuracy, 4 classes)": VINDR_DENSITY,
    "VinDr localization, mass (RetinaNet mAP@0.5)": DETECTION_MASS,
    "VinDr localization, calcification (RetinaNet mAP@0.5)": DETECTION_CALCIFICATION,
    "Mammo-FActOR weak localization (mAP)": FACTOR,
}


def paper_table(name: str) -> pd.DataFrame:
    """One of :data:`PAPER_TABLES` as a DataFrame of text cells (ranges kept as printed), models as rows."""
    table = PAPER_TABLES[name]
    frame = pd.DataFrame.from_dict(table["rows"], orient="index", columns=list(table["columns"]))
    frame.index.name = f"model ({PAPER_LABEL})"
    return frame.map(lambda v: v if isinstance(v, str) else f"{v:.2f}")
