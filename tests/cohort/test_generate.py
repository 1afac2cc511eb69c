"""Tests of the synthetic teaching cohort: formats, DICOM validity, boxes, two-view consistency, quotas,
determinism, report/truth consistency and ensure_cohort."""

from __future__ import annotations

import ast
import hashlib
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pydicom
import pytest

from mammoclip_kit.cohort import config as cfgmod
from mammoclip_kit.cohort import dicom_writer as dw
from mammoclip_kit.cohort import figures as cohort_figures
from mammoclip_kit.cohort import generate as syn
from mammoclip_kit.cohort.lesions import Lesion
from mammoclip_kit.cohort.reports import NEGATION_WORDS, SUSPICIOUS_CALC_WORDS, generate_report

KEYWORDS = {"Mass": "mass", "Suspicious Calcification": "calcification", "Architectural Distortion": "distortion",
            "Focal Asymmetry": "asymmetr", "Intramammary Lymph Node": "lymph node",
            "Benign Calcification": "calcification"}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cohort") / "smoke"
    syn.make_cohort(root, preset="smoke", seed=0, workers=2, progress=False)
    return root


def _read(root: Path, rel: str) -> pd.DataFrame:
    return pd.read_csv(root / rel, dtype={"study_id": str, "series_id": str, "image_id": str, "patient_id": str})


def _pixels(root: Path, rel: str) -> np.ndarray:
    ds = pydicom.dcmread(root / rel)
    arr = ds.pixel_array.astype(np.float32)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        arr = float((1 << int(ds.BitsStored)) - 1) - arr
    return arr


def test_layout_and_columns(cohort: Path):
    assert (cohort / "cohort.json").is_file()
    assert list(_read(cohort, "vindr/breast-level_annotations.csv").columns) == cfgmod.VINDR_BREAST_COLUMNS
    assert list(_read(cohort, "vindr/finding_annotations.csv").columns) == cfgmod.VINDR_FINDING_COLUMNS
    assert list(_read(cohort, "rsna/train.csv").columns) == cfgmod.RSNA_COLUMNS
    assert list(_read(cohort, "reports/reports.csv").columns) == cfgmod.REPORT_COLUMNS
    images = _read(cohort, "truth/images.csv")
    assert len(images) == 48 and images.groupby("dataset").size().to_dict() == {"reports": 16, "rsna": 16, "vindr": 16}
    for _, row in images.iterrows():
        path = Path(row.path)
        if row.dataset == "vindr":
            assert path.parts[:2] == ("vindr", "images") and path.parent.name == row.study_id
            assert path.name == f"{row.image_id}.dicom"
        else:
            root = "train_images" if row.dataset == "rsna" else "images"
            assert path.parts[:2] == (row.dataset, root) and path.parent.name == row.patient_id
            assert path.name == f"{row.image_id}.dcm"
    # The three parts hold disjoint patients.
    per_part = images.groupby("dataset")["patient_id"].apply(set)
    assert not (per_part["vindr"] & per_part["rsna"]) and not (per_part["rsna"] & per_part["reports"])


def test_vindr_value_styles(cohort: Path):
    breast = _read(cohort, "vindr/breast-level_annotations.csv")
    finding = _read(cohort, "vindr/finding_annotations.csv")
    assert breast["breast_birads"].str.fullmatch(r"BI-RADS [1-5]").all()
    assert breast["breast_density"].str.fullmatch(r"DENSITY [A-D]").all()
    assert set(breast["split"]) <= {"training", "test"} and set(breast["view_position"]) == {"CC", "MLO"}
    assert breast["height"].dtype.kind == "i" and breast["width"].dtype.kind == "i"
    assert re.fullmatch(r"[0-9a-f]{32}", breast["study_id"].iloc[0])
    cats = finding["finding_categories"].map(ast.literal_eval)
    assert cats.map(lambda c: isinstance(c, list) and len(c) >= 1).all()
    empty = cats.map(lambda c: c == ["No Finding"])
    assert finding.loc[empty, ["xmin", "ymin", "xmax", "ymax", "finding_birads"]].isna().all().all()
    boxed = finding[~empty]
    assert len(boxed) > 0 and boxed["finding_birads"].str.fullmatch(r"BI-RADS [2-5]").all()
    assert (boxed["xmin"] >= 0).all() and (boxed["xmax"] <= boxed["width"] - 1).all()
    assert (boxed["ymin"] >= 0).all() and (boxed["ymax"] <= boxed["height"] - 1).all()
    assert (boxed["xmax"] > boxed["xmin"]).all() and (boxed["ymax"] > boxed["ymin"]).all()
    # Every image has at least one finding row; the breast-level table has exactly one row per image.
    assert set(finding["image_id"]) == set(breast["image_id"]) and breast["image_id"].is_unique


