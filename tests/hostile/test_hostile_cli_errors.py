"""Hostile inputs, every CLI: one clear ``error:`` line and a non-zero exit for each user error
(table-driven), and runner parameters checked before any notebook starts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from hostile_helpers import (
    SMOKE_PRETRAIN,
    assert_clear_error,
    copy_part,
    copy_vindr,
    run_cli,
    tree_digest,
)

from data_prep import build_reports, build_rsna, build_vindr, dicom_to_png, make_cohort

# --------------------------------------------------------------------------------------------------------------------
# item 7: one clear line and a non-zero exit for every user error (table-driven)



def _builder(main, data: Path, tmp_path: Path, png_dir: Path | None = None, out: Path | None = None):
    return main, ["--data-root", str(data), "--png-dir", str(png_dir or tmp_path / "png"), "--out",
                  str(out or tmp_path / "tables")]


def case_vindr_csv_0_bytes(t, cohort, pngs):
    data = copy_vindr(cohort, t)
    (data / "vindr" / "breast-level_annotations.csv").write_bytes(b"")
    return _builder(build_vindr.main, data, t, pngs), ["breast-level_annotations.csv", "0 bytes"]


def case_vindr_csv_not_utf8(t, cohort, pngs):
    data = copy_vindr(cohort, t)
    path = data / "vindr" / "finding_annotations.csv"
    path.write_bytes(path.read_bytes().replace(b"Mass", b"M\xe4ss", 1).replace(b"No Finding", b"No F\xefnding", 1))
    return _builder(build_vindr.main, data, t, pngs), ["finding_annotations.csv", "not UTF-8"]


def case_vindr_xmin_not_a_number(t, cohort, pngs):
    data = copy_vindr(cohort, t)
    path = data / "vindr" / "finding_annotations.csv"
    table = pd.read_csv(path, dtype=str)
    table.loc[0, "xmin"] = "left"
    table.to_csv(path, index=False)
    return _builder(build_vindr.main, data, t, pngs), ["finding_annotations.csv", "xmin", "'left'", "not a number"]


def case_rsna_csv_0_bytes(t, cohort, pngs):
    data = copy_part(cohort, t, "rsna")
    (data / "rsna" / "train.csv").write_bytes(b"")
    return _builder(build_rsna.main, data, t), ["train.csv", "0 bytes"]


def case_rsna_csv_not_utf8(t, cohort, pngs):
    data = copy_part(cohort, t, "rsna")
    (data / "rsna" / "train.csv").write_bytes("patient_id,image_id\n".encode("utf-16"))
    return _builder(build_rsna.main, data, t), ["train.csv", "not UTF-8"]


def case_rsna_header_only(t, cohort, pngs):
    data = copy_part(cohort, t, "rsna")
    path = data / "rsna" / "train.csv"
    path.write_text(path.read_text().splitlines()[0] + "\n")
    return _builder(build_rsna.main, data, t), ["train.csv", "no data rows"]


def case_reports_header_only(t, cohort, pngs):
    data = copy_part(cohort, t, "reports")
    path = data / "reports" / "reports.csv"
    path.write_text(path.read_text(encoding="utf-8").splitlines()[0] + "\n")
    return _builder(build_reports.main, data, t), ["reports.csv", "no data rows"]


def case_reports_duplicate_image_id(t, cohort, pngs):
    data = copy_part(cohort, t, "reports")
    path = data / "reports" / "reports.csv"
    table = pd.read_csv(path, dtype=str)
    table.loc[1, "image_id"] = table.loc[0, "image_id"]
    table.to_csv(path, index=False)
    return _builder(build_reports.main, data, t), ["reports.csv", "image_id", "appears more than once"]


def case_tables_out_is_a_file(t, cohort, pngs):
    (t / "tables").write_text("not a folder")
    return _builder(build_vindr.main, cohort, t, pngs, t / "tables"), ["tables"]


def case_tables_out_below_a_file(t, cohort, pngs):
    (t / "file").write_text("not a folder")
    return _builder(build_vindr.main, cohort, t, pngs, t / "file" / "tables"), ["file"]


def case_tables_out_read_only(t, cohort, pngs):
    # /sys is read-only for every user (root included) on Linux; elsewhere its parent (/) is not writable either
    return _builder(build_vindr.main, cohort, t, pngs, Path("/sys/mammoclip-kit-test/tables")), ["/sys"]


def case_dicom_list_0_bytes(t, cohort, pngs):
    (t / "list.csv").write_bytes(b"")
    return (dicom_to_png.main, [str(t / "list.csv"), "--out", str(t / "png")]), ["list.csv", "0 bytes"]


def case_dicom_list_not_utf8(t, cohort, pngs):
    (t / "list.csv").write_bytes(b"path\n\xff\xfeimage.dcm\n")
    return (dicom_to_png.main, [str(t / "list.csv"), "--out", str(t / "png")]), ["list.csv", "not UTF-8"]


def case_dicom_to_png_out_is_a_file(t, cohort, pngs):
    (t / "png").write_text("not a folder")
    return (dicom_to_png.main, [str(cohort / "vindr" / "images"), "--out", str(t / "png"), "--quiet"]), \
        ["png", "is a file"]


def case_dicom_to_png_resume_other_mode(t, cohort, pngs):
    out = Path(shutil.copytree(pngs, t / "png"))
    return (dicom_to_png.main, [str(cohort / "vindr" / "images"), "--out", str(out), "--mode", "paper", "--height",
                                "40", "--width", "24", "--quiet"]), ["mode voi", "mode paper", "--no-resume"]


def case_dicom_to_png_resume_other_size(t, cohort, pngs):
    out = Path(shutil.copytree(pngs, t / "png"))
    return (dicom_to_png.main, [str(cohort / "vindr" / "images"), "--out", str(out), "--height", "50", "--width",
                                "30", "--quiet"]), ["40×24", "50×30", "--no-resume"]




def _pretrain(t, *extra):
    from mammoclip_kit import pretrain

    return pretrain.main, ["--config", str(SMOKE_PRETRAIN), "--output-dir", str(t), *extra]


def case_pretrain_unknown_key(t, cohort, pngs):
    return _pretrain(t, "colour=blue"), ["unknown", "colour"]


def case_pretrain_value_of_wrong_type(t, cohort, pngs):
    return _pretrain(t, "batch_size=abc"), ["batch_size='abc'", "not an int"]


def case_pretrain_invalid_yaml(t, cohort, pngs):
    (t / "bad.yaml").write_text("batch_size: [1,\n")
    from mammoclip_kit import pretrain

    return (pretrain.main, ["--config", str(t / "bad.yaml"), "--output-dir", str(t)]), ["bad.yaml", "not valid YAML"]


def case_make_cohort_bad_n_patients(t, cohort, pngs):
    return (make_cohort.main, ["--out", str(t / "c"), "--n-patients", "abc", "--quiet"]), ["--n-patients", "'abc'"]


def _runner(*parameters):
    from mammoclip_kit.course import runner

    argv = ["--profile", "smoke"]
    for p in parameters:
        argv += ["-p", p]
    return runner.main, argv


def case_runner(parameter: str, expected: list[str]):
    return lambda t, cohort, pngs: (_runner(parameter), expected)


CLEAR_ERRORS = {
    "csv: VinDr breast table 0 bytes": case_vindr_csv_0_bytes,
    "csv: VinDr finding table not UTF-8": case_vindr_csv_not_utf8,
    "csv: VinDr xmin not a number": case_vindr_xmin_not_a_number,
    "csv: RSNA train.csv 0 bytes": case_rsna_csv_0_bytes,
    "csv: RSNA train.csv UTF-16": case_rsna_csv_not_utf8,
    "csv: RSNA train.csv header only": case_rsna_header_only,
    "csv: reports.csv header only": case_reports_header_only,
    "csv: reports.csv duplicate image_id": case_reports_duplicate_image_id,
    "output: tables --out is a file": case_tables_out_is_a_file,
    "output: tables --out below a file": case_tables_out_below_a_file,
    "output: tables --out read-only": case_tables_out_read_only,
    "csv: DICOM list 0 bytes": case_dicom_list_0_bytes,
    "csv: DICOM list not UTF-8": case_dicom_list_not_utf8,
    "output: dicom_to_png --out is a file": case_dicom_to_png_out_is_a_file,
    "png folder: resume with another mode": case_dicom_to_png_resume_other_mode,
    "png folder: resume with another size": case_dicom_to_png_resume_other_size,
    "config: pretrain unknown key": case_pretrain_unknown_key,
    "config: pretrain batch_size=abc": case_pretrain_value_of_wrong_type,
    "config: pretrain YAML invalid": case_pretrain_invalid_yaml,
    "cli: make_cohort --n-patients abc": case_make_cohort_bad_n_patients,
    "runner: max_steps=abc": case_runner("max_steps=abc", ["max_steps='abc'", "expected an integer"]),
    "runner: max_steps=0": case_runner("max_steps=0", ["max_steps=0", "> 0"]),
    "runner: seed=-1": case_runner("seed=-1", ["seed=-1", "≥ 0"]),
    "runner: batch_size=2.5": case_runner("batch_size=2.5", ["batch_size=2.5", "integer"]),
    "runner: retrain=maybe": case_runner("retrain=maybe", ["retrain='maybe'", "True or False"]),
    "runner: device=gpu": case_runner("device=gpu", ["device='gpu'", "torch device"]),
    "runner: profile=huge": case_runner("profile=huge", ["profile='huge'", "smoke"]),
    "runner: unknown parameter lr": case_runner("lr=0.1", ["'lr'", "vocabulary"]),
}


@pytest.mark.parametrize("case", list(CLEAR_ERRORS))
def test_clear_one_line_error(case: str, tmp_path: Path, cohort: Path, vindr_pngs: Path, capsys):
    (main, argv), needles = CLEAR_ERRORS[case](tmp_path, cohort, vindr_pngs)
    before = tree_digest(vindr_pngs)
    code, _, err = run_cli(main, argv, capsys)
    assert_clear_error(code, err, *needles)
    assert tree_digest(vindr_pngs) == before  # the shared inputs are never touched


def test_runner_checks_parameters_before_any_notebook(tmp_path: Path):
    from mammoclip_kit.course import runner

    output = tmp_path / "runs"
    with pytest.raises(ValueError, match="max_steps='abc'"):
        runner.run("smoke", parameters={"max_steps": "abc"}, output=output, prepare=False)
    assert not output.exists()
    assert runner.parse_parameter("max_steps=5") == ("max_steps", 5)
    assert runner.parse_parameter("data_root=2024") == ("data_root", "2024")  # paths stay text
    assert runner.parse_parameter("retrain=false") == ("retrain", False)
    assert runner.parse_parameter("device=cuda:1") == ("device", "cuda:1")


