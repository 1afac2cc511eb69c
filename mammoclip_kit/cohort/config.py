"""What determines a synthetic cohort: :class:`CohortConfig`, the presets, the profile's ``cohort`` section
(:class:`CohortSectionConfig`) and the real files' column lists.

Kept apart from the generator so that the per-patient renderer (:mod:`mammoclip_kit.cohort.patient`) and the driver
(:mod:`mammoclip_kit.cohort.generate`) both import it without importing each other.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, ClassVar

from mammoclip_kit.cohort import dicom_writer as dw
from mammoclip_kit.cohort import lesions as lz
from mammoclip_kit.cohort import phantom as ph
from mammoclip_kit.config import StageConfig

GENERATOR_VERSION = "1.4"  # bump whenever the generated files change: cohorts of another version are rebuilt
PARTS: tuple[str, ...] = ("vindr", "rsna", "reports")

#: Exact column lists of the real files (VinDr-Mammo v1.0.0, RSNA Screening Mammography, the paper's raw report table).
VINDR_BREAST_COLUMNS = ["study_id", "series_id", "image_id", "laterality", "view_position", "height", "width",
                        "breast_birads", "breast_density", "split"]
VINDR_FINDING_COLUMNS = ["study_id", "series_id", "image_id", "laterality", "view_position", "height", "width",
                         "breast_birads", "breast_density", "finding_categories", "finding_birads", "xmin", "ymin",
                         "xmax", "ymax", "split"]
RSNA_COLUMNS = ["site_id", "patient_id", "image_id", "laterality", "view", "age", "cancer", "biopsy", "invasive",
                "BIRADS", "implant", "density", "machine_id", "difficult_negative_case"]
REPORT_COLUMNS = ["patient_id", "GENDER", "AGE", "BIRADS_CATEGORY", "HISTORY", "FINDINGS", "IMPRESSION", "ASSESMENT",
                  "RECOMENDATION", "CONCLUSION", "image_id", "fold", "view", "laterality", "img_size_row",
                  "img_size_column", "BIRADS_numeric"]
TRUTH_IMAGE_COLUMNS = ["dataset", "patient_id", "study_id", "image_id", "path", "laterality", "view", "vendor",
                       "manufacturer", "height", "width", "pixel_spacing_mm", "bits_stored", "photometric",
                       "transfer_syntax", "density", "dense_fraction", "birads", "malignant", "findings", "n_lesions",
                       "age", "patient_name", "birth_date", "thickness_mm", "nipple_row", "nipple_col", "split", "fold"]

DEFAULT_PREVALENCE: dict[str, float] = {
    "Mass": 0.28, "Suspicious Calcification": 0.18, "Architectural Distortion": 0.06, "Focal Asymmetry": 0.06,
    "Benign": 0.20,
}
#: Vendor mix of each part (weights over ``VENDORS`` keys; vendors not selected by ``--vendors`` are dropped).
PART_VENDORS: dict[str, dict[str, float]] = {
    "vindr": {"siemens": 0.45, "hologic": 0.3, "ge": 0.25},
    "rsna": {"hologic": 0.4, "ge": 0.25, "fuji": 0.2, "siemens": 0.15},
    "reports": {"hologic": 0.5, "siemens": 0.25, "ge": 0.2, "fuji": 0.05},
}


@dataclass
class CohortConfig:
    """Everything that determines a cohort (with the seed). ``preset`` names the starting point."""

    preset: str = "smoke"
    n_patients: dict[str, int] = field(default_factory=lambda: {"vindr": 4, "rsna": 4, "reports": 4})
    image_scale: float = 0.07
    prevalence: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_PREVALENCE))
    density_distribution: dict[str, float] = field(default_factory=lambda: {"A": 0.25, "B": 0.25, "C": 0.25,
                                                                             "D": 0.25})
    vendors: list[str] = field(default_factory=lambda: list(dw.VENDORS))
    conspicuity: float = 0.12
    calcification_scale: float = 1.0  # size multiplier of suspicious calcification specks (1 = realistic)
    calcification_contrast: float = 1.0  # brightness multiplier of suspicious calcification specks (1 = realistic)
    calcification_count: float = 1.0  # number multiplier of suspicious calcification specks (1 = 10-30 specks)
    calcification_extent: float = 1.0  # extent multiplier of suspicious calcification clusters (1 = 5-15 mm)
    mass_size_mm: tuple[float, float] = (8.0, 30.0)
    vindr_test_fraction: float = 0.2
    compress: bool = True

    def validate(self) -> CohortConfig:
        for part, n in self.n_patients.items():
            if part not in PARTS:
                raise ValueError(f"n_patients: unknown part {part!r}; expected some of {PARTS}")
            if int(n) < 0:
                raise ValueError(f"n_patients[{part}] must be >= 0, got {n}")
        if not 0.01 <= float(self.image_scale) <= 1.0:
            raise ValueError(f"image_scale must be in [0.01, 1], got {self.image_scale}")
        for name, p in self.prevalence.items():
            if name not in DEFAULT_PREVALENCE:
                raise ValueError(f"prevalence: unknown finding {name!r}; expected some of {list(DEFAULT_PREVALENCE)}")
            if not 0.0 <= float(p) <= 1.0:
                raise ValueError(f"prevalence[{name}] must be in [0, 1], got {p}")
        if not 0.5 <= float(self.calcification_scale) <= 5.0:
            raise ValueError(f"calcification_scale must be in [0.5, 5], got {self.calcification_scale}")
        for name in ("calcification_contrast", "calcification_count", "calcification_extent"):
            if not 0.5 <= float(getattr(self, name)) <= 5.0:
                raise ValueError(f"{name} must be in [0.5, 5], got {getattr(self, name)}")
        if set(self.density_distribution) != set(ph.DENSITIES) or min(self.density_distribution.values()) < 0:
            raise ValueError(f"density_distribution needs non-negative weights for {ph.DENSITIES}, "
                             f"got {self.density_distribution}")
        self.vendors = dw.resolve_vendors(self.vendors)
        return self

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["mass_size_mm"] = list(self.mass_size_mm)
        return out


PRESETS: dict[str, CohortConfig] = {
    "smoke": CohortConfig(preset="smoke"),
    "classroom": CohortConfig(
        preset="classroom", n_patients={"vindr": 500, "rsna": 150, "reports": 400}, image_scale=0.2,
        density_distribution={"A": 0.15, "B": 0.35, "C": 0.35, "D": 0.15}, vindr_test_fraction=0.4),
}


def resolve_config(preset: str = "smoke", **overrides: Any) -> CohortConfig:
    """The preset's :class:`CohortConfig` with ``overrides`` applied (None values are ignored).

    ``n_patients`` may be an int (every part) or a dict per part; ``prevalence`` a float (scales every finding), a dict
    keyed by finding name or short key (mass, calcification, distortion, asymmetry, benign), or a "key=value,..." string.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown cohort preset {preset!r}: expected one of {sorted(PRESETS)}")
    base = PRESETS[preset]
    cfg = replace(base, n_patients=dict(base.n_patients), prevalence=dict(base.prevalence),
                  density_distribution=dict(base.density_distribution), vendors=list(base.vendors))
    unknown = sorted(set(overrides) - set(CohortConfig.__dataclass_fields__))
    if unknown:
        raise TypeError(f"unknown cohort setting(s) {unknown}; expected some of {sorted(CohortConfig.__dataclass_fields__)}")
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "n_patients":
            value = {part: int(value) for part in PARTS} if isinstance(value, (int, float)) else \
                {**cfg.n_patients, **{k: int(v) for k, v in dict(value).items()}}
        elif key == "prevalence":
            value = parse_prevalence(value, cfg.prevalence)
        elif key == "vendors" and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        elif key == "mass_size_mm":
            value = tuple(float(v) for v in value)
        setattr(cfg, key, value)
    return cfg.validate()


