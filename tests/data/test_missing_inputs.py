"""Inputs listed in a CSV but absent on disk (issue 17): the left-out image names its DICOM, the missing inputs are
printed as ``missing input:`` lines (also when the tables are reused), and a data root without any input table stops
``ensure_tables`` early with an error naming the root and the files expected."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from mammoclip_kit.context import RunContext
from mammoclip_kit.data import builders as B
from mammoclip_kit.data import records as R
from mammoclip_kit.data.dicom import write_dicom
from mammoclip_kit.data.preprocess import make_phantom

FINDINGS = "Right breast: an irregular mass measuring 14 mm is seen. Left breast: no suspicious calcifications are seen."
IMPRESSION = "BI-RADS 4: biopsy of the right breast is recommended."


def make_report_root(root: Path, dicoms: bool = True) -> Path:
    """``root/reports``: reports.csv of 2 patients × 2 breasts × 2 views, and their tiny DICOMs."""
    rows = []
    for p, patient in enumerate(("p1", "p2")):
        for lat in ("R", "L"):
            for view in ("CC", "MLO"):
                image = f"{patient}{lat}{view}"
                rows.append({"patient_id": patient, "image_id": image, "laterality": lat, "view": view,
                             "FINDINGS": FINDINGS, "IMPRESSION": IMPRESSION})
                if dicoms:
                    write_dicom(root / "reports" / "images" / patient / f"{image}.dcm",
                                make_phantom(96, 64, seed=p, laterality=lat), bits_stored=12)
    (root / "reports").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(root / "reports" / "reports.csv", index=False)
    return root / "reports"


def _context(data_root: Path, out: Path) -> RunContext:
    settings = {"preprocess": {"mode": "voi", "height": 80, "width": 48, "workers": 1}, "tables": {"n_folds": 2}}
    return RunContext(profile="smoke", data_root=data_root, output_dir=out, device="cpu", seed=0, settings=settings,
                      params={"retrain": False}, is_cohort=False)


def test_a_missing_dicom_is_named_and_reported_on_every_call(tmp_path, capsys):
    data_root = tmp_path / "data"
    make_report_root(data_root)
    gone = data_root / "reports" / "images" / "p1" / "p1LMLO.dcm"
    gone.unlink()
    ctx = _context(data_root, tmp_path / "runs")
    paths = R.ensure_tables(ctx)
    dropped = pd.read_csv(ctx.tables_dir / "dropped.csv", dtype=str)
    reasons = dropped.loc[dropped["image_id"] == "p1LMLO", "reason"].tolist()
    assert reasons == [f"DICOM missing: {gone} is not on disk (listed in reports.csv row 4 (line 5))"]
    assert "no PNG at" not in " ".join(dropped["reason"])
    err = capsys.readouterr().err
    assert f"missing input: {gone} is not on disk" in err and "p1LMLO.png" not in err
    assert R.table_counts(paths) == {"reports_pretrain": 4}  # the breast keeps its other view
    # reused tables (nothing changed): the missing input is reported again, not forgotten
    assert R.ensure_tables(ctx) == paths
    assert f"missing input: {gone} is not on disk" in capsys.readouterr().err


def test_a_dicom_that_failed_to_convert_is_named_with_its_error(tmp_path, capsys):
    data_root = tmp_path / "data"
    make_report_root(data_root)
    broken = data_root / "reports" / "images" / "p2" / "p2RCC.dcm"
    broken.write_bytes(b"not a DICOM at all")
    R.ensure_tables(_context(data_root, tmp_path / "runs"))
    dropped = pd.read_csv(tmp_path / "runs" / "tables" / "dropped.csv", dtype=str).set_index("image_id")
    reason = dropped.loc["p2RCC", "reason"]
    assert reason.startswith(f"DICOM {broken} could not be converted (") and "errors.csv" in reason
    assert "missing input:" not in capsys.readouterr().err  # on disk, but broken: not a missing input


def test_a_png_release_without_its_png_keeps_the_png_reason(tmp_path, capsys):
    reports = make_report_root(tmp_path, dicoms=False)
    release = tmp_path / "release"  # no manifest.csv, no png_folder.json: not made from these DICOMs
    import cv2
    import numpy as np

    for row in pd.read_csv(reports / "reports.csv").itertuples():
        if row.image_id != "p2LCC":
            (release / row.patient_id).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(release / row.patient_id / f"{row.image_id}.png"), np.full((20, 12), 99, np.uint8))
    dropped = B.build_reports(reports, release, progress=False).dropped
    assert dropped["reason"].tolist() == [f"no PNG at {release / 'p2' / 'p2LCC.png'}"]
    assert "missing input:" not in capsys.readouterr().err


@pytest.mark.parametrize("layout", ["empty", "parent of the data root", "missing"])
def test_a_wrong_data_root_stops_early_naming_the_root_and_the_expected_files(tmp_path, layout):
    if layout == "parent of the data root":
        make_report_root(tmp_path / "data" / "mine", dicoms=False)
        root = tmp_path / "data"
    elif layout == "empty":
        root = tmp_path / "empty"
        root.mkdir()
    else:
        root = tmp_path / "nowhere"
    ctx = _context(root, tmp_path / "runs")
    with pytest.raises(FileNotFoundError) as caught:
        R.ensure_tables(ctx)
    message = str(caught.value)
    assert f"data_root {root}" in message
    if layout != "missing":
        assert "reports/reports.csv" in message and "vindr/breast-level_annotations.csv" in message
    if layout == "parent of the data root":
        assert "holds mine/" in message
    assert not (tmp_path / "runs" / "png").exists() and not (tmp_path / "runs" / "tables").exists()


def test_a_root_without_inputs_reuses_tables_already_built_and_says_from_where(tmp_path, capsys):
    data_root = tmp_path / "data"
    make_report_root(data_root)
    ctx = _context(data_root, tmp_path / "runs")
    paths = R.ensure_tables(ctx)
    (tmp_path / "elsewhere").mkdir()
    ctx.data_root = tmp_path / "elsewhere"
    capsys.readouterr()
    assert R.ensure_tables(ctx) == paths
    out = capsys.readouterr().out
    assert f"note: data_root {tmp_path / 'elsewhere'} holds none of the input tables" in out
    assert f"from {data_root}" in out
