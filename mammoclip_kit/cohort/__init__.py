"""The synthetic teaching cohort: seeded screening mammograms and reports written in the real datasets' formats.

One module per job: :mod:`.config` (what determines a cohort: presets, prevalence, column lists), :mod:`.phantom`
(breast anatomy and parenchymal texture), :mod:`.lesions` (masses, calcifications, distortions, asymmetries),
:mod:`.reports` (BI-RADS report grammar), :mod:`.dicom_writer` (vendor-specific DICOM files), :mod:`.patient` (one
four-view exam), :mod:`.generate` (the driver, ``ensure_cohort`` and the ``make_cohort`` CLI) and :mod:`.figures`
(the figures and tables notebook 01 shows). Nothing in the real-data pipeline (:mod:`mammoclip_kit.data`) imports this
package: the cohort is an input like any data root.
"""

from mammoclip_kit.cohort.config import PRESETS, CohortConfig, CohortSectionConfig, resolve_config
from mammoclip_kit.cohort.figures import (
    display_pixels,
    lesion_contrast,
    load_truth,
    model_view,
    pick_exam,
    show_densities,
    show_exam,
    show_findings,
    show_vendor_histograms,
    two_view_table,
    vendor_table,
)
from mammoclip_kit.cohort.generate import (
    cohort_artifact,
    cohort_metrics,
    cohort_record,
    ensure_cohort,
    ensure_cohort_at,
    make_cohort,
)

__all__ = [
    "PRESETS", "CohortConfig", "CohortSectionConfig", "cohort_artifact", "cohort_metrics", "cohort_record", "display_pixels", "ensure_cohort", "ensure_cohort_at",
    "lesion_contrast", "load_truth", "make_cohort", "model_view", "pick_exam", "resolve_config", "show_densities",
    "show_exam", "show_findings", "show_vendor_histograms", "two_view_table", "vendor_table",
]
