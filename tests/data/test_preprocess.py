"""DICOM → PNG: paper-exact parity, MONOCHROME1/2, coordinate maps, broken inputs, resume, PHI, CLI, ensure_pngs."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

from mammoclip_kit.context import RunContext
from mammoclip_kit.data.batch import ensure_pngs, preprocess_many
from mammoclip_kit.data.dicom import read_dicom, write_dicom
from mammoclip_kit.data.preprocess import (
    MANIFEST_COLUMNS,
    PreprocessConfig,
    PreprocessError,
    benchmark,
    longest_run_indices,
    make_phantom,
    original_to_png,
    plot_modes,
    plot_paper_steps,
    plot_voi_steps,
    png_to_original,
    preprocess_file,
    process_image,
)

PHI = {"PatientName": "Qwertyson^Zelda", "PatientBirthDate": "19010203", "InstitutionName": "Hidden Valley Clinic",
       "AccessionNumber": "ACC77889911", "ReferringPhysicianName": "Drx^Nobody", "OtherPatientIDs": "OPID-5566"}


# ----------------------------------------------------------------------------------------------------------------------
# An independent, deliberately plain re-implementation of the published algorithm
# (docs/reference-notes.md §6.1).


def _reference_longest_runs(flags):
    runs, current = [], []
    for i, flag in enumerate(flags):
        if flag:
            current.append(i)
        else:
            if current:
                runs.append(current)
            current = []
    if current:
        runs.append(current)
    if not runs:
        return []
    best = max(len(r) for r in runs)
    return [i for r in runs if len(r) == best for i in r]


def _reference_paper(pixels: np.ndarray, photometric: str, height: int, width: int) -> np.ndarray:
    img = pixels.astype(np.float64)[5:-5, 5:-5]
    if photometric == "MONOCHROME1":
        img = np.max(img) - img
    img = img - np.min(img)
    img = img / np.max(img)
    img = (img * 255).astype(np.uint8)
    t = img.copy()
    t[t <= 40] = 0
    h, w = t.shape
    band = t[h // 2 - int(0.4 * h): h // 2 + int(0.4 * h), :]
    cols = _reference_longest_runs([np.std(band[:, j]) != 0 for j in range(w)])
    t = t[:, cols]
    h2, w2 = t.shape
    band = t[:, w2 // 2 - int(0.4 * w2): w2 // 2 + int(0.4 * w2)]
    rows = _reference_longest_runs([np.std(band[i, :]) != 0 for i in range(h2)])
    roi = img[rows][:, cols]
    return cv2.resize(roi, (width, height), interpolation=cv2.INTER_AREA)


def _phantom_file(path: Path, seed: int, *, photometric: str = "MONOCHROME2", laterality: str = "L",
                  rows: int = 240, cols: int = 160, syntax: str = "1.2.840.10008.1.2.1", air: float = 0.05,
                  **kwargs) -> Path:
    pixels = make_phantom(rows, cols, seed=seed, laterality=laterality, air=air)
    if photometric == "MONOCHROME1":
        pixels = (4095 - pixels).astype(np.uint16)
    return write_dicom(path, pixels, bits_stored=12, photometric=photometric, transfer_syntax=syntax,
                       window=[(2048, 3000)], voi_function="LINEAR_EXACT", **kwargs)


@pytest.mark.parametrize("seed,photometric,laterality,syntax,air", [
    (0, "MONOCHROME2", "L", "1.2.840.10008.1.2.1", 0.05), (1, "MONOCHROME1", "R", JPEG2000Lossless, 0.05),
    (2, "MONOCHROME2", "R", JPEGLSLossless, 0.05), (3, "MONOCHROME1", "L", RLELossless, 0.05),
    # Air just around the threshold (≈ 36 ± 3 of 255): the crop depends on the exact threshold rule.
    (4, "MONOCHROME2", "L", "1.2.840.10008.1.2.1", 0.125), (5, "MONOCHROME1", "R", "1.2.840.10008.1.2.1", 0.135)])
def test_paper_mode_equals_reference_reimplementation(tmp_path, seed, photometric, laterality, syntax, air):
    src = _phantom_file(tmp_path / "p" / "img.dcm", seed, photometric=photometric, laterality=laterality,
                        syntax=syntax, air=air)
    row = preprocess_file(src, tmp_path / "out.png", mode="paper", height=152, width=91)
    ours = cv2.imread(str(tmp_path / "out.png"), cv2.IMREAD_UNCHANGED)
    ds = pydicom.dcmread(src)
    theirs = _reference_paper(ds.pixel_array, ds.PhotometricInterpretation, 152, 91)
    assert ours.dtype == np.uint8 and ours.shape == (152, 91)
    np.testing.assert_array_equal(ours, theirs)
    assert row["crop_x0"] >= 5 and row["crop_y0"] >= 5 and row["mode"] == "paper"


def test_paper_mode_ties_and_flat_regions_match_reference(tmp_path):
    # Two equally long bright column blocks separated by a dark gap: the reference keeps both runs.
    pixels = np.zeros((120, 90), np.uint16)
    pixels[20:100, 10:30] = 3000
    pixels[20:100, 50:70] = 3000
    pixels[30:90, 12:28] += np.arange(16, dtype=np.uint16) * 40
    pixels[30:90, 52:68] += np.arange(16, dtype=np.uint16)[::-1] * 40
    src = write_dicom(tmp_path / "p" / "tie.dcm", pixels, bits_stored=12)
    row = preprocess_file(src, tmp_path / "tie.png", mode="paper", height=60, width=36)
    ours = cv2.imread(str(tmp_path / "tie.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(ours, _reference_paper(pixels, "MONOCHROME2", 60, 36))
    assert row["roi_contiguous"] is False


def test_paper_threshold_is_inclusive_at_40(tmp_path):
    # Stored 0–255 maps to itself in uint8. Columns 50–69 alternate 0/41 (vary after thresholding, so they extend the
    # breast run); columns 70–89 alternate 0/40 (zeroed by "≤ 40", so they end it): the crop is columns 10–69.
    rng = np.random.default_rng(0)
    pixels = np.zeros((100, 100), np.uint16)
    pixels[10:90, 10:50] = rng.integers(100, 255, (80, 40))
    pixels[10:90:2, 50:70] = 41
    pixels[10:90:2, 70:90] = 40
    pixels[0, 0] = 255
    src = write_dicom(tmp_path / "p" / "t.dcm", pixels)
    row = preprocess_file(src, tmp_path / "t.png", mode="paper", height=50, width=30)
    assert (row["crop_x0"], row["crop_x1"]) == (10, 70)
    assert (row["crop_y0"], row["crop_y1"]) == (10, 90)
    ours = cv2.imread(str(tmp_path / "t.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(ours, _reference_paper(pixels, "MONOCHROME2", 50, 30))


def test_longest_run_indices_hand_cases():
    np.testing.assert_array_equal(longest_run_indices(np.array([0, 1, 1, 0, 1, 1, 1, 0], bool)), [4, 5, 6])
    np.testing.assert_array_equal(longest_run_indices(np.array([1, 1, 0, 1, 1], bool)), [0, 1, 3, 4])
    assert longest_run_indices(np.zeros(5, bool)).size == 0


@pytest.mark.parametrize("mode", ["paper", "voi"])
def test_monochrome1_and_monochrome2_give_the_same_png(tmp_path, mode):
    pixels = make_phantom(240, 160, seed=5)
    m2 = write_dicom(tmp_path / "a" / "m2.dcm", pixels, bits_stored=12, window=[(2048, 3000)],
                     voi_function="LINEAR_EXACT")
    m1 = write_dicom(tmp_path / "a" / "m1.dcm", (4095 - pixels).astype(np.uint16), bits_stored=12,
                     photometric="MONOCHROME1", window=[(4095 - 2048, 3000)], voi_function="LINEAR_EXACT")
    r2 = preprocess_file(m2, tmp_path / "m2.png", mode=mode, height=150, width=90)
    r1 = preprocess_file(m1, tmp_path / "m1.png", mode=mode, height=150, width=90)
    a, b = (cv2.imread(str(tmp_path / f"{n}.png"), cv2.IMREAD_UNCHANGED) for n in ("m2", "m1"))
    assert np.abs(a.astype(int) - b.astype(int)).max() <= (0 if mode == "paper" else 1)
    assert [r1[k] for k in ("crop_x0", "crop_y0", "crop_x1", "crop_y1")] == \
        [r2[k] for k in ("crop_x0", "crop_y0", "crop_x1", "crop_y1")]
    assert a.std() > 20  # a real image, not a blank one


@pytest.mark.parametrize("mode", ["paper", "voi"])
def test_box_round_trip_and_position(tmp_path, mode):
    pixels = make_phantom(400, 260, seed=7, marker=False)
    pixels[200:230, 60:100] = 4095  # a bright "lesion" at a known place: x 60–100, y 200–230
    src = write_dicom(tmp_path / "p" / "a.dcm", pixels, bits_stored=12, window=[(2048, 4096)])
    row = preprocess_file(src, tmp_path / "a.png", mode=mode, height=200, width=120)
    png = cv2.imread(str(tmp_path / "a.png"), cv2.IMREAD_UNCHANGED)
    box = original_to_png(np.array([[60, 200, 100, 230]]), row)[0]
    ys, xs = np.nonzero(png >= 250)  # where the lesion landed in the PNG
    assert abs(xs.min() - box[0]) <= 1.5 and abs(xs.max() + 1 - box[2]) <= 1.5
    assert abs(ys.min() - box[1]) <= 1.5 and abs(ys.max() + 1 - box[3]) <= 1.5
    rng = np.random.default_rng(0)
    x0 = rng.uniform(row["crop_x0"], row["crop_x1"] - 20, 50)
    y0 = rng.uniform(row["crop_y0"], row["crop_y1"] - 20, 50)
    boxes = np.stack([x0, y0, x0 + rng.uniform(1, 20, 50), y0 + rng.uniform(1, 20, 50)], axis=1)
    back = png_to_original(original_to_png(boxes, row), row)
    assert np.abs(back - boxes).max() <= 1.0
    assert original_to_png(boxes, row, clip=True)[:, [0, 2]].max() <= row["out_width"]


def test_voi_mode_removes_burnt_in_marker_and_writes_16_bit(tmp_path):
    pixels = make_phantom(400, 240, seed=2, laterality="L", marker=True)
    src = write_dicom(tmp_path / "p" / "a.dcm", pixels, bits_stored=12, window=[(2048, 4096)])
    image = read_dicom(src)
    result = process_image(image, PreprocessConfig(mode="voi", height=200, width=120), keep_steps=True)
    marker = result.steps["markers"]
    assert marker.sum() > 0 and marker[:, :120].sum() == 0  # found, and only in the top-right corner
    assert result.steps["cleaned"][marker].max() == 0
    row = preprocess_file(src, tmp_path / "a16.png", mode="voi", height=200, width=120, bits=16)
    png = cv2.imread(str(tmp_path / "a16.png"), cv2.IMREAD_UNCHANGED)
    assert png.dtype == np.uint16 and png.max() > 255 and row["bits"] == 16
    # The crop keeps the output's 5:3 aspect: no distortion.
    assert row["scale_x"] == pytest.approx(row["scale_y"], rel=0.02)


def test_config_validation():
    assert PreprocessConfig(height=1520, width=None).width == 912
    with pytest.raises(ValueError, match="8-bit"):
        PreprocessConfig(mode="paper", bits=16)
    with pytest.raises(ValueError, match="mode"):
        PreprocessConfig(mode="fancy")
    with pytest.raises(ValueError, match="too small"):
        PreprocessConfig(height=8, width=8)


def _broken_corpus(root: Path) -> dict[str, str]:
    """Good files plus one of each kind of broken input; returns {file stem: expected words in the error}."""
    _phantom_file(root / "good" / "ok1.dcm", 1, attributes=PHI)
    _phantom_file(root / "good" / "ok2.dcm", 2, photometric="MONOCHROME1", attributes=PHI)
    raw = (root / "good" / "ok1.dcm").read_bytes()
    (root / "bad").mkdir()
    (root / "bad" / "truncated.dcm").write_bytes(raw[: len(raw) // 2])
    ds = pydicom.dcmread(root / "good" / "ok1.dcm")
    del ds.PixelData
    ds.save_as(root / "bad" / "nopixels.dcm")
    ds = pydicom.dcmread(root / "good" / "ok1.dcm")
    ds.file_meta.TransferSyntaxUID = "1.2.3.4.99"
    ds.save_as(root / "bad" / "unknownts.dcm")
    write_dicom(root / "bad" / "tiny.dcm", np.array([[7]], np.uint16), attributes=PHI)
    write_dicom(root / "bad" / "constant.dcm", np.full((64, 48), 1234, np.uint16), bits_stored=12, attributes=PHI)
    (root / "bad" / "notdicom.dcm").write_text("Qwertyson^Zelda 19010203: just a text file")
    return {"truncated": "pixel data", "nopixels": "no pixel data", "unknownts": "1.2.3.4.99",
            "tiny": "1×1", "constant": "constant image", "notdicom": "not a DICOM file"}


def _all_files(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in folder.rglob("*") if p.is_file()}


def test_broken_corpus_resume_and_no_phi(tmp_path, capsys):
    expected = _broken_corpus(tmp_path / "data")
    sources = sorted((tmp_path / "data").glob("*/*.dcm"))
    out = tmp_path / "png"
    result = preprocess_many(sources, out, mode="voi", height=100, width=60, root=tmp_path / "data", progress=False)
    assert (result.converted, result.skipped, result.failed) == (2, 0, 6)
    errors = pd.read_csv(out / "errors.csv")
    assert len(errors) == 6 and errors["message"].nunique() == 6
    for stem, words in expected.items():
        message = errors.loc[errors["image_id"] == stem, "message"].item()
        assert words in message, (stem, message)
    assert set(errors["source"]) == {f"bad/{s}.dcm" for s in expected}
    manifest = pd.read_csv(out / "manifest.csv")
    assert list(manifest.columns) == list(MANIFEST_COLUMNS)
    assert sorted(manifest["output"]) == ["good/ok1.png", "good/ok2.png"]
    assert (out / "good" / "ok1.png").is_file() and not list(out.glob(".*"))

    # Resume: a second run writes nothing at all.
    before = _all_files(out)
    again = preprocess_many(sources, out, mode="voi", height=100, width=60, root=tmp_path / "data", progress=False)
    assert (again.converted, again.skipped, again.failed) == (0, 2, 6)
    assert _all_files(out) == before
    # A deleted output is redone, so is a changed source, and different settings redo everything.
    (out / "good" / "ok2.png").unlink()
    third = preprocess_many(sources, out, mode="voi", height=100, width=60, root=tmp_path / "data", progress=False)
    assert (third.converted, third.skipped) == (1, 1)
    _phantom_file(tmp_path / "data" / "good" / "ok1.dcm", 9, attributes=PHI)  # regenerated with other pixels
    redo = preprocess_many(sources, out, mode="voi", height=100, width=60, root=tmp_path / "data", progress=False)
    assert (redo.converted, redo.skipped) == (1, 1)
    # A folder belongs to one (mode, size, bits): resuming it with another is refused; --no-resume redoes it.
    with pytest.raises(PreprocessError, match="--no-resume"):
        preprocess_many(sources, out, mode="paper", height=100, width=60, root=tmp_path / "data", progress=False)
    fourth = preprocess_many(sources, out, mode="paper", height=100, width=60, root=tmp_path / "data",
                             progress=False, resume=False)
    assert (fourth.converted, fourth.skipped) == (2, 0)
    assert set(pd.read_csv(out / "manifest.csv")["mode"]) == {"paper"}

    # No PHI anywhere: PNG bytes, manifest, errors, logs.
    printed = capsys.readouterr()
    blobs = [p.read_bytes() for p in out.rglob("*") if p.is_file()] + [(printed.out + printed.err).encode()]
    for value in PHI.values():
        for blob in blobs:
            assert value.encode() not in blob


def test_workers_give_identical_outputs(tmp_path):
    for i in range(3):
        _phantom_file(tmp_path / "data" / f"p{i}" / f"i{i}.dcm", i, laterality="LR"[i % 2])
    sources = sorted((tmp_path / "data").glob("*/*.dcm"))
    one = preprocess_many(sources, tmp_path / "w1", mode="voi", height=80, width=48, workers=1, progress=False)
    two = preprocess_many(sources, tmp_path / "w2", mode="voi", height=80, width=48, workers=2, progress=False)
    assert one.converted == two.converted == 3
    for rel in one.manifest["output"]:
        assert (tmp_path / "w1" / rel).read_bytes() == (tmp_path / "w2" / rel).read_bytes()
    cols = ["image_id", "crop_x0", "crop_y0", "crop_x1", "crop_y1"]
    pd.testing.assert_frame_equal(one.manifest[cols], two.manifest[cols])


def test_process_image_rejects_blank_images(tmp_path):
    src = write_dicom(tmp_path / "a.dcm", np.full((64, 48), 5, np.uint16))
    with pytest.raises(PreprocessError, match="constant"):
        process_image(read_dicom(src), PreprocessConfig(mode="paper", height=32, width=20))


def test_cli_folder_and_csv(tmp_path, capsys):
    from data_prep.dicom_to_png import main

    for i in range(2):
        _phantom_file(tmp_path / "data" / f"s{i}" / f"im{i}.dicom", i)
    assert main([str(tmp_path / "data"), "--out", str(tmp_path / "o1"), "--mode", "paper", "--height", "60",
                 "--quiet"]) == 0
    manifest = pd.read_csv(tmp_path / "o1" / "manifest.csv")
    assert list(manifest["source"]) == ["s0/im0.dicom", "s1/im1.dicom"] and set(manifest["out_width"]) == {36}
    pd.DataFrame({"path": ["s1/im1.dicom"]}).to_csv(tmp_path / "data" / "list.csv", index=False)
    assert main([str(tmp_path / "data" / "list.csv"), "--out", str(tmp_path / "o2"), "--height", "60", "--bits",
                 "16", "--quiet"]) == 0
    assert cv2.imread(str(tmp_path / "o2" / "s1" / "im1.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    assert main([str(tmp_path / "data"), "--out", str(tmp_path / "o3"), "--mode", "paper", "--bits", "16"]) == 2
    assert "8-bit" in capsys.readouterr().err


def test_ensure_pngs_converts_present_datasets_once(tmp_path, capsys, monkeypatch):
    root = tmp_path / "data"
    _phantom_file(root / "vindr" / "images" / "st1" / "a.dicom", 0)
    _phantom_file(root / "rsna" / "train_images" / "10" / "20.dcm", 1, photometric="MONOCHROME1")
    settings = {"preprocess": {"mode": "voi", "height": 80, "width": 48, "bits": 8, "workers": 1}}
    ctx = RunContext(profile="smoke", data_root=root, output_dir=tmp_path / "runs", device=None, seed=0,
                     settings=settings, params={"num_workers": None, "retrain": False}, is_cohort=False)
    dirs = ensure_pngs(ctx)
    assert set(dirs) == {"vindr", "rsna"}
    assert (dirs["vindr"] / "st1" / "a.png").is_file() and (dirs["rsna"] / "10" / "20.png").is_file()
    recorded = json.loads((dirs["vindr"] / "settings.json").read_text())
    assert recorded["params"]["height"] == 80 and recorded["last_run"]["converted"] == 1
    assert pd.read_csv(dirs["rsna"] / "manifest.csv")["source"].tolist() == ["rsna/train_images/10/20.dcm"]
    before = _all_files(tmp_path / "runs")
    capsys.readouterr()
    ensure_pngs(ctx)
    assert _all_files(tmp_path / "runs") == before
    assert capsys.readouterr().out == ""                  # nothing to do: nothing said (a notebook stays quiet)
    monkeypatch.setenv("MAMMOCLIP_VERBOSE", "1")
    ensure_pngs(ctx)
    assert "skipped 1" in capsys.readouterr().out
    ctx.params["num_workers"] = 2   # how the batch runs, not what it writes: still reused
    ensure_pngs(ctx)
    assert _all_files(tmp_path / "runs") == before
    ctx.settings["preprocess"]["height"] = 100
    ctx.settings["preprocess"]["width"] = 60
    capsys.readouterr()
    ensure_pngs(ctx, datasets=("vindr",))
    assert "converted 1" in capsys.readouterr().out
    assert cv2.imread(str(dirs["vindr"] / "st1" / "a.png"), 0).shape == (100, 60)
    recorded = json.loads((dirs["vindr"] / "settings.json").read_text())
    assert recorded["params"]["height"] == 100 and recorded["last_run"]["workers"] == 2
    ctx.params["retrain"] = True    # same settings, but retrain: converted again
    ensure_pngs(ctx, datasets=("vindr",))
    assert "converted 1" in capsys.readouterr().out


def test_preprocess_config_from_profile_and_parameters():
    settings = {"preprocess": {"mode": "paper", "height": 100, "width": 60, "workers": 3}}
    ctx = RunContext(profile="smoke", data_root=Path("."), output_dir=Path("."), device=None, seed=0,
                     settings=settings, params={"num_workers": None})
    cfg = PreprocessConfig.from_context(ctx)
    assert (cfg.mode, cfg.height, cfg.width, cfg.workers) == ("paper", 100, 60, 3)
    assert "workers" not in cfg.conversion and cfg.conversion["height"] == 100
    ctx.params["num_workers"] = 1
    assert PreprocessConfig.from_context(ctx).workers == 1
    assert PreprocessConfig.from_context(ctx, height=200).height == 200
    settings["preprocess"]["heigth"] = 10
    with pytest.raises(ValueError, match=r"preprocess section: unknown setting\(s\) \['heigth'\]"):
        PreprocessConfig.from_context(ctx)


def test_benchmark_reports_both_modes(tmp_path, capsys):
    for i in range(2):
        _phantom_file(tmp_path / "b" / f"p{i}" / f"i{i}.dcm", i)
    rates = benchmark(["--n", "2", "--source", str(tmp_path / "b"), "--height", "80", "--width", "48"])
    assert set(rates) == {"paper", "voi"} and all(r > 0 for r in rates.values())
    assert "images/s per core" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------------------------------
# On the kit's own synthetic cohort (a tiny one: two patients per dataset part)

TINY = {"preset": "smoke", "seed": 0, "n_patients": {"vindr": 2, "rsna": 2, "reports": 2}}


@pytest.fixture(scope="module")
def tiny_cohort(tmp_path_factory) -> Path:
    from mammoclip_kit.cohort.generate import make_cohort

    root = tmp_path_factory.mktemp("cohort")
    make_cohort(root, preset=TINY["preset"], seed=TINY["seed"], workers=1, progress=False,
                n_patients=TINY["n_patients"])
    return root


def _cohort_files(root: Path) -> list[Path]:
    return sorted(p for pattern in ("vindr/images/*/*.dicom", "rsna/train_images/*/*.dcm", "reports/images/*/*.dcm")
                  for p in root.glob(pattern))


def test_every_cohort_file_decodes_and_paper_mode_matches_reference(tiny_cohort, tmp_path):
    files = _cohort_files(tiny_cohort)
    assert len(files) == 24
    syntaxes = set()
    for src in files:
        image = read_dicom(src)
        syntaxes.add(image.meta["transfer_syntax"])
        assert image.pixels.shape == (image.meta["rows"], image.meta["columns"])
        row = preprocess_file(src, tmp_path / "p.png", mode="paper", height=100, width=60)
        ours = cv2.imread(str(tmp_path / "p.png"), cv2.IMREAD_UNCHANGED)
        theirs = _reference_paper(image.pixels, image.photometric, 100, 60)
        np.testing.assert_array_equal(ours, theirs, err_msg=str(src))
        assert row["crop_x1"] <= image.meta["columns"] - 5 and row["crop_y1"] <= image.meta["rows"] - 5
    compressed = syntaxes - {"1.2.840.10008.1.2.1", "1.2.840.10008.1.2"}
    assert len(compressed) >= 2, syntaxes  # JPEG 2000 and JPEG-LS at least


def test_ensure_pngs_on_cohort_writes_no_phi(tiny_cohort, tmp_path, capsys):
    from mammoclip_kit.cohort.dicom_writer import PHI_NAME_PREFIX

    phi = {PHI_NAME_PREFIX}
    for src in _cohort_files(tiny_cohort):
        ds = pydicom.dcmread(src, stop_before_pixels=True)
        phi.update(str(ds.get(k)) for k in ("PatientName", "PatientBirthDate", "InstitutionName") if ds.get(k))
    assert any(value.startswith(PHI_NAME_PREFIX) for value in phi if value != PHI_NAME_PREFIX)
    settings = {"cohort": dict(TINY), "preprocess": {"mode": "voi", "height": 80, "width": 48, "workers": 1}}
    ctx = RunContext(profile="smoke", data_root=tiny_cohort, output_dir=tmp_path / "runs", device=None, seed=0,
                     settings=settings, params={"num_workers": None, "retrain": False}, is_cohort=True)
    dirs = ensure_pngs(ctx)
    assert set(dirs) == {"vindr", "rsna", "reports"}
    for png_dir in dirs.values():
        manifest = pd.read_csv(png_dir / "manifest.csv")
        assert len(manifest) == 8 and pd.read_csv(png_dir / "errors.csv").empty
        assert all((png_dir / rel).is_file() for rel in manifest["output"])
    printed = capsys.readouterr()
    blobs = [p.read_bytes() for p in (tmp_path / "runs").rglob("*") if p.is_file()]
    blobs.append((printed.out + printed.err).encode())
    for value in phi:
        assert all(value.encode() not in blob for blob in blobs), value


def test_step_figures(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    image = read_dicom(_phantom_file(tmp_path / "p" / "a.dcm", 0))
    assert len(plot_paper_steps(image, 100, 60).axes) == 5
    assert len(plot_voi_steps(image, 100, 60).axes) == 4
    assert len(plot_modes([image, image], 100, 60).axes) == 4


def test_interrupted_run_resumes_from_journal(tmp_path):
    for i in range(3):
        _phantom_file(tmp_path / "data" / f"p{i}" / f"i{i}.dcm", i)
    sources = sorted((tmp_path / "data").glob("*/*.dcm"))
    out = tmp_path / "png"
    first = preprocess_many(sources, out, mode="paper", height=60, width=36, progress=False)
    # Simulate a crash after one image: its journal line survives, the final manifest was never written.
    record = first.manifest.iloc[0].to_dict()
    (out / "manifest.csv").unlink()
    (out / ".manifest.partial.jsonl").write_text(json.dumps(record) + "\n" + '{"truncated": ')
    for rel in first.manifest["output"][1:]:
        (out / rel).unlink()
    second = preprocess_many(sources, out, mode="paper", height=60, width=36, progress=False)
    assert (second.converted, second.skipped, second.failed) == (2, 1, 0)
    assert len(pd.read_csv(out / "manifest.csv")) == 3 and not (out / ".manifest.partial.jsonl").exists()
