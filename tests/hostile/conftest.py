"""Fixtures of the hostile-input tests: a one-patient cohort, its VinDr and RSNA PNGs, a freshly built VinDr table
folder, a smoke checkpoint (and a private copy a test may damage) and a mammogram-like PNG."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hostile_helpers import (
    phantom,
    run_cli,
)

from data_prep import build_vindr
from mammoclip_kit.cohort.generate import make_cohort as generate_cohort


@pytest.fixture(scope="session")
def cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hostile") / "cohort"
    generate_cohort(root, preset="smoke", n_patients=1, image_scale=0.05, progress=False, workers=1)
    return root


@pytest.fixture(scope="session")
def vindr_pngs(cohort: Path) -> Path:
    out = cohort.parent / "png_vindr"
    from mammoclip_kit.data.batch import find_sources, preprocess_many

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



@pytest.fixture(scope="session")
def rsna_pngs(cohort: Path) -> Path:
    from mammoclip_kit.data.batch import find_sources, preprocess_many

    out = cohort.parent / "png_rsna"
    preprocess_many(find_sources(cohort / "rsna" / "train_images"), out, mode="voi", height=40, width=24,
                    root=cohort, progress=False)
    return out


@pytest.fixture(scope="session")
def smoke_checkpoint(tmp_path_factory) -> Path:
    from mammoclip_kit.models.factory import create_model

    folder = tmp_path_factory.mktemp("ckpt") / "smoke"
    create_model("smoke").save_pretrained(folder)
    return folder


@pytest.fixture()
def checkpoint(smoke_checkpoint: Path, tmp_path: Path) -> Path:
    """A private copy of the smoke checkpoint that a test may damage."""
    return Path(shutil.copytree(smoke_checkpoint, tmp_path / "ckpt"))


@pytest.fixture(scope="session")
def mammogram_png(tmp_path_factory) -> Path:
    import cv2

    path = tmp_path_factory.mktemp("png") / "P1" / "img1.png"
    path.parent.mkdir(parents=True)
    cv2.imwrite(str(path), (phantom(200, 120) // 16).astype(np.uint8))
    return path