def test_rsna_and_report_values_match_truth(cohort: Path):
    rsna = pd.read_csv(cohort / "rsna/train.csv")
    assert {c: rsna[c].dtype.kind for c in ("site_id", "patient_id", "image_id", "machine_id")} == \
        dict.fromkeys(("site_id", "patient_id", "image_id", "machine_id"), "i")
    assert rsna["age"].dtype.kind == "f" and rsna["difficult_negative_case"].dtype == bool
    assert set(rsna["BIRADS"].dropna()) <= {0.0, 1.0, 2.0} and set(rsna["density"].dropna()) <= set("ABCD")
    truth = _read(cohort, "truth/images.csv").set_index("image_id")
    for _, row in rsna.iterrows():
        t = truth.loc[str(row.image_id)]
        assert row.cancer == t.malignant and row.laterality == t.laterality and row.view == t.view
        assert pd.isna(row.density) or row.density == t.density
        assert row.biopsy >= row.cancer and row.invasive <= row.cancer
        assert row.machine_id in dw.VENDORS[t.vendor].rsna_machine_ids
    reports = _read(cohort, "reports/reports.csv")
    assert reports["FINDINGS"].str.len().min() > 40 and reports["IMPRESSION"].notna().all()
    for _, row in reports.iterrows():
        t = truth.loc[row.image_id]
        assert (row.img_size_row, row.img_size_column) == (t.height, t.width)
        assert row.BIRADS_numeric == max(truth[truth.patient_id == row.patient_id]["birads"])
        assert f"BI-RADS {row.BIRADS_numeric}" in row.IMPRESSION


def test_every_dicom_decodes_to_declared_shape(cohort: Path):
    images = _read(cohort, "truth/images.csv")
    syntaxes = set()
    for _, row in images.iterrows():
        ds = pydicom.dcmread(cohort / row.path)
        assert ds.file_meta.MediaStorageSOPClassUID == dw.MG_FOR_PRESENTATION == ds.SOPClassUID
        assert ds.Modality == "MG" and ds.PresentationIntentType == "FOR PRESENTATION"
        assert ds.ImageLaterality == row.laterality and ds.ViewPosition == row.view
        assert ds.PatientID == row.patient_id and str(ds.PatientName).startswith(dw.PHI_NAME_PREFIX)
        assert ds.PatientBirthDate.endswith(dw.PHI_BIRTH_MONTHDAY) and ds.Manufacturer == row.manufacturer
        assert ds.pixel_array.shape == (row.height, row.width) == (ds.Rows, ds.Columns)
        assert ds.pixel_array.max() <= (1 << ds.BitsStored) - 1
        assert str(ds.file_meta.TransferSyntaxUID) == row.transfer_syntax
        syntaxes.add(row.transfer_syntax)
    assert {"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.1"} <= syntaxes
    assert set(images["photometric"]) == {"MONOCHROME1", "MONOCHROME2"}
    assert set(images["bits_stored"]) == {12, 14, 16}


