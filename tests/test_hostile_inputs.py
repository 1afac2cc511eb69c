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
    assert_clear_error(code, err, str(root), "not a cohort folder")
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


# --------------------------------------------------------------------------------------------------------------------
# item 2: corrupted or non-finite weights never predict; JSON output is valid


@pytest.fixture(scope="module")
def smoke_checkpoint(tmp_path_factory) -> Path:
    from mammoclip_kit.models.factory import create_model

    folder = tmp_path_factory.mktemp("ckpt") / "smoke"
    create_model("smoke").save_pretrained(folder)
    return folder


@pytest.fixture()
def checkpoint(smoke_checkpoint: Path, tmp_path: Path) -> Path:
    """A private copy of the smoke checkpoint that a test may damage."""
    return Path(shutil.copytree(smoke_checkpoint, tmp_path / "ckpt"))


@pytest.fixture(scope="module")
def mammogram_png(tmp_path_factory) -> Path:
    import cv2

    path = tmp_path_factory.mktemp("png") / "P1" / "img1.png"
    path.parent.mkdir(parents=True)
    cv2.imwrite(str(path), (phantom(200, 120) // 16).astype(np.uint8))
    return path


def _predict(argv: list[str], capsys) -> tuple[int, str, str]:
    from mammoclip_kit import predict

    return run_cli(predict.main, argv, capsys)


def test_predict_good_checkpoint_gives_valid_json(checkpoint: Path, mammogram_png: Path, capsys):
    code, out, err = _predict(["--checkpoint", str(checkpoint), "--image", str(mammogram_png), "--json",
                               "--device", "cpu"], capsys)
    assert code == 0, err
    records = json.loads(out)
    assert len(records) == 1 and 0 <= records[0]["mass"] <= 1


def test_predict_refuses_weights_overwritten_in_the_middle(checkpoint: Path, mammogram_png: Path, capsys):
    weights = checkpoint / "model.safetensors"
    data = bytearray(weights.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 4096] = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    weights.write_bytes(bytes(data))
    code, out, err = _predict(["--checkpoint", str(checkpoint), "--image", str(mammogram_png), "--json",
                               "--device", "cpu"], capsys)
    assert_clear_error(code, err, "model.safetensors", "content hash")
    assert out == ""


def test_predict_refuses_nan_weights_even_with_a_matching_hash(checkpoint: Path, mammogram_png: Path, capsys):
    from safetensors.torch import load_file, save_file

    from mammoclip_kit.models.clip import file_sha256

    weights = checkpoint / "model.safetensors"
    state = load_file(str(weights))
    name = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
    state[name] = torch_full_nan(state[name])
    save_file(state, str(weights))
    payload = json.loads((checkpoint / "config.json").read_text())
    payload["weights_sha256"] = file_sha256(weights)  # a consistent but poisoned checkpoint
    (checkpoint / "config.json").write_text(json.dumps(payload))
    code, out, err = _predict(["--checkpoint", str(checkpoint), "--image", str(mammogram_png), "--json",
                               "--device", "cpu"], capsys)
    assert_clear_error(code, err, "non-finite", name)


def torch_full_nan(tensor):
    import torch

    return torch.full_like(tensor, float("nan"))


@pytest.mark.parametrize("damage", ["garbage header", "truncated", "empty", "invalid config.json",
                                    "config.json not an object", "unknown config key"])
def test_damaged_checkpoint_files_give_one_line(checkpoint: Path, mammogram_png: Path, damage: str, capsys):
    weights, config = checkpoint / "model.safetensors", checkpoint / "config.json"
    payload = json.loads(config.read_text())
    payload.pop("weights_sha256")  # as written by an older kit: the loader itself must catch the damage
    config.write_text(json.dumps(payload))
    expected = "model.safetensors"
    if damage == "garbage header":
        weights.write_bytes((8).to_bytes(8, "little") + b"{garbage" + b"\0" * 64)
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "empty":
        weights.write_bytes(b"")
    elif damage == "invalid config.json":
        config.write_text("{\"format\": ")
        expected = "config.json"
    elif damage == "config.json not an object":
        config.write_text("[1, 2]")
        expected = "config.json"
    else:
        payload["config"]["image"]["colour"] = "blue"
        config.write_text(json.dumps(payload))
        expected = "colour"
    code, out, err = _predict(["--checkpoint", str(checkpoint), "--image", str(mammogram_png), "--device", "cpu"],
                              capsys)
    assert_clear_error(code, err, expected)


# --------------------------------------------------------------------------------------------------------------------
# item 8 (predict): bad images are reported and skipped, the batch goes on, exit non-zero at the end


def _write_png(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if mode is not None:
        image = image.convert(mode)
    image.save(path)
    return path


@pytest.mark.parametrize("kind, expected", [("blank", "blank image"), ("one pixel", "too small"),
                                            ("not an image", "not a readable image"), ("missing", "no such image")])
def test_predict_skips_a_bad_image_and_goes_on(checkpoint: Path, mammogram_png: Path, tmp_path: Path, kind: str,
                                               expected: str, capsys):
    bad = tmp_path / f"{kind.replace(' ', '_')}.png"
    if kind == "blank":
        _write_png(bad, np.zeros((200, 120), np.uint8))
    elif kind == "one pixel":
        _write_png(bad, np.full((1, 1), 128, np.uint8))
    elif kind == "not an image":
        bad.write_text("hello")
    code, out, err = _predict(["--checkpoint", str(checkpoint), "--image", str(mammogram_png), str(bad), "--json",
                               "--device", "cpu"], capsys)
    assert code == 1
    assert "Traceback" not in err
    records = json.loads(out)
    assert [r["image"] for r in records] == [str(mammogram_png), str(bad)]
    assert "mass" in records[0] and expected in records[1]["error"]
    assert f"skipped: {bad}" in err and "1 of 2 image(s) failed" in err


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P"])
def test_predict_says_when_a_colour_png_is_converted(checkpoint: Path, tmp_path: Path, mode: str, capsys):
    path = _write_png(tmp_path / f"{mode}.png", (phantom(200, 120) // 16).astype(np.uint8), mode)
    code, out, err = _predict(["--checkpoint", str(checkpoint), "--image", str(path), "--device", "cpu"], capsys)
    assert code == 0, err
    assert f"note: {path}: {mode} image (not grayscale) converted to grey" in err


# --------------------------------------------------------------------------------------------------------------------
# item 6: convert never mixes a new model with an old folder's files


def test_convert_refuses_an_existing_checkpoint_folder(checkpoint: Path, tmp_path: Path, capsys):
    from mammoclip_kit import convert

    (checkpoint / "metrics.json").write_text("{}")
    before = tree_digest(checkpoint)
    released = tmp_path / "b2.tar"
    released.write_bytes(b"not checked before the output folder")
    code, _, err = run_cli(convert.main, [str(released), str(checkpoint)], capsys)
    assert_clear_error(code, err, str(checkpoint), "--force")
    assert tree_digest(checkpoint) == before


def test_convert_refuses_a_folder_that_is_not_a_checkpoint_even_with_force(tmp_path: Path, capsys):
    from mammoclip_kit import convert

    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text("precious")
    released = tmp_path / "b2.tar"
    released.write_bytes(b"x")
    code, _, err = run_cli(convert.main, [str(released), str(data), "--force"], capsys)
    assert_clear_error(code, err, "not a kit checkpoint folder")
    assert (data / "train.csv").read_text() == "precious"


@pytest.mark.parametrize("content, expected", [(b"", "b2.tar"), (b"\0" * 300, "b2.tar")])
def test_convert_bad_tar_gives_one_line(tmp_path: Path, content: bytes, expected: str, capsys):
    from mammoclip_kit import convert

    released = tmp_path / "b2.tar"
    released.write_bytes(content)
    code, _, err = run_cli(convert.main, [str(released), str(tmp_path / "out")], capsys)
    assert_clear_error(code, err, expected)
    assert not (tmp_path / "out").exists()