@dataclass
class CohortSectionConfig(StageConfig):
    """The profile's ``cohort`` section: which preset, the cohort seed, the workers and the preset's overrides.

    ``preset`` None means the profile's name; ``seed`` is the cohort's own seed (default 0, independent of the
    notebook seed, so that every notebook sees the same cohort); the ``num_workers`` parameter overrides ``workers``.
    The other fields are :func:`resolve_config` overrides (None keeps the preset's value).
    """

    SECTION: ClassVar[str] = "cohort"
    PARAMETERS: ClassVar[dict[str, str]] = {"num_workers": "workers"}
    OVERRIDES: ClassVar[tuple[str, ...]] = ("n_patients", "image_scale", "prevalence", "vendors", "conspicuity",
                                         "calcification_scale", "calcification_contrast",
                                         "calcification_count", "calcification_extent")

    preset: str | None = None
    seed: int = 0
    workers: int = 1
    n_patients: int | dict[str, int] | None = None
    image_scale: float | None = None
    prevalence: float | str | dict[str, float] | None = None
    vendors: str | list[str] | None = None
    conspicuity: float | None = None
    calcification_scale: float | None = None
    calcification_contrast: float | None = None
    calcification_count: float | None = None
    calcification_extent: float | None = None

    def __post_init__(self) -> None:
        self.seed = int(self.seed or 0)
        self.workers = int(self.workers or 1)

    def overrides(self) -> dict[str, Any]:
        """The :func:`resolve_config` overrides that the section sets."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name in self.OVERRIDES and getattr(self, f.name) is not None}


def parse_prevalence(value: Any, base: dict[str, float]) -> dict[str, float]:
    """Turn a prevalence override (float scale, dict or "mass=0.3,calcification=0.2") into a full dict."""
    out = dict(base)
    if isinstance(value, (int, float)):
        return {name: min(1.0, p * float(value)) for name, p in base.items()}
    if isinstance(value, str):
        try:
            return parse_prevalence(float(value), base)
        except ValueError:
            pass
        pairs = {}
        for item in value.split(","):
            if "=" not in item:
                raise ValueError(f"prevalence: expected key=value items, got {item!r} in {value!r}")
            key, number = item.split("=", 1)
            pairs[key.strip()] = float(number)
        value = pairs
    for key, p in dict(value).items():
        name = lz.PREVALENCE_KEYS.get(key, key)
        if name not in DEFAULT_PREVALENCE:
            raise ValueError(f"prevalence: unknown finding {key!r}; use one of {sorted(lz.PREVALENCE_KEYS)}")
        out[name] = float(p)
    return out
