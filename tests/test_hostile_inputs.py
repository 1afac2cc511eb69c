"""Hostile-input corpus (issue 16): no command deletes, overwrites or silently corrupts a user's data, and every bad
input gets one clear error line and a non-zero exit.

Everything is generated here in temporary folders: a one-patient cohort, tiny DICOMs (``write_dicom``), PNGs, CSVs,
tiny kit checkpoints (``create_model("smoke")``). CLIs are called through their ``main(argv)``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from data_prep import build_reports, build_rsna, build_vindr, dicom_to_png, make_cohort
from mammoclip_kit.cohort.generate import make_cohort as generate_cohort
from mammoclip_kit.data.dicom import write_dicom

# --------------------------------------------------------------------------------------------------------------------
# helpers


def run_cli(main: Callable, argv: list[str], capsys) -> tuple[int, str, str]:
    """Call a CLI ``main``; returns (exit status, stdout, stderr)."""
    try:
        result = main(argv)
        code = result if isinstance(result, int) else 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def assert_clear_error(code: int, err: str, *needles: str) -> str:
    """Non-zero exit, no traceback, exactly one ``error:`` line that contains every needle; returns that line."""
    assert code != 0, f"exit 0 for a user error; stderr: {err}"
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def phantom(rows: int = 120, cols: int = 80, seed: int = 0) -> np.ndarray:
    """A 12-bit breast-like blob on a black background (enough for both preprocessing modes)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:rows, :cols]
    inside = ((y - rows / 2) / (rows * 0.45)) ** 2 + (x / (cols * 0.8)) ** 2 < 1
    image = np.where(inside, 1500 + rng.normal(0, 200, (rows, cols)), 0)
    return np.clip(image, 0, 4095).astype(np.uint16)


# --------------------------------------------------------------------------------------------------------------------
# shared fixtures: a one-patient cohort, its VinDr PNGs and tables


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hostile") / "cohort"
    generate_cohort(root, preset="smoke", n_patients=1, image_scale=0.05, progress=False, workers=1)
    return root


@pytest.fixture(scope="module")
def vindr_pngs(cohort: Path) -> Path:
    out = cohort.parent / "png_vindr"
    from mammoclip_kit.data.preprocess import find_sources, preprocess_many

    preprocess_many(find_sources(cohort / "vindr" / "images"), out, mode="voi", height=40, width=24, root=cohort,
                    progress=False)
    return out


@pytest.fixture()
def tables(tmp_path: Path, cohort: Path, vindr_pngs: Path, capsys) -> Path:
    """A freshly built VinDr table folder (the user's "good" tables)."""
    out = tmp_path / "tables"
    code, _, err = run_cli(build_vindr.main, ["--data-root", str(cohort), "--png-dir", str(vindr_pngs), "--out",
                                              str(out)], capsys)
    assert code == 0, err
    assert len(pd.read_csv(out / "vindr_images.csv")) > 0
    return out


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
    assert_clear_error(code, err, str(root), "not a generated cohort")
    assert tree_digest(root) == before
    assert not list(tmp_path.glob(".W.partial-*"))


def test_make_cohort_replaces_its_own_cohort_but_not_added_files(tmp_path: Path, capsys):
    root = tmp_path / "C"
    generate_cohort(root, preset="smoke", n_patients=1, image_scale=0.05, progress=False)
    generate_cohort(root, preset="smoke", n_patients=1, image_scale=0.05, seed=1, progress=False)  # replaced: fine
    assert json.loads((root / "cohort.json").read_text())["seed"] == 1
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
