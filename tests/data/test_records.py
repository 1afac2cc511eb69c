"""Table builders: schema errors, VinDr / RSNA / report tables, folds, box mapping, read_table and ensure_tables."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from mammoclip_kit.context import RunContext
from mammoclip_kit.data import builders as B
from mammoclip_kit.data import records as R

BREAST_COLUMNS = ["study_id", "series_id", "image_id", "laterality", "view_position", "height", "width",
                  "breast_birads", "breast_density", "split"]


def _png(path: Path, height: int = 20, width: int = 12) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((height, width), 128, np.uint8))


def make_vindr(root: Path, per_view: int = 1, studies: int = 2, pngs: bool = True) -> tuple[Path, Path]:
    """A tiny VinDr folder: ``studies`` exams × 2 breasts × 2 views × ``per_view`` images; study 0's right CC has a
    mass (box), study 1's left MLO a suspicious calcification and an architectural distortion (one box)."""
    vindr, png_dir = root / "vindr", root / "png"
    breast, finding = [], []
    for s in range(studies):
        study = f"st{s}"
        for lat in ("R", "L"):
            for view in ("CC", "MLO"):
                for k in range(per_view):
                    image = f"{study}_{lat}{view}{k}"
                    row = {"study_id": study, "series_id": f"se{s}", "image_id": image, "laterality": lat,
                           "view_position": view, "height": 400, "width": 240, "breast_birads": "BI-RADS 1",
                           "breast_density": f"DENSITY {'ABCD'[s % 4]}", "split": "training" if s % 2 == 0 else "test"}
                    box = dict(finding_categories="['No Finding']", finding_birads=None, xmin=None, ymin=None,
                               xmax=None, ymax=None)
                    if s == 0 and lat == "R" and view == "CC" and k == 0:
                        row["breast_birads"] = "BI-RADS 4"
                        box = dict(finding_categories="['Mass']", finding_birads="BI-RADS 4", xmin=120.0, ymin=100.0,
                                   xmax=180.0, ymax=200.0)
                    if s == 1 and lat == "L" and view == "MLO" and k == 0:
                        box = dict(finding_categories="['Suspicious Calcification', 'Architectural Distortion']",
                                   finding_birads="BI-RADS 4", xmin=24.0, ymin=40.0, xmax=48.0, ymax=80.0)
                    breast.append(row)
                    finding.append({**row, **box})
                    if pngs:
                        _png(png_dir / study / f"{image}.png")
    vindr.mkdir(parents=True)
    pd.DataFrame(breast, columns=BREAST_COLUMNS).to_csv(vindr / "breast-level_annotations.csv", index=False)
    pd.DataFrame(finding).to_csv(vindr / "finding_annotations.csv", index=False)
    return vindr, png_dir


# ---------------------------------------------------------------------------------------------------------------------
# Schema errors


def test_missing_column_names_file_and_column(tmp_path):
    vindr, png_dir = make_vindr(tmp_path)
    csv = vindr / "breast-level_annotations.csv"
    pd.read_csv(csv).drop(columns=["breast_density"]).to_csv(csv, index=False)
    with pytest.raises(R.SchemaError, match=r"breast-level_annotations\.csv: missing column\(s\) breast_density"):
        B.build_vindr(vindr, png_dir)


def test_bad_value_names_file_row_column_and_value(tmp_path):
    vindr, png_dir = make_vindr(tmp_path)
    csv = vindr / "breast-level_annotations.csv"
    df = pd.read_csv(csv)
    df.loc[2, "breast_density"] = "DENSITY E"
    df.to_csv(csv, index=False)
    with pytest.raises(R.SchemaError) as error:
        B.build_vindr(vindr, png_dir)
    message = str(error.value)
    assert "breast-level_annotations.csv, row 3 (line 4), column 'breast_density': value 'DENSITY E'" in message
    assert "DENSITY A" in message


@pytest.mark.parametrize(("column", "value", "expected"), [
    ("finding_categories", "['Tumour']", "column 'finding_categories': unknown finding 'Tumour'"),
    ("finding_categories", "Mass, Calc", "is not a list"),
    ("xmin", "abc", "column 'xmin': value 'abc' is not a number"),
    ("image_id", "nope", "column 'image_id': value 'nope' is not in breast-level_annotations.csv"),
])
def test_finding_table_errors(tmp_path, column, value, expected):
    vindr, png_dir = make_vindr(tmp_path)
    csv = vindr / "finding_annotations.csv"
    df = pd.read_csv(csv, dtype=str)
    df.loc[1, column] = value
    df.to_csv(csv, index=False)
    with pytest.raises(R.SchemaError, match="finding_annotations.csv, row 2 \\(line 3\\)") as error:
        B.build_vindr(vindr, png_dir)
    assert expected in str(error.value)


