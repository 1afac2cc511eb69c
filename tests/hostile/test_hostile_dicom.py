"""Hostile inputs, DICOM → PNG: bad files are reported per file, the batch goes on, nothing identifying
leaks, a PNG never outlives its manifest row."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from hostile_helpers import (
    phantom,
    run_cli,
)

from data_prep import dicom_to_png
from mammoclip_kit.data.dicom import write_dicom

# --------------------------------------------------------------------------------------------------------------------
# DICOM: bad files are reported per file, the batch goes on, nothing identifying leaks

PHI = {"PatientName": "Doe^Jane", "PatientID": "PHI-7731"}


def _raw_window_centre(path: Path, text: bytes) -> None:
    import pydicom
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    ds = pydicom.dcmread(path)
    ds[0x00281050] = RawDataElement(Tag(0x00281050), "DS", len(text), text, 0, False, True)
    ds.save_as(path)


def _huge_declared(path: Path) -> None:
    import pydicom

    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns = 60000, 60000
    ds.save_as(path)


@pytest.fixture()
def hostile_dicoms(tmp_path: Path) -> Path:
    folder = tmp_path / "dicoms" / "P1"
    write_dicom(folder / "good.dcm", phantom(), window=[(2000, 3000)], attributes=PHI)
    write_dicom(folder / "window.dcm", phantom(seed=1), window=[(2000, 3000)], attributes=PHI)
    _raw_window_centre(folder / "window.dcm", b"abcd")
    write_dicom(folder / "huge.dcm", phantom(seed=2), transfer_syntax="1.2.840.10008.1.2.5", attributes=PHI)
    _huge_declared(folder / "huge.dcm")
    (folder / "empty.dcm").write_bytes(b"")
    (folder / "text.dcm").write_text("PatientName Doe^Jane\n")
    return folder.parent


EXPECTED_DICOM_ERRORS = {"window": "WindowCenter: value 'abcd' is not a number",
                         "huge": "declared size 60000 × 60000", "empty": "", "text": "not a DICOM file"}


def test_dicom_batch_reports_each_bad_file_and_converts_the_rest(hostile_dicoms: Path, tmp_path: Path, capsys):
    out = tmp_path / "png"
    code, stdout, err = run_cli(dicom_to_png.main, [str(hostile_dicoms), "--out", str(out), "--height", "40",
                                                    "--width", "24", "--quiet"], capsys)
    assert code == 0 and "Traceback" not in err
    assert (out / "P1" / "good.png").is_file()
    errors = pd.read_csv(out / "errors.csv", dtype=str)
    assert set(errors["image_id"]) == set(EXPECTED_DICOM_ERRORS)
    for image_id, expected in EXPECTED_DICOM_ERRORS.items():
        message = errors.loc[errors["image_id"] == image_id, "message"].item()
        assert expected in message and "\n" not in message
    blobs = [p.read_bytes() for p in out.rglob("*") if p.is_file()] + [(stdout + err).encode()]
    for value in PHI.values():
        assert not any(value.encode() in blob for blob in blobs)


@pytest.mark.parametrize("name", ["window", "huge"])
def test_hostile_dicom_header_is_one_line_for_a_single_file(hostile_dicoms: Path, tmp_path: Path, name: str):
    from mammoclip_kit.data.dicom import DicomError
    from mammoclip_kit.data.preprocess import preprocess_file

    with pytest.raises(DicomError) as caught:
        preprocess_file(hostile_dicoms / "P1" / f"{name}.dcm", tmp_path / "x.png", height=40, width=24)
    assert str(caught.value).startswith(str(hostile_dicoms / "P1" / f"{name}.dcm"))
    assert EXPECTED_DICOM_ERRORS[name] in str(caught.value)
    assert not (tmp_path / "x.png").exists()


def test_file_that_now_fails_loses_its_stale_png(tmp_path: Path, capsys):
    source = tmp_path / "dicoms" / "P1" / "img.dcm"
    write_dicom(source, phantom())
    out = tmp_path / "png"
    argv = [str(tmp_path / "dicoms"), "--out", str(out), "--height", "40", "--width", "24", "--quiet"]
    assert run_cli(dicom_to_png.main, argv, capsys)[0] == 0
    assert (out / "P1" / "img.png").is_file()
    source.write_bytes(source.read_bytes()[:200])  # the source is now truncated
    assert run_cli(dicom_to_png.main, argv, capsys)[0] == 0
    assert not (out / "P1" / "img.png").exists()
    assert pd.read_csv(out / "manifest.csv").empty
    assert pd.read_csv(out / "errors.csv", dtype=str)["image_id"].tolist() == ["img"]


def test_no_resume_into_a_folder_of_another_setting_removes_the_old_pngs(tmp_path: Path, capsys):
    for i in range(2):
        write_dicom(tmp_path / "dicoms" / "P1" / f"img{i}.dcm", phantom(seed=i))
    out = tmp_path / "png"
    base = [str(tmp_path / "dicoms"), "--out", str(out), "--width", "24", "--quiet"]
    assert run_cli(dicom_to_png.main, base + ["--height", "40"], capsys)[0] == 0
    (tmp_path / "dicoms" / "P1" / "img1.dcm").unlink()
    assert run_cli(dicom_to_png.main, base + ["--height", "50", "--no-resume"], capsys)[0] == 0
    assert sorted(p.name for p in out.rglob("*.png")) == ["img0.png"]  # img1's 40-row PNG did not survive
    assert json.loads((out / "png_folder.json").read_text())["height"] == 50


def test_burned_in_annotation_is_flagged_and_can_be_skipped(tmp_path: Path, capsys):
    write_dicom(tmp_path / "dicoms" / "P1" / "plain.dcm", phantom())
    write_dicom(tmp_path / "dicoms" / "P1" / "burned.dcm", phantom(seed=3), attributes={"BurnedInAnnotation": "YES"})
    argv = [str(tmp_path / "dicoms"), "--height", "40", "--width", "24", "--quiet"]
    code, out, err = run_cli(dicom_to_png.main, argv + ["--out", str(tmp_path / "a")], capsys)
    assert code == 0 and "warning: 1 image(s) have BurnedInAnnotation = YES" in err
    assert "1 flagged BurnedInAnnotation = YES" in out  # the batch summary says it too (notebooks print only that)
    manifest = pd.read_csv(tmp_path / "a" / "manifest.csv", dtype=str).set_index("image_id")
    assert manifest.loc["burned", "burned_in_annotation"] == "YES"
    assert manifest.loc["plain", "burned_in_annotation"] != "YES"
    code, _, err = run_cli(dicom_to_png.main, argv + ["--out", str(tmp_path / "b"), "--skip-burned-in"], capsys)
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "b").rglob("*.png")) == ["plain.png"]
    errors = pd.read_csv(tmp_path / "b" / "errors.csv", dtype=str)
    assert errors["image_id"].tolist() == ["burned"] and errors["error"].tolist() == ["BurnedInAnnotation"]


