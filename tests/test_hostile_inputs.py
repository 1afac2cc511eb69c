"""Hostile-input corpus (issue 16): no command deletes, overwrites or silently corrupts a user's data, and every bad
input gets one clear error line and a non-zero exit.

Everything is generated here in temporary folders: a one-patient cohort, tiny DICOMs (``write_dicom``), PNGs, CSVs,
tiny kit checkpoints (``create_model("smoke")``). CLIs are called through their ``main(argv)``.
"""

from __future__ import annotations

import hashlib
import json
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


# --------------------------------------------------------------------------------------------------------------------
# item 7: one clear line and a non-zero exit for every user error (table-driven)


def _copy_vindr(cohort: Path, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(cohort / "vindr", data / "vindr", ignore=shutil.ignore_patterns("images"))
    return data


def _copy_part(cohort: Path, tmp_path: Path, part: str) -> Path:
    data = tmp_path / "data"
    source = cohort / part
    (data / part).mkdir(parents=True)
    for csv_file in source.glob("*.csv"):
        shutil.copy(csv_file, data / part / csv_file.name)
    return data


def _builder(main, data: Path, tmp_path: Path, png_dir: Path | None = None, out: Path | None = None):
    return main, ["--data-root", str(data), "--png-dir", str(png_dir or tmp_path / "png"), "--out",
                  str(out or tmp_path / "tables")]


def case_vindr_csv_0_bytes(t, cohort, pngs):
    data = _copy_vindr(cohort, t)
    (data / "vindr" / "breast-level_annotations.csv").write_bytes(b"")
    return _builder(build_vindr.main, data, t, pngs), ["breast-level_annotations.csv", "0 bytes"]


def case_vindr_csv_not_utf8(t, cohort, pngs):
    data = _copy_vindr(cohort, t)
    path = data / "vindr" / "finding_annotations.csv"
    path.write_bytes(path.read_bytes().replace(b"Mass", b"M\xe4ss", 1).replace(b"No Finding", b"No F\xefnding", 1))
    return _builder(build_vindr.main, data, t, pngs), ["finding_annotations.csv", "not UTF-8"]


def case_vindr_xmin_not_a_number(t, cohort, pngs):
    data = _copy_vindr(cohort, t)
    path = data / "vindr" / "finding_annotations.csv"
    table = pd.read_csv(path, dtype=str)
    table.loc[0, "xmin"] = "left"
    table.to_csv(path, index=False)
    return _builder(build_vindr.main, data, t, pngs), ["finding_annotations.csv", "xmin", "'left'", "not a number"]


def case_rsna_csv_0_bytes(t, cohort, pngs):
    data = _copy_part(cohort, t, "rsna")
    (data / "rsna" / "train.csv").write_bytes(b"")
    return _builder(build_rsna.main, data, t), ["train.csv", "0 bytes"]


def case_rsna_csv_not_utf8(t, cohort, pngs):
    data = _copy_part(cohort, t, "rsna")
    (data / "rsna" / "train.csv").write_bytes("patient_id,image_id\n".encode("utf-16"))
    return _builder(build_rsna.main, data, t), ["train.csv", "not UTF-8"]


def case_rsna_header_only(t, cohort, pngs):
    data = _copy_part(cohort, t, "rsna")
    path = data / "rsna" / "train.csv"
    path.write_text(path.read_text().splitlines()[0] + "\n")
    return _builder(build_rsna.main, data, t), ["train.csv", "no data rows"]


def case_reports_header_only(t, cohort, pngs):
    data = _copy_part(cohort, t, "reports")
    path = data / "reports" / "reports.csv"
    path.write_text(path.read_text(encoding="utf-8").splitlines()[0] + "\n")
    return _builder(build_reports.main, data, t), ["reports.csv", "no data rows"]


def case_reports_duplicate_image_id(t, cohort, pngs):
    data = _copy_part(cohort, t, "reports")
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


SMOKE_PRETRAIN = Path(__file__).resolve().parents[1] / "configs" / "pretrain" / "smoke.yaml"


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
    data = _copy_vindr(cohort, tmp_path)
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


@pytest.fixture(scope="module")
def rsna_pngs(cohort: Path) -> Path:
    from mammoclip_kit.data.preprocess import find_sources, preprocess_many

    out = cohort.parent / "png_rsna"
    preprocess_many(find_sources(cohort / "rsna" / "train_images"), out, mode="voi", height=40, width=24,
                    root=cohort, progress=False)
    return out


def test_rsna_extra_columns_are_left_out_unless_asked(cohort: Path, rsna_pngs: Path, tmp_path: Path, capsys,
                                                      caplog):
    data = _copy_part(cohort, tmp_path, "rsna")
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


# --------------------------------------------------------------------------------------------------------------------
# item 5: one pretraining run per output folder; a resume keeps its config unless asked


def test_second_pretraining_run_into_a_locked_folder_is_refused(tmp_path: Path, capsys):
    from mammoclip_kit.train.checkpoint import lock_output

    sys_path_train()
    from test_pipeline import _tables

    _tables(tmp_path, n=8)
    out = tmp_path / "checkpoints" / "clip"
    from mammoclip_kit import pretrain

    with lock_output(out):
        before = tree_digest(out)
        code, _, err = run_cli(pretrain.main, ["--config", str(SMOKE_PRETRAIN), "--variant", "clip", "--output-dir",
                                               str(tmp_path), "--out", str(out), "image_size=[48,32]", "max_steps=1",
                                               "epochs=1", "batch_size=2"], capsys)
        assert_clear_error(code, err, str(out), "another training run")
        assert tree_digest(out) == before


def sys_path_train() -> None:
    import sys

    folder = str(Path(__file__).parent / "train")
    if folder not in sys.path:
        sys.path.insert(0, folder)


def test_resume_with_another_config_is_refused_unless_allowed(tmp_path: Path):
    sys_path_train()
    from tiny_model import TinyClip, make_pairs

    from mammoclip_kit.data.datasets import ImageTextDataset
    from mammoclip_kit.train.config import PretrainConfig
    from mammoclip_kit.train.loop import train

    rows = make_pairs(tmp_path, n=12)

    def data():
        return (ImageTextDataset(rows[rows.fold != 0], tmp_path, (24, 16), train=True, seed=0),
                {"reports": ImageTextDataset(rows[rows.fold == 0], tmp_path, (24, 16), train=False, seed=0)})

    base = dict(loss="mvs", epochs=2, batch_size=4, lr=3e-3, warmup_epochs=0.5, tensorboard=False, seed=0)
    out = tmp_path / "run"
    train(PretrainConfig(**base), TinyClip(), *data(), out, stop_at_step=1, progress=False)
    state = (out / "train" / "last.pt").read_bytes()
    with pytest.raises(ValueError, match=r"lr: 0\.003 → 0\.1.*--allow-config-change"):
        train(PretrainConfig(**{**base, "lr": 0.1}), TinyClip(), *data(), out, progress=False)
    assert (out / "train" / "last.pt").read_bytes() == state  # nothing was trained on top
    result = train(PretrainConfig(**{**base, "lr": 0.1}), TinyClip(), *data(), out, progress=False,
                   allow_config_change=True)
    assert result.steps > 1


def test_a_damaged_training_state_is_a_one_line_error_and_is_left_alone(tmp_path: Path):
    sys_path_train()
    from tiny_model import TinyClip, make_pairs

    from mammoclip_kit.data.datasets import ImageTextDataset
    from mammoclip_kit.errors import UserError, one_line
    from mammoclip_kit.train.config import PretrainConfig
    from mammoclip_kit.train.loop import train

    rows = make_pairs(tmp_path, n=12)
    data = (ImageTextDataset(rows[rows.fold != 0], tmp_path, (24, 16), train=True, seed=0),
            {"reports": ImageTextDataset(rows[rows.fold == 0], tmp_path, (24, 16), train=False, seed=0)})
    cfg = PretrainConfig(loss="mvs", epochs=2, batch_size=4, lr=3e-3, warmup_epochs=0.5, tensorboard=False, seed=0)
    out = tmp_path / "run"
    train(cfg, TinyClip(), *data, out, stop_at_step=1, progress=False)
    state = out / "train" / "last.pt"
    damaged = state.read_bytes()[: state.stat().st_size // 3]
    state.write_bytes(damaged)
    with pytest.raises(UserError) as caught:
        train(cfg, TinyClip(), *data, out, progress=False)
    message = one_line(caught.value)
    assert "last.pt: cannot read the training state" in message and "\n" not in message
    assert state.read_bytes() == damaged  # refused, not overwritten: the user decides


def test_convert_force_replaces_the_whole_folder_and_a_failed_conversion_keeps_it(checkpoint: Path, tmp_path: Path,
                                                                                 capsys):
    from mammoclip_kit import convert
    from mammoclip_kit.models.clip import from_pretrained
    from mammoclip_kit.models.factory import create_model
    from mammoclip_kit.models.reference import write_reference_checkpoint
    from mammoclip_kit.models.towers import DEFAULT_CORPUS, build_small_bert

    (checkpoint / "metrics.json").write_text("{\"trained\": true}")
    (checkpoint / "train").mkdir()
    (checkpoint / "train" / "last.pt").write_bytes(b"old state")
    before = tree_digest(checkpoint)
    broken = tmp_path / "broken.tar"
    broken.write_bytes(b"")
    code, _, err = run_cli(convert.main, [str(broken), str(checkpoint), "--force"], capsys)
    assert_clear_error(code, err, "broken.tar", "0 bytes")
    assert tree_digest(checkpoint) == before  # a failed conversion leaves the folder as it was

    bert = build_small_bert(DEFAULT_CORPUS, tmp_path / "bert", vocab_size=300, hidden=32, layers=1, heads=2,
                            max_length=64)
    released = write_reference_checkpoint(create_model("paper-b2", text_encoder=str(bert), seed=7).eval(),
                                          tmp_path / "b2-model-best-epoch-10.tar", arch="b2")
    code, _, err = run_cli(convert.main, [str(released), str(checkpoint), "--text-encoder", str(bert), "--force"],
                           capsys)
    assert code == 0, err
    assert not (checkpoint / "metrics.json").exists() and not (checkpoint / "train").exists()
    assert (checkpoint / "conversion.json").is_file()
    assert from_pretrained(checkpoint).config.image.name != "" and not list(tmp_path.glob(".ckpt.*"))


def test_non_finite_outputs_are_refused_and_json_stays_valid(smoke_checkpoint: Path, mammogram_png: Path,
                                                             tmp_path: Path, capsys):
    import torch

    from mammoclip_kit.models.clip import from_pretrained

    model = from_pretrained(smoke_checkpoint)
    with torch.no_grad():
        model.logit_scale.fill_(100.0)  # finite weight, but exp(100) overflows float32: every logit becomes ±inf/NaN
    folder = model.save_pretrained(tmp_path / "overflow")
    code, out, err = _predict(["--checkpoint", str(folder), "--image", str(mammogram_png), "--json", "--device",
                               "cpu"], capsys)
    assert code == 2 and "Traceback" not in err
    records = json.loads(out)  # strict JSON: a bare NaN would not parse with allow_nan=False below
    json.dumps(records, allow_nan=False)
    assert records == [{"image": str(mammogram_png), "error": records[0]["error"]}]
    assert "non-finite model output" in records[0]["error"]