def test_rsna_and_reports_schema_errors(tmp_path):
    (tmp_path / "rsna").mkdir()
    pd.DataFrame({"patient_id": [1, 2], "image_id": [10, 20], "laterality": ["L", "B"], "view": ["CC", "CC"],
                  "cancer": [0, 1]}).to_csv(tmp_path / "rsna" / "train.csv", index=False)
    with pytest.raises(R.SchemaError, match=r"train\.csv, row 2 \(line 3\), column 'laterality': value 'B'"):
        B.build_rsna(tmp_path / "rsna", tmp_path / "png")
    (tmp_path / "reports").mkdir()
    pd.DataFrame({"patient_id": ["p"], "image_id": ["i"], "laterality": ["L"], "view": ["CC"]}).to_csv(
        tmp_path / "reports" / "reports.csv", index=False)
    with pytest.raises(R.SchemaError, match="reports.csv: missing column.*FINDINGS"):
        B.build_reports(tmp_path / "reports", tmp_path / "png")
    with pytest.raises(FileNotFoundError, match="train.csv: no such file"):
        B.build_rsna(tmp_path / "nowhere", tmp_path / "png")


# ---------------------------------------------------------------------------------------------------------------------
# VinDr


@pytest.mark.parametrize("per_view", [1, 2, 3])
def test_vindr_tables_with_any_number_of_images_per_view(tmp_path, per_view):
    vindr, png_dir = make_vindr(tmp_path, per_view=per_view)
    tables = B.build_vindr(vindr, png_dir, relative_to=tmp_path, n_folds=4)
    images = tables.images
    assert len(images) == 2 * 2 * 2 * per_view
    mass = images.set_index("image_id").loc["st0_RCC0"]
    assert (mass["Mass"], mass["No_Finding"], mass["birads"], mass["density"]) == (1, 0, 4, 0)
    assert mass["png_path"] == "png/st0/st0_RCC0.png"
    assert images["No_Finding"].sum() == len(images) - 2
    assert set(images.loc[images["split"] == "test", "fold"]) == {-1}
    pretrain = tables.pretrain.set_index(["patient_id", "laterality"])
    assert len(pretrain) == 4
    right = pretrain.loc[("st0", "R")]
    assert right["views"] == ["CC", "MLO"]
    assert len(right["CC"]) == per_view and len(right["MLO"]) == per_view
    assert right["CC_findings"] == ["Mass"] and right["MLO_findings"] == ["No Finding"]
    left1 = pretrain.loc[("st1", "L")]
    assert left1["MLO_findings"] == ["Suspicious Calcification", "Architectural Distortion"]
    # one box row per finding of a box, mapped by scaling (no manifest): 240×400 original → 12×20 PNG
    boxes = tables.boxes.sort_values(["image_id", "finding"]).reset_index(drop=True)
    assert list(boxes["finding"]) == ["Mass", "Architectural Distortion", "Suspicious Calcification"]
    assert (boxes["box_mapping"] == "scaled").all()
    np.testing.assert_allclose(boxes.loc[0, ["png_xmin", "png_ymin", "png_xmax", "png_ymax"]].to_numpy(float),
                               [6.0, 5.0, 9.0, 10.0])


def test_box_mapping_uses_the_manifest(tmp_path):
    vindr, png_dir = make_vindr(tmp_path)
    manifest = pd.DataFrame([{"image_id": "st0_RCC0", "patient_id": "st0", "orig_height": 400, "orig_width": 240,
                              "crop_x0": 100, "crop_y0": 40, "crop_x1": 500, "crop_y1": 840, "out_height": 160,
                              "out_width": 96, "scale_x": 0.24, "scale_y": 0.2}])
    manifest.to_csv(png_dir / "manifest.csv", index=False)
    boxes = B.build_vindr(vindr, png_dir).boxes.set_index("image_id")
    mass = boxes.loc["st0_RCC0"]
    # (x − crop_x0) · 96 / 400 and (y − crop_y0) · 160 / 800 for the box (120, 100, 180, 200)
    np.testing.assert_allclose(mass[["png_xmin", "png_ymin", "png_xmax", "png_ymax"]].to_numpy(float),
                               [4.8, 12.0, 19.2, 32.0])
    assert mass["box_mapping"] == "manifest"
    assert (boxes.drop(index="st0_RCC0")["box_mapping"] == "scaled").all()


def test_missing_pngs_are_left_out_and_reported(tmp_path):
    vindr, png_dir = make_vindr(tmp_path)
    os.remove(png_dir / "st0" / "st0_RCC0.png")
    tables = B.build_vindr(vindr, png_dir)
    assert "st0_RCC0" not in set(tables.images["image_id"]) and len(tables.images) == 7
    assert list(tables.dropped["image_id"]) == ["st0_RCC0"] and "no PNG" in tables.dropped["reason"].iloc[0]
    assert "Mass" not in set(tables.boxes["finding"])


