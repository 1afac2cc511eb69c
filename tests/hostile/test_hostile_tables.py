"""Hostile inputs, table builders: a good table is never replaced by an empty one, boxes are
never mapped without a manifest row, odd box rows are reported and RSNA columns beyond the kit's are left out."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from hostile_helpers import (
    assert_clear_error,
    copy_part,
    copy_vindr,
    run_cli,
    tree_digest,
)

from data_prep import build_rsna, build_vindr

# --------------------------------------------------------------------------------------------------------------------
# item 3: builders never replace a good table with an empty one


def test_misspelt_png_dir_keeps_the_good_tables(tables: Path, cohort: Path, tmp_path: Path, capsys):
    before = tree_digest(tables)
    code, _, err = run_cli(build_vindr.main, ["--data-root", str(cohort), "--png-dir", str(tmp_path / "pgn"),
                                              "--out", str(tables)], capsys)
    assert_clear_error(code, err, "0 rows", "pgn")
    assert tree_digest(tables) == before


def test_header_only_csv_keeps_the_good_tables(tables: Path, cohort: Path, vindr_pngs: Path, tmp_path: Path, capsys):
    data = tmp_path / "data" / "vindr"
    shutil.copytree(cohort / "vindr", data, ignore=shutil.ignore_patterns("images"))
    header = (data / "breast-level_annotations.csv").read_text().splitlines()[0]
    (data / "breast-level_annotations.csv").write_text(header + "\n")
    before = tree_digest(tables)
    code, _, err = run_cli(build_vindr.main, ["--data-root", str(data.parent), "--png-dir", str(vindr_pngs),
                                              "--out", str(tables)], capsys)
    assert_clear_error(code, err, "breast-level_annotations.csv", "no data rows")
    assert tree_digest(tables) == before


# --------------------------------------------------------------------------------------------------------------------
# item 4 (tables): boxes are never mapped without a manifest row unless the folder is a declared release


def test_png_without_manifest_row_is_left_out_not_scaled(cohort: Path, vindr_pngs: Path, tmp_path: Path, capsys):
    png = Path(shutil.copytree(vindr_pngs, tmp_path / "png"))
    boxes_before = pd.read_csv(_build(cohort, vindr_pngs, tmp_path / "t0", capsys) / "vindr_boxes.csv", dtype=str)
    target = boxes_before["image_id"].iloc[0]
    manifest = pd.read_csv(png / "manifest.csv", dtype=str)
    manifest[manifest["image_id"] != target].to_csv(png / "manifest.csv", index=False)
    tables = _build(cohort, png, tmp_path / "t1", capsys)
    boxes = pd.read_csv(tables / "vindr_boxes.csv", dtype=str)
    assert target not in set(boxes["image_id"]) and set(boxes["box_mapping"]) <= {"manifest"}
    assert target not in set(pd.read_csv(tables / "vindr_images.csv", dtype=str)["image_id"])
    dropped = pd.read_csv(tables / "dropped_vindr.csv", dtype=str)
    assert dropped.loc[dropped["image_id"] == target, "reason"].str.contains("no row in").any()
    # declared as an external PNG release, the same folder maps boxes by scaling (and says so)
    code, _, err = run_cli(build_vindr.main, ["--data-root", str(cohort), "--png-root", str(png), "--out",
                                              str(tmp_path / "t2")], capsys)
    assert code == 0, err
    released = pd.read_csv(tmp_path / "t2" / "vindr_boxes.csv", dtype=str)
    assert set(released.loc[released["image_id"] == target, "box_mapping"]) == {"scaled"}


def _build(cohort: Path, png: Path, out: Path, capsys, data: Path | None = None) -> Path:
    code, _, err = run_cli(build_vindr.main, ["--data-root", str(data or cohort), "--png-dir", str(png), "--out",
                                              str(out)], capsys)
    assert code == 0, err
    return out


# --------------------------------------------------------------------------------------------------------------------
# item 8 (tables): odd box rows are reported, RSNA columns beyond the kit's are left out


def test_odd_box_rows_are_reported_not_silently_dropped(cohort: Path, vindr_pngs: Path, tmp_path: Path, capsys):
    data = copy_vindr(cohort, tmp_path)
    path = data / "vindr" / "finding_annotations.csv"
    table = pd.read_csv(path, dtype=str)
    breast = pd.read_csv(data / "vindr" / "breast-level_annotations.csv", dtype=str).set_index("image_id")
    template = table.iloc[0].copy()
    image_id = template["image_id"]
    width, height = float(breast.loc[image_id, "width"]), float(breast.loc[image_id, "height"])

    def row(categories: str, box: list) -> dict:
        values = template.to_dict()
        values.update(finding_categories=categories, xmin=box[0], ymin=box[1], xmax=box[2], ymax=box[3])
        return values

    odd = [row("['Mass']", ["", "", "", ""]),                                      # a finding without its box
           row("[]", [1, 1, 5, 5]),                                                # no categories
           row("['Mass']", [1, 1, "inf", 5]),                                      # non-finite
           row("['Mass']", [width + 10, 1, width + 20, 5]),                        # wholly outside
           row("['Mass']", [width - 4, height - 4, width + 30, height + 30])]       # overhanging
    pd.concat([table, pd.DataFrame(odd)], ignore_index=True).to_csv(path, index=False)
    tables = _build(cohort, vindr_pngs, tmp_path / "tables", capsys, data=data)
    reasons = pd.read_csv(tables / "dropped_vindr.csv", dtype=str)
    reasons = reasons.loc[reasons["dataset"] == "vindr_boxes", "reason"].tolist()
    for expected in ("no box coordinates (all blank) for Mass", "empty finding_categories []",
                     "non-finite box coordinates", "lies outside", "clipped to"):
        assert any(expected in r for r in reasons), (expected, reasons)
    boxes = pd.read_csv(tables / "vindr_boxes.csv")
    assert np.isfinite(boxes[["xmin", "ymin", "xmax", "ymax"]].to_numpy()).all()
    assert (boxes["xmax"] <= width).all() or (boxes["image_id"] != image_id).any()
    clipped = boxes[(boxes["image_id"] == image_id) & (boxes["xmin"] == width - 4)]
    assert clipped[["xmax", "ymax"]].values.tolist() == [[width, height]]




def test_rsna_extra_columns_are_left_out_unless_asked(cohort: Path, rsna_pngs: Path, tmp_path: Path, capsys,
                                                      caplog):
    data = copy_part(cohort, tmp_path, "rsna")
    path = data / "rsna" / "train.csv"
    table = pd.read_csv(path, dtype=str)
    table["PatientName"] = "Doe^Jane"
    table.to_csv(path, index=False)
    argv = ["--data-root", str(data), "--png-dir", str(rsna_pngs)]
    code, _, err = run_cli(build_rsna.main, argv + ["--out", str(tmp_path / "a")], capsys)
    assert code == 0, err
    built = (tmp_path / "a" / "rsna_images.csv").read_text()
    assert "Doe^Jane" not in built and "PatientName" not in built
    assert "PatientName" in caplog.text and "Doe^Jane" not in caplog.text
    code, _, err = run_cli(build_rsna.main, argv + ["--out", str(tmp_path / "b"), "--keep-extra-columns"], capsys)
    assert code == 0 and "PatientName" in (tmp_path / "b" / "rsna_images.csv").read_text()


