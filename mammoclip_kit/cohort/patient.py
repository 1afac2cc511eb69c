"""Rendering one patient of the synthetic cohort: four views, DICOM files, masks and the patient's CSV rows.

Called once per patient by :func:`mammoclip_kit.cohort.generate.make_cohort` (in worker processes); everything random
comes from the patient's own seed, so the output does not depend on which worker renders it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from mammoclip_kit.cohort import dicom_writer as dw
from mammoclip_kit.cohort import lesions as lz
from mammoclip_kit.cohort import phantom as ph
from mammoclip_kit.cohort.config import CohortConfig
from mammoclip_kit.cohort.reports import generate_report


def hex_id(*parts: Any) -> str:
    """A 32-hex-digit identifier derived from ``parts`` (VinDr-style ids; same parts, same id)."""
    return hashlib.md5("|".join(str(p) for p in parts).encode()).hexdigest()

VIEWS: tuple[tuple[str, str], ...] = (("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO"))
TRUTH_LESION_COLUMNS = ["dataset", "patient_id", "image_id", "laterality", "view", "lesion_id", "finding", "vindr",
                        "shape", "margin", "size_mm", "malignant", "birads", "clock", "quadrant", "depth", "nipple_cm",
                        "back_mm", "lat_mm", "sup_mm", "xmin", "ymin", "xmax", "ymax", "cx", "cy", "mask_path",
                        "mask_label"]


def render_patient(task: dict[str, Any], cfg: CohortConfig, out_dir: str | Path) -> dict[str, list[dict[str, Any]]]:
    """Render and write one patient's four views; returns its CSV rows (truth, lesions and the part's own rows)."""
    import cv2

    cv2.setNumThreads(1)
    out_dir = Path(out_dir)
    rng = np.random.default_rng(task["seed"])
    part, vendor = task["part"], dw.VENDORS[task["vendor"]]
    rows_px, cols_px = vendor.shape(cfg.image_scale)
    spacing = vendor.spacing(cfg.image_scale)
    age = int(rng.integers(40, 80))
    study_year = int(rng.integers(2018, 2024))
    study_date = f"{study_year}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}"
    shared = {"pnl": rng.uniform(60, 115), "hw": rng.uniform(65, 110), "thick": rng.uniform(40, 70)}
    breasts, geoms, lesions = {}, {}, {}
    for lat in ("L", "R"):
        model = ph.sample_breast(rng, lat, task["density"], shared)
        breasts[lat] = model
        geoms[lat] = {view: ph.view_geometry(model, view, rows_px, cols_px, spacing) for view in ("CC", "MLO")}
        placed = []
        for k, finding in enumerate(task["findings"][lat]):
            lesion = lz.sample_lesion(rng, finding, k + 1, lat, model.pnl_mm, model.half_width_mm,
                                      list(geoms[lat].values()), cfg.mass_size_mm,
                                      cfg.calcification_extent)
            if lesion is not None:
                placed.append(lesion)
        lesions[lat] = placed
    report = generate_report(rng, age, task["density"], lesions, study_year)
    per_side_birads = report["per_side"]
    malignant = {lat: any(lesion.malignant for lesion in lesions[lat]) for lat in ("L", "R")}
    invasive = {lat: malignant[lat] and bool(rng.random() < 0.7) for lat in ("L", "R")}
    rsna_blank_birads = bool(rng.random() < 0.2)
    rsna_blank_density = bool(rng.random() < 0.25)
    site_machine = int(rng.choice(vendor.rsna_machine_ids)) if vendor.rsna_machine_ids else 0

    study_uid = dw.uid_from("study", task["seed"])
    patient_name = f"{dw.PHI_NAME_PREFIX}{task['name_tag']}"
    birth_date = f"{study_year - age}{dw.PHI_BIRTH_MONTHDAY}"
    out: dict[str, list[dict[str, Any]]] = {"images": [], "lesions": [], "vindr_breast": [], "vindr_finding": [],
                                            "rsna": [], "reports": []}
    for view_index, (lat, view) in enumerate(VIEWS):
        image_id = task["image_ids"][view_index]
        model, geom = breasts[lat], geoms[lat][view]
        tissue = ph.render_tissue(model, geom, view_index, vendor.periphery)
        intensity = tissue.intensity
        label = np.zeros((rows_px, cols_px), np.uint8)
        rendered = []
        for lesion in lesions[lat]:
            result = lz.render_lesion(intensity, tissue.gland, geom, lesion, view_index, cfg.conspicuity,
                                        cfg.calcification_scale, cfg.calcification_contrast,
                                      cfg.calcification_count)
            r0, c0 = result.origin
            h, w = result.mask.shape
            region = label[r0:r0 + h, c0:c0 + w]
            region[result.mask] = lesion.lesion_id
            rendered.append((lesion, result))
        image = _acquire(intensity, geom, vendor, np.random.default_rng([task["seed"], 100 + view_index]))
        stored = dw.to_stored(image, geom.breast, vendor)
        windows = dw.window_values(stored, geom.breast, vendor)
        burned = bool(np.random.default_rng([task["seed"], 200 + view_index]).random() < vendor.marker_probability)
        if burned:
            dw.burn_marker(stored, f"{lat} {view}", lat, vendor)
        if part == "vindr":
            rel = Path("vindr") / "images" / task["patient_id"] / f"{image_id}.dicom"
        elif part == "rsna":
            rel = Path("rsna") / "train_images" / task["patient_id"] / f"{image_id}.dcm"
        else:
            rel = Path("reports") / "images" / task["patient_id"] / f"{image_id}.dcm"
        meta = dw.DicomMeta(
            patient_id=task["patient_id"], patient_name=patient_name, birth_date=birth_date, age=age,
            study_uid=study_uid, series_uid=dw.uid_from("series", task["seed"], view_index),
            sop_uid=dw.uid_from("sop", task["seed"], view_index), study_date=study_date, laterality=lat, view=view,
            accession=f"ACC{task['seed'] % 10**10:010d}", thickness_mm=model.thickness_mm, burned_in=burned,
            instance_number=view_index + 1)
        compression = vendor.compression.get(part, "none") if cfg.compress else "none"
        syntax = dw.write_vendor_dicom(out_dir / rel, stored, meta, vendor, spacing, windows, compression)
        mask_rel = ""
        if rendered:
            mask_rel = (Path("truth") / "masks" / part / f"{image_id}.png").as_posix()
            (out_dir / mask_rel).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(out_dir / mask_rel), label, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        names = sorted({lesion.finding for lesion in lesions[lat]})
        out["images"].append({
            "dataset": part, "patient_id": task["patient_id"], "study_id": task["patient_id"], "image_id": image_id,
            "path": rel.as_posix(), "laterality": lat, "view": view, "vendor": vendor.key,
            "manufacturer": vendor.manufacturer, "height": rows_px, "width": cols_px,
            "pixel_spacing_mm": round(spacing, 4), "bits_stored": vendor.bits_stored,
            "photometric": vendor.photometric, "transfer_syntax": syntax, "density": task["density"],
            "dense_fraction": round(tissue.dense_fraction, 4), "birads": per_side_birads[lat],
            "malignant": int(malignant[lat]), "findings": str(names), "n_lesions": len(lesions[lat]), "age": age,
            "patient_name": patient_name, "birth_date": birth_date, "thickness_mm": round(model.thickness_mm, 1),
            "nipple_row": round(geom.nipple_rc[0], 1), "nipple_col": round(geom.nipple_rc[1], 1),
            "split": task["split"] if part == "vindr" else "", "fold": task["fold"],
        })
        for lesion, result in rendered:
            x0, y0, x1, y1 = (float(np.clip(v, 0, (cols_px if i % 2 == 0 else rows_px) - 1))
                              for i, v in enumerate(result.box))
            cy, cx = geom.project(lesion.back, lesion.lat, lesion.sup)
            row = {k: v for k, v in lesion.as_dict().items() if k in TRUTH_LESION_COLUMNS}
            row.update({"dataset": part, "patient_id": task["patient_id"], "image_id": image_id, "laterality": lat,
                        "view": view, "vindr": int(lesion.vindr), "malignant": int(lesion.malignant),
                        "size_mm": round(lesion.size_mm, 1), "back_mm": round(lesion.back, 1),
                        "lat_mm": round(lesion.lat, 1), "sup_mm": round(lesion.sup, 1),
                        "xmin": round(x0, 2), "ymin": round(y0, 2), "xmax": round(x1, 2), "ymax": round(y1, 2),
                        "cx": round(cx, 1), "cy": round(cy, 1), "mask_path": mask_rel, "mask_label": lesion.lesion_id})
            out["lesions"].append(row)
        if part == "vindr":
            _vindr_rows(out, task, image_id, lat, view, rows_px, cols_px, per_side_birads[lat], rendered)
        elif part == "rsna":
            biopsy = int(malignant[lat] or per_side_birads[lat] >= 4)
            birads = np.nan if rsna_blank_birads and per_side_birads[lat] <= 2 else \
                (0.0 if per_side_birads[lat] >= 3 else float(per_side_birads[lat]))
            out["rsna"].append({
                "site_id": vendor.rsna_site, "patient_id": int(task["patient_id"]), "image_id": int(image_id),
                "laterality": lat, "view": view, "age": float(age), "cancer": int(malignant[lat]), "biopsy": biopsy,
                "invasive": int(invasive[lat]), "BIRADS": birads, "implant": 0,
                "density": "" if rsna_blank_density else task["density"], "machine_id": site_machine,
                "difficult_negative_case": bool(biopsy and not malignant[lat]),
            })
        else:
            row = {k: report[k] for k in ("BIRADS_CATEGORY", "HISTORY", "FINDINGS", "IMPRESSION", "ASSESMENT",
                                          "RECOMENDATION", "CONCLUSION", "BIRADS_numeric")}
            row.update({"patient_id": task["patient_id"], "GENDER": "F", "AGE": age, "image_id": image_id,
                        "fold": task["fold"], "view": view, "laterality": lat, "img_size_row": rows_px,
                        "img_size_column": cols_px})
            out["reports"].append(row)
    return out


def _vindr_rows(out, task, image_id, lat, view, rows_px, cols_px, birads, rendered) -> None:
    """Breast-level and finding rows of one VinDr image (``No Finding`` rows have empty boxes)."""
    series_id = hex_id("vindr-series", task["patient_id"], lat, view)
    base = {"study_id": task["patient_id"], "series_id": series_id, "image_id": image_id, "laterality": lat,
            "view_position": view, "height": rows_px, "width": cols_px, "breast_birads": f"BI-RADS {birads}",
            "breast_density": f"DENSITY {task['density']}", "split": task["split"]}
    out["vindr_breast"].append(dict(base))
    boxed = [(lesion, result) for lesion, result in rendered if lesion.vindr]
    if not boxed:
        out["vindr_finding"].append({**base, "finding_categories": "['No Finding']", "finding_birads": "",
                                     "xmin": np.nan, "ymin": np.nan, "xmax": np.nan, "ymax": np.nan})
    for lesion, result in boxed:
        x0, y0, x1, y1 = result.box
        out["vindr_finding"].append({
            **base, "finding_categories": str([lesion.finding]), "finding_birads": f"BI-RADS {lesion.birads}",
            "xmin": round(max(0.0, x0), 2), "ymin": round(max(0.0, y0), 2),
            "xmax": round(min(cols_px - 1.0, x1), 2), "ymax": round(min(rows_px - 1.0, y1), 2)})


def _acquire(intensity: np.ndarray, geom: ph.ViewGeometry, vendor: dw.Vendor, rng: np.random.Generator) -> np.ndarray:
    """Detector blur, heel effect and signal-dependent noise on the presentation intensity (air stays 0)."""
    import cv2

    image = cv2.GaussianBlur(intensity, (0, 0), vendor.blur_px) if vendor.blur_px > 0 else intensity
    if vendor.heel:
        ramp = 1.0 - vendor.heel * (np.arange(geom.rows, dtype=np.float32)[:, None] / geom.rows - 0.5)
        image = image * ramp
    noise = np.empty(image.shape, np.float32)
    cv2.setRNGSeed(int(rng.integers(0, 2**31 - 1)))
    cv2.randn(noise, 0.0, 1.0)  # much faster than numpy's normal; seeded per image, so still deterministic
    image = image + vendor.noise * cv2.sqrt(np.maximum(image, np.float32(0.02))) * noise
    image[~geom.breast] = 0.0
    return image.astype(np.float32, copy=False)