# ---------------------------------------------------------------------------------------------------------------------
# RSNA and folds


def test_group_kfold_puts_each_patient_in_one_fold(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for p in range(13):
        for k in range(int(rng.integers(1, 6))):
            rows.append({"site_id": 1, "patient_id": 100 + p, "image_id": 1000 * p + k, "laterality": "LR"[k % 2],
                         "view": ["CC", "MLO"][k // 2 % 2], "age": 60, "cancer": int(p == 3), "density": "B"})
    (tmp_path / "rsna").mkdir()
    pd.DataFrame(rows).to_csv(tmp_path / "rsna" / "train.csv", index=False)
    for row in rows:
        _png(tmp_path / "png" / str(row["patient_id"]) / f"{row['image_id']}.png")
    images = B.build_rsna(tmp_path / "rsna", tmp_path / "png", relative_to=tmp_path, n_folds=4).images
    assert len(images) == len(rows)
    assert images.groupby("patient_id")["fold"].nunique().max() == 1
    assert sorted(images["fold"].unique()) == [0, 1, 2, 3]
    assert images.loc[0, "breast_id"] == "100_L" and images.loc[0, "png_path"] == "png/100/0.png"
    assert list(R.assign_folds(["a", "a"], 4)) == [0, 0]
    assert list(R.assign_folds(["a", "b", "a"], 4)) in ([0, 1, 0], [1, 0, 1])


# ---------------------------------------------------------------------------------------------------------------------
# Reports

REPORT_FINDINGS = ("The breasts are scattered fibroglandular densities. Right breast, upper outer quadrant: "
                   "an irregular mass measuring 14 mm is seen. Left breast: no suspicious calcifications are seen. "
                   "No skin thickening is seen.")
REPORT_IMPRESSION = "BI-RADS 0: additional imaging of the right breast is recommended."


def make_reports(root: Path, free_text: bool = False) -> tuple[Path, Path]:
    rows = []
    for p in ("p1", "p2"):
        for lat in ("R", "L"):
            for view in ("CC", "MLO"):
                image = f"{p}{lat}{view}"
                row = {"patient_id": p, "GENDER": "F", "AGE": 60, "image_id": image, "fold": 0, "view": view,
                       "laterality": lat}
                if free_text:
                    row["REPORT"] = f"HISTORY: screening.\nFINDINGS: {REPORT_FINDINGS}\nIMPRESSION: {REPORT_IMPRESSION}"
                else:
                    row.update(HISTORY="Screening.", FINDINGS=REPORT_FINDINGS, IMPRESSION=REPORT_IMPRESSION)
                rows.append(row)
                _png(root / "png" / p / f"{image}.png")
    (root / "reports").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(root / "reports" / "reports.csv", index=False)
    return root / "reports", root / "png"


@pytest.mark.parametrize("free_text", [False, True])
def test_report_table_per_breast_text_and_augmentation(tmp_path, free_text):
    reports, png_dir = make_reports(tmp_path, free_text)
    table = B.build_reports(reports, png_dir, relative_to=tmp_path, seed=0, progress=False).pretrain
    assert len(table) == 4
    by_breast = table.set_index(["patient_id", "laterality"])
    right, left = by_breast.loc[("p1", "R")], by_breast.loc[("p1", "L")]
    assert right["text"] == [
        "the breasts are scattered fibroglandular densities right breast , upper outer quadrant : an irregular mass "
        "measuring 14 mm is seen no skin thickening is seen",
        "birads 0 : additional imaging of the right breast is recommended"]
    assert left["text"] == [
        "the breasts are scattered fibroglandular densities left breast : no suspicious calcifications are seen "
        "no skin thickening is seen"]
    assert right["CC"] == ["png/p1/p1RCC.png"] and right["views"] == ["CC", "MLO"]
    assert len(right["text_augment"]) == len(right["text"]) and right["text_augment"] != right["text"]
    assert table.groupby("patient_id")["fold"].nunique().max() == 1
    again = B.build_reports(reports, png_dir, relative_to=tmp_path, seed=0, progress=False).pretrain
    assert again["text_augment"].tolist() == table["text_augment"].tolist()
    other = B.build_reports(reports, png_dir, relative_to=tmp_path, seed=1, progress=False).pretrain
    assert other["text_augment"].tolist() != table["text_augment"].tolist()


def test_write_and_read_table_round_trip_lists(tmp_path):
    df = pd.DataFrame({"patient_id": ["007", "8"], "CC": [["a.png", "b.png"], []], "text": [["x y z"], ["p , q"]],
                       "n": [1, 2]})
    path = R.write_table(df, tmp_path / "t.csv")
    back = R.read_table(path)
    assert back["patient_id"].tolist() == ["007", "8"]
    assert back["CC"].tolist() == [["a.png", "b.png"], []] and back["text"].tolist() == [["x y z"], ["p , q"]]
    assert back["n"].tolist() == [1, 2]


# ---------------------------------------------------------------------------------------------------------------------
# ensure_tables


def test_ensure_tables_builds_then_skips_until_inputs_change(tmp_path):
    data_root = tmp_path / "data"
    make_vindr(data_root)
    make_reports(data_root)
    settings = {"tables": {"n_folds": 2, "png_root": {"vindr": "png", "reports": "png"}}}
    ctx = RunContext(profile="smoke", data_root=data_root, output_dir=tmp_path / "runs", device="cpu", seed=0,
                     settings=settings, params={"retrain": False}, is_cohort=False)
    paths = R.ensure_tables(ctx)
    assert set(paths) == {"vindr_images", "vindr_boxes", "vindr_pretrain", "reports_pretrain"}
    counts = R.table_counts(paths)
    assert counts == {"vindr_images": 8, "vindr_boxes": 3, "vindr_pretrain": 4, "reports_pretrain": 4}
    images = R.read_table(paths["vindr_images"])
    assert ctx.abspath(images.loc[0, "png_path"]).is_file()  # outside output_dir: stored as given
    stamps = {name: p.stat().st_mtime_ns for name, p in paths.items()}
    assert R.ensure_tables(ctx) == paths
    assert {name: p.stat().st_mtime_ns for name, p in paths.items()} == stamps
    csv = data_root / "reports" / "reports.csv"
    pd.read_csv(csv).iloc[:4].to_csv(csv, index=False)  # p1 only
    R.ensure_tables(ctx)
    assert R.table_counts(paths)["reports_pretrain"] == 2
    assert paths["vindr_images"].stat().st_mtime_ns == stamps["vindr_images"]
    assert json.loads((ctx.tables_dir / "vindr.params.json").read_text())["params"]["settings"]["n_folds"] == 2
    paths["vindr_boxes"].unlink()          # a table of the group is missing: the group is rebuilt
    R.ensure_tables(ctx)
    assert paths["vindr_boxes"].is_file() and paths["vindr_images"].stat().st_mtime_ns != stamps["vindr_images"]
    stamps = {name: p.stat().st_mtime_ns for name, p in paths.items()}
    ctx.settings["tables"]["n_folds"] = 3  # other settings: every group is rebuilt
    R.ensure_tables(ctx)
    assert all(p.stat().st_mtime_ns != stamps[name] for name, p in paths.items())
    stamps = {name: p.stat().st_mtime_ns for name, p in paths.items()}
    ctx.params["retrain"] = True           # same settings, retrain: rebuilt
    R.ensure_tables(ctx)
    assert all(p.stat().st_mtime_ns != stamps[name] for name, p in paths.items())


def test_tables_config_from_profile_rejects_unknown_settings(tmp_path):
    ctx = RunContext(profile="smoke", data_root=tmp_path, output_dir=tmp_path, device="cpu", seed=0,
                     settings={"tables": {"n_folds": 5, "augment": {"shuffle": False}}}, params={})
    config = R.TablesConfig.from_context(ctx)
    assert config.n_folds == 5 and config.report_config().augment.shuffle is False
    ctx.settings["tables"]["folds"] = 3
    with pytest.raises(ValueError, match=r"tables section: unknown setting\(s\) \['folds'\]"):
        R.TablesConfig.from_context(ctx)


def test_cli_builds_tables_and_reports_schema_errors(tmp_path, capsys):
    from data_prep import build_rsna, build_vindr

    make_vindr(tmp_path / "data")
    paths = build_vindr.main(["--data-root", str(tmp_path / "data"), "--png-root", str(tmp_path / "data" / "png"),
                              "--out", str(tmp_path / "runs" / "tables"), "--n-folds", "2"])
    assert R.table_counts(paths) == {"vindr_images": 8, "vindr_boxes": 3, "vindr_pretrain": 4}
    assert "vindr_images" in capsys.readouterr().out
    (tmp_path / "rsna").mkdir()
    pd.DataFrame({"patient_id": [1], "image_id": [2], "laterality": ["L"], "view": ["CC"]}).to_csv(
        tmp_path / "rsna" / "train.csv", index=False)
    with pytest.raises(SystemExit):
        build_rsna.main(["--data-root", str(tmp_path), "--png-dir", str(tmp_path / "png"), "--out", str(tmp_path / "t")])
    assert "missing column(s) cancer" in capsys.readouterr().err