@pytest.mark.parametrize("compression", dw.COMPRESSIONS)
@pytest.mark.parametrize("vendor", ["fuji", "siemens"])
def test_writer_round_trips_pixels(tmp_path: Path, compression: str, vendor: str):
    v = dw.VENDORS[vendor]
    rng = np.random.default_rng(1)
    breast = np.zeros((64, 48), bool)  # OpenJPEG needs at least 32 px per side for its default 6 resolutions
    breast[5:55, :30] = True
    stored = dw.to_stored(rng.uniform(0, 1, breast.shape).astype(np.float32), breast, v)
    meta = dw.DicomMeta("P1", dw.PHI_NAME_PREFIX + "T1", "19500707", 70, dw.uid_from(1), dw.uid_from(2),
                        dw.uid_from(3), "20200101", "L", "CC", "ACC1", 50.0)
    syntax = dw.write_vendor_dicom(tmp_path / "x.dcm", stored, meta, v, 0.5, dw.window_values(stored, breast, v), compression)
    ds = pydicom.dcmread(tmp_path / "x.dcm")
    assert str(ds.file_meta.TransferSyntaxUID) == syntax
    np.testing.assert_array_equal(ds.pixel_array, stored)
    if v.voi == "lut":  # the sampled VOI LUT applies and is monotone in the stored value
        from pydicom.pixels import apply_voi_lut

        out = apply_voi_lut(ds.pixel_array, ds)
        order = np.argsort(stored.ravel())
        assert out.max() <= 4095 and np.all(np.diff(out.ravel()[order].astype(np.int64)) >= 0)
    # MONOCHROME1: air (outside the breast) is stored bright; MONOCHROME2 stores it dark.
    air = int(stored[0, 0])
    assert (air > v.max_value // 2) == (v.photometric == "MONOCHROME1")


def test_boxes_sit_on_visible_lesions(cohort: Path):
    images = _read(cohort, "truth/images.csv").set_index("image_id")
    lesions = _read(cohort, "truth/lesions.csv")
    contrasts = {"Mass": [], "Suspicious Calcification": []}
    for _, les in lesions[lesions["finding"].isin(contrasts)].iterrows():
        img = images.loc[les.image_id]
        arr = _pixels(cohort, img.path)
        x0, y0, x1, y1 = (int(round(v)) for v in (les.xmin, les.ymin, les.xmax, les.ymax))
        assert 0 <= x0 < x1 < img.width and 0 <= y0 < y1 < img.height
        assert x0 <= les.cx <= x1 and y0 <= les.cy <= y1
        pad = max(4, (x1 - x0) // 2)
        outer = arr[max(0, y0 - pad):y1 + pad + 1, max(0, x0 - pad):x1 + pad + 1].astype(np.float64)
        inner = arr[y0:y1 + 1, x0:x1 + 1].astype(np.float64)
        ring_mean = (outer.sum() - inner.sum()) / max(outer.size - inner.size, 1)
        stat = inner.mean() if les.finding == "Mass" else inner.max()
        contrasts[les.finding].append((stat - ring_mean) / ((1 << int(img.bits_stored)) - 1))
    assert len(contrasts["Mass"]) >= 2 and len(contrasts["Suspicious Calcification"]) >= 2
    assert min(contrasts["Mass"]) > 0.01                  # masses are brighter than their surroundings
    assert min(contrasts["Suspicious Calcification"]) > 0.05  # the brightest speck stands out


def test_cc_and_mlo_show_each_lesion_consistently(cohort: Path):
    images = _read(cohort, "truth/images.csv").set_index("image_id")
    lesions = _read(cohort, "truth/lesions.csv")
    for (_, _, _), group in lesions.groupby(["patient_id", "laterality", "lesion_id"]):
        assert sorted(group["view"]) == ["CC", "MLO"]
        depth = {}
        for _, les in group.iterrows():
            img = images.loc[les.image_id]
            depth[les.view] = abs(les.cx - img.nipple_col) * img.pixel_spacing_mm
            if les.view == "CC" and abs(les.lat_mm) > 3:  # CC shows lateral up
                assert np.sign(img.nipple_row - les.cy) == np.sign(les.lat_mm)
        assert abs(depth["CC"] - depth["MLO"]) < 1.0 and abs(depth["CC"] - group["back_mm"].iloc[0]) < 1.0


def test_quotas_follow_prevalence_and_density():
    cfg = cfgmod.resolve_config("smoke", n_patients=500, prevalence="mass=0.3,calcification=0.2,distortion=0.05")
    tasks = syn.plan_cohort(cfg, seed=3)
    for part in cfgmod.PARTS:
        part_tasks = [t for t in tasks if t["part"] == part]
        breasts = [f for t in part_tasks for f in t["findings"].values()]
        assert len(breasts) == 1000
        assert sum("Mass" in f for f in breasts) == 300
        assert sum("Suspicious Calcification" in f for f in breasts) == 200
        assert sum("Architectural Distortion" in f for f in breasts) == 50
        assert pd.Series([t["density"] for t in part_tasks]).value_counts().to_dict() == dict.fromkeys("ABCD", 125)
    vindr = [t for t in tasks if t["part"] == "vindr"]
    assert sum(t["split"] == "test" for t in vindr) == 100


def test_density_classes_differ_in_dense_area(cohort: Path):
    images = _read(cohort, "truth/images.csv")
    means = images.groupby("density")["dense_fraction"].mean()
    assert list(means.index) == list("ABCD") and means.is_monotonic_increasing
    assert means["A"] < 0.2 and means["D"] > 0.6


def _hash_tree(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name != "cohort.json":
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def test_same_seed_same_bytes_any_workers(tmp_path: Path):
    kwargs = dict(preset="smoke", n_patients=1, image_scale=0.05, progress=False)
    syn.make_cohort(tmp_path / "a", seed=7, workers=1, **kwargs)
    syn.make_cohort(tmp_path / "b", seed=7, workers=2, **kwargs)
    syn.make_cohort(tmp_path / "c", seed=8, workers=1, **kwargs)
    assert not list(tmp_path.glob(".*partial*"))  # built in a private folder, then moved into place
    assert _hash_tree(tmp_path / "a") == _hash_tree(tmp_path / "b")
    assert _hash_tree(tmp_path / "a") != _hash_tree(tmp_path / "c")
    assert (tmp_path / "a" / "truth" / "images.csv").read_bytes() != \
        (tmp_path / "c" / "truth" / "images.csv").read_bytes()


def _sentences(text: str) -> list[str]:
    return [s.strip().lower() for s in re.split(r"(?<=\.)\s+", text) if s.strip()]


def _negated(sentence: str) -> bool:
    return any(re.search(rf"\b{word}\b", sentence) for word in NEGATION_WORDS)


def _side_mentions(findings: str) -> set[tuple[str, str]]:
    """(side, finding kind) pairs stated positively in a FINDINGS text."""
    out = set()
    for sentence in _sentences(findings):
        if _negated(sentence):
            continue
        sides = {s for s in ("left", "right") if re.search(rf"\b{s}\b", sentence)}
        if not sides and re.search(r"\bboth breasts\b|\bbilateral", sentence):
            continue  # a statement about both breasts (density, technique), not a finding
        for kind, word in KEYWORDS.items():
            if word not in sentence:
                continue
            if kind == "Suspicious Calcification" and not any(w in sentence for w in SUSPICIOUS_CALC_WORDS):
                continue
            if kind == "Benign Calcification" and any(w in sentence for w in SUSPICIOUS_CALC_WORDS):
                continue
            assert sides, f"finding sentence names no breast: {sentence!r}"
            out |= {(side, kind) for side in sides}
    return out


def test_reports_agree_with_truth(cohort: Path):
    reports = _read(cohort, "reports/reports.csv").drop_duplicates("patient_id")
    lesions = _read(cohort, "truth/lesions.csv")
    lesions = lesions[lesions["dataset"] == "reports"]
    side = {"L": "left", "R": "right"}
    assert len(lesions) > 0
    for _, rep in reports.iterrows():
        truth = {(side[r.laterality], r.finding) for r in lesions[lesions.patient_id == rep.patient_id].itertuples()}
        assert _side_mentions(rep.FINDINGS) == truth, rep.FINDINGS


def test_grammar_variety_and_side_rules():
    rng = np.random.default_rng(0)
    normals = set()
    for i in range(300):
        lesions = {"L": [], "R": []}
        for lat in "LR":
            for k, finding in enumerate(rng.choice(list(KEYWORDS), size=int(rng.integers(0, 3)), replace=False)):
                les = Lesion(k + 1, str(finding), 30.0, 10.0, 5.0, 12.0, seed=i)
                les.shape = {"Mass": "irregular", "Suspicious Calcification": "fine pleomorphic",
                             "Benign Calcification": "vascular"}.get(les.finding, "")
                les.margin = {"Mass": "spiculated", "Suspicious Calcification": "grouped"}.get(les.finding, "")
                les.birads = 2 if les.finding in ("Benign Calcification", "Intramammary Lymph Node") else 4
                les.quadrant, les.depth, les.clock, les.nipple_cm = "upper outer", "middle", 10, 4
                lesions[lat].append(les)
        report = generate_report(rng, 55, str(rng.choice(list("ABCD"))), lesions, 2022)
        expected = {({"L": "left", "R": "right"}[lat], les.finding) for lat in "LR" for les in lesions[lat]}
        assert _side_mentions(report["FINDINGS"]) == expected
        assert report["BIRADS_numeric"] == max([les.birads for lat in "LR" for les in lesions[lat]], default=1)
        if not expected:
            normals.add(report["FINDINGS"])
    assert len(normals) >= 20  # normal reports are not one identical string


def test_ensure_cohort_builds_once_and_checks_user_data(tmp_path: Path, monkeypatch):
    calls = []
    real = syn.make_cohort

    def counting(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(syn, "make_cohort", counting)
    stale = tmp_path / "cohort" / ".smoke.partial-999999999"  # left by a crashed builder (no such pid)
    stale.mkdir(parents=True)
    section = {"preset": "smoke", "seed": 0, "workers": 1, "n_patients": 1, "image_scale": 0.05}
    ctx = SimpleNamespace(data_root=tmp_path / "cohort" / "smoke", is_cohort=True, profile="smoke",
                          params={"num_workers": None}, section=lambda name: dict(section))
    assert syn.ensure_cohort(ctx) == ctx.data_root and len(calls) == 1
    assert not stale.exists()
    syn.ensure_cohort(ctx)
    assert len(calls) == 1                       # same parameters: reused
    section["seed"] = 1
    syn.ensure_cohort(ctx)
    assert len(calls) == 2                       # different parameters: rebuilt
    assert syn.cohort_record(ctx.data_root)["params"]["seed"] == 1

    with pytest.raises(ValueError, match="user data"):
        syn.ensure_cohort(SimpleNamespace(data_root=tmp_path / "real", is_cohort=False))


def test_cohort_section_config_from_profile_and_parameters():
    section = {"preset": None, "seed": 2, "workers": 2, "n_patients": 1, "image_scale": 0.05}
    ctx = SimpleNamespace(profile="smoke", params={"num_workers": None}, section=lambda name: dict(section))
    settings = cfgmod.CohortSectionConfig.from_context(ctx)
    assert (settings.preset, settings.seed, settings.workers) == (None, 2, 2)
    assert settings.overrides() == {"n_patients": 1, "image_scale": 0.05}
    ctx.params["num_workers"] = 1                 # the notebook parameter wins over the section
    assert cfgmod.CohortSectionConfig.from_context(ctx).workers == 1
    section["patients"] = 3
    with pytest.raises(ValueError, match=r"cohort section: unknown setting\(s\) \['patients'\]"):
        cfgmod.CohortSectionConfig.from_context(ctx)


def test_bad_settings_name_the_problem(tmp_path: Path):
    with pytest.raises(ValueError, match="unknown finding 'masses'"):
        cfgmod.resolve_config("smoke", prevalence="masses=0.3")
    with pytest.raises(ValueError, match="unknown vendor"):
        cfgmod.resolve_config("smoke", vendors="acme")
    with pytest.raises(ValueError, match="unknown cohort preset"):
        cfgmod.resolve_config("huge")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a cohort folder"):
        syn.make_cohort(tmp_path / "mine", n_patients=1, progress=False)
    assert (tmp_path / "mine" / "notes.txt").exists()


def test_cli_parses_options(tmp_path: Path):
    summary = syn.main(["--out", str(tmp_path / "c"), "--n-patients", "vindr=1,rsna=0,reports=1", "--image-scale",
                        "0.05", "--vendors", "ge", "--prevalence", "mass=1.0", "--workers", "1", "--quiet"])
    assert summary["patients"] == {"vindr": 1, "reports": 1} and summary["total_images"] == 8
    images = pd.read_csv(tmp_path / "c" / "truth" / "images.csv")
    assert set(images["vendor"]) == {"ge"}
    assert summary["prevalence"]["vindr"]["Mass"] == 1.0


def test_breast_bounds_ignore_burnt_in_text():
    from mammoclip_kit.cohort.figures import breast_bounds

    pixels = np.zeros((100, 60), np.float32)
    pixels[20:90, 0:35] = 0.6          # the breast against the left edge
    pixels[2:8, 50:58] = 1.0           # a burnt-in "L CC" marker in the far corner
    assert breast_bounds(pixels) == ((20, 90), (0, 35))


def test_cohort_metrics_and_figures(cohort: Path):
    import matplotlib

    matplotlib.use("Agg")
    metrics = syn.cohort_metrics(cohort)
    assert metrics["total_images"] == 48 and metrics["preset"] == "smoke" and metrics["cohort_seed"] == 0
    assert set(metrics["density"]["vindr"]) == set("ABCD")
    table = cohort_figures.two_view_table(cohort)
    assert (table["depth CC (mm)"] - table["depth MLO (mm)"]).abs().max() < 1.0
    vendors = cohort_figures.vendor_table(cohort)
    assert set(vendors["bits stored"]) == {12, 14, 16}
    images, lesions = cohort_figures.load_truth(cohort)
    exam = cohort_figures.pick_exam(images, lesions, "reports", "Mass")
    assert (lesions[lesions.patient_id == exam]["finding"] == "Mass").any()
    fig = cohort_figures.show_exam(cohort, exam)
    assert len(fig.axes) == 5
    contrast = cohort_figures.lesion_contrast(cohort, size=(160, 96), per_finding=4)
    masses = contrast[contrast["finding"] == "Mass"]
    assert len(masses) >= 2 and (masses["contrast"] > 0.02).all()  # masses survive the resize to model size
    with pytest.raises(KeyError, match="no patient 'nobody'"):
        cohort_figures.show_exam(cohort, "nobody")


def test_masks_label_each_lesion_inside_its_box(cohort: Path):
    import cv2

    images = _read(cohort, "truth/images.csv").set_index("image_id")
    lesions = _read(cohort, "truth/lesions.csv")
    assert lesions["mask_path"].notna().all()
    for _, les in lesions.iterrows():
        mask = cv2.imread(str(cohort / les.mask_path), cv2.IMREAD_UNCHANGED)
        img = images.loc[les.image_id]
        assert mask.shape == (img.height, img.width) and mask.dtype == np.uint8
        ys, xs = np.nonzero(mask == les.mask_label)
        assert ys.size > 0, f"{les.finding} of {les.image_id} has no mask pixels"
        if les.finding in ("Mass", "Focal Asymmetry", "Intramammary Lymph Node"):
            # The box is drawn around the lesion body: most of the mask lies inside it.
            inside = (xs >= les.xmin) & (xs <= les.xmax) & (ys >= les.ymin) & (ys <= les.ymax)
            assert inside.mean() > 0.6


def test_calcification_scale_enlarges_suspicious_specks_only():
    from mammoclip_kit.cohort.lesions import calcification_particles

    suspicious = Lesion(1, "Suspicious Calcification", 0, 0, 0, 10.0, shape="fine pleomorphic", margin="grouped",
                        seed=7)
    benign = Lesion(2, "Benign Calcification", 0, 0, 0, 3.0, shape="round", seed=7)
    real, big = calcification_particles(suspicious), calcification_particles(suspicious, scale=2.5)
    assert len(real) == len(big) and all(0.15 <= p[3] <= 0.5 for p in real)
    np.testing.assert_allclose([p[3] for p in big], [2.5 * p[3] for p in real])
    np.testing.assert_allclose([p[:3] for p in big], [p[:3] for p in real])   # same positions: same cluster
    assert calcification_particles(benign, scale=2.5) == calcification_particles(benign)
    with pytest.raises(ValueError, match="calcification_scale must be in"):
        cfgmod.resolve_config("smoke", calcification_scale=9)


def test_calcification_contrast_count_extent_exaggerate_suspicious_clusters_only():
    from mammoclip_kit.cohort.lesions import calcification_particles, sample_lesion
    from mammoclip_kit.cohort.phantom import sample_breast, view_geometry

    suspicious = Lesion(1, "Suspicious Calcification", 0, 0, 0, 10.0, shape="fine pleomorphic", margin="grouped",
                        seed=7)
    benign = Lesion(2, "Benign Calcification", 0, 0, 0, 3.0, shape="round", seed=7)
    real = calcification_particles(suspicious)
    bright = calcification_particles(suspicious, contrast=3.0)
    np.testing.assert_allclose([p[4] for p in bright], [3.0 * p[4] for p in real])
    assert [p[:4] for p in bright] == [p[:4] for p in real]          # same specks, only brighter
    many = calcification_particles(suspicious, count=5.0)
    assert len(many) == 5 * len(real) and 10 <= len(real) < 30
    assert calcification_particles(benign, contrast=3.0, count=5.0) == calcification_particles(benign)
    # extent widens the cluster (and the size the report quotes) from the same random draws
    rng_breast = np.random.default_rng(0)
    model = sample_breast(rng_breast, "L", "B", {"pnl": 100.0, "hw": 100.0, "thick": 50.0})
    views = [view_geometry(model, v, 400, 300, 0.5) for v in ("CC", "MLO")]
    sizes = []
    for extent in (1.0, 3.0):
        lesion = sample_lesion(np.random.default_rng(3), "Suspicious Calcification", 1, "L", model.pnl_mm,
                               model.half_width_mm, views, (8.0, 30.0), calcification_extent=extent)
        assert lesion is not None
        sizes.append(lesion.size_mm)
    assert 5.0 <= sizes[0] <= 15.0 and sizes[1] == pytest.approx(3.0 * sizes[0])
    for name in ("calcification_contrast", "calcification_count", "calcification_extent"):
        with pytest.raises(ValueError, match=f"{name} must be in"):
            cfgmod.resolve_config("smoke", **{name: 9})
    assert cfgmod.resolve_config("classroom", calcification_count=5).calcification_count == 5
