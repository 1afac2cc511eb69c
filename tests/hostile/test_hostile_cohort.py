"""Hostile inputs, cohort generator: make_cohort never deletes a folder it did not generate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hostile_helpers import (
    assert_clear_error,
    phantom,
    run_cli,
    tree_digest,
)

from data_prep import make_cohort
from mammoclip_kit.cohort.generate import make_cohort as generate_cohort
from mammoclip_kit.data.dicom import write_dicom

# --------------------------------------------------------------------------------------------------------------------
# item 1: make_cohort never deletes a folder it did not generate


def test_make_cohort_refuses_real_data_root(tmp_path: Path, capsys):
    root = tmp_path / "W"
    (root / "vindr" / "images" / "S1").mkdir(parents=True)
    (root / "rsna").mkdir()
    write_dicom(root / "vindr" / "images" / "S1" / "real.dicom", phantom())
    (root / "rsna" / "train.csv").write_text("precious\n")
    before = tree_digest(root)
    code, _, err = run_cli(make_cohort.main,
                           ["--preset", "smoke", "--out", str(root), "--n-patients", "1", "--image-scale", "0.05",
                            "--quiet", "--workers", "1"], capsys)
    assert_clear_error(code, err, str(root), "not a cohort folder")
    assert tree_digest(root) == before
    assert not list(tmp_path.glob(".W.partial-*"))


def test_make_cohort_replaces_its_own_cohort_but_not_added_files(tmp_path: Path, capsys):
    root = tmp_path / "C"
    generate_cohort(root, preset="smoke", n_patients=1, image_scale=0.05, progress=False)
    generate_cohort(root, preset="smoke", n_patients=1, image_scale=0.05, seed=1, progress=False)  # replaced: fine
    assert json.loads((root / "cohort.json").read_text())["params"]["seed"] == 1
    (root / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="notes.txt"):
        generate_cohort(root, preset="smoke", n_patients=1, image_scale=0.05, progress=False)
    assert (root / "notes.txt").read_text() == "mine"


def test_make_cohort_out_is_a_file(tmp_path: Path, capsys):
    target = tmp_path / "file.txt"
    target.write_text("keep")
    code, _, err = run_cli(make_cohort.main,
                           ["--preset", "smoke", "--out", str(target), "--quiet"], capsys)
    assert_clear_error(code, err, str(target))
    assert target.read_text() == "keep"

