"""``python -m mammoclip_kit.predict`` on the researcher's path (issue 17): one DICOM-mode rule whatever the
checkpoint's container, a run description in the table and in JSON, density as a category with named class
probabilities, and one actionable line for a released ``.tar`` without ``--text-encoder`` before any model loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mammoclip_kit import predict
from mammoclip_kit.convert import convert
from mammoclip_kit.data.dicom import write_dicom
from mammoclip_kit.data.preprocess import (
    PREPROCESSING_RECORD,
    PreprocessConfig,
    make_phantom,
    write_preprocessing_record,
)


@pytest.fixture(scope="module")
def dicom(tmp_path_factory) -> Path:
    """A 12-bit DICOM with a window and a burnt-in marker: paper and voi modes give different pixels."""
    folder = tmp_path_factory.mktemp("dicom")
    return write_dicom(folder / "P1" / "img1.dcm", make_phantom(400, 240, seed=3), bits_stored=12,
                       window=[(1500, 1000)])


@pytest.fixture(scope="module")
def converted(released_b2, tmp_path_factory) -> Path:
    """The released fixture converted to a kit folder (the same weights in the other container)."""
    _, path, bert = released_b2
    out, _ = convert(path, tmp_path_factory.mktemp("converted") / "b2", text_encoder=bert)
    return out


def _json(argv: list[str], capsys) -> list[dict]:
    assert predict.main([*argv, "--json", "--device", "cpu"]) == 0
    return json.loads(capsys.readouterr().out)


def test_one_dicom_mode_rule_whatever_the_container(released_b2, converted, dicom, tmp_path, capsys):
    import shutil

    _, path, bert = released_b2
    from_tar = _json(["--checkpoint", str(path), "--text-encoder", str(bert), "--image", str(dicom)], capsys)[0]
    from_folder = _json(["--checkpoint", str(converted), "--image", str(dicom)], capsys)[0]
    assert from_tar["dicom_mode"] == from_folder["dicom_mode"] == "paper"
    for key in ("mass", "malignancy", "density_A", "density_D"):
        assert from_tar[key] == pytest.approx(from_folder[key], abs=1e-5), key
    # the mode matters on this image: voi gives other numbers, so the equality above is not an accident
    voi = _json(["--checkpoint", str(converted), "--image", str(dicom), "--dicom-mode", "voi"], capsys)[0]
    assert voi["dicom_mode"] == "voi" and voi["dicom_mode_source"] == "--dicom-mode"
    assert max(abs(voi[k] - from_folder[k]) for k in ("mass", "malignancy", "density_A")) > 1e-6
    # a checkpoint that records the preprocessing of its training images gets that mode by default
    folder = Path(shutil.copytree(converted, tmp_path / "trained-on-voi"))
    write_preprocessing_record(folder, PreprocessConfig(mode="voi", height=320, width=192))
    recorded = _json(["--checkpoint", str(folder), "--image", str(dicom)], capsys)[0]
    assert recorded["dicom_mode"] == "voi" and PREPROCESSING_RECORD in recorded["dicom_mode_source"]
    assert recorded["mass"] == pytest.approx(voi["mass"], abs=1e-6)
    (folder / PREPROCESSING_RECORD).write_text('{"mode": "sharpened"}')
    assert predict.main(["--checkpoint", str(folder), "--image", str(dicom), "--device", "cpu"]) == 2
    assert "preprocessing.json" in capsys.readouterr().err


def test_the_output_says_what_produced_it_and_names_density_classes(released_b2, converted, dicom, tmp_path,
                                                                      capsys):
    prompts = tmp_path / "my_prompts.json"
    prompts.write_text(json.dumps({"mass": [["no mass"], ["mass"]],
                                   "density": {"A": ["fatty"], "B": ["scattered"], "C": ["heterogeneous"],
                                               "D": ["extremely dense"]}}))
    argv = ["--checkpoint", str(converted), "--image", str(dicom), "--prompts", str(prompts), "--scoring", "reference"]
    assert predict.main([*argv, "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    header = [line for line in out.splitlines() if line.startswith("# ")]
    sha = json.loads((converted / "config.json").read_text())["weights_sha256"][:12]
    assert header[0] == f"# checkpoint : {converted} (kit folder, sha256 {sha})"
    assert header[1] == f"# prompts    : {prompts}"
    assert header[2].startswith("# scoring    : reference (") and header[3].startswith("# DICOM mode : paper (")
    assert "density_A" in out and "density_pred" not in out and "density_p0" not in out
    assert predict.main([*argv, "--text-encoder", str(released_b2[2]), "--json", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    record = json.loads(captured.out)[0]
    assert f"note: --text-encoder {released_b2[2]} is ignored" in captured.err  # a kit folder has its text tower
    assert record["density"] in "ABCD" and isinstance(record["density"], str)
    probabilities = [record[f"density_{c}"] for c in "ABCD"]
    assert sum(probabilities) == pytest.approx(1, abs=1e-5)
    assert record["density"] == "ABCD"[probabilities.index(max(probabilities))]
    assert not {"density_pred", "density_p0"} & set(record)
    assert (record["checkpoint"], record["checkpoint_sha256"], record["prompts"], record["scoring"]) == \
        (str(converted), sha, str(prompts), "reference")


def _refuse_loading(monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded before the inputs were checked")

    monkeypatch.setattr(predict, "load_model", no_loading)


def test_a_released_tar_without_text_encoder_is_one_actionable_line(released_b2, dicom, capsys, monkeypatch):
    _, path, _ = released_b2
    _refuse_loading(monkeypatch)
    assert predict.main(["--checkpoint", str(path), "--image", str(dicom), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path} is a released checkpoint")
    assert "pass --text-encoder DIR" in lines[0] and "tokenizer" in lines[0]


@pytest.mark.parametrize("case", ["text encoder without config.json", "text encoder path missing",
                                  "checkpoint missing", "folder without config.json", "image missing"])
def test_inputs_are_checked_before_any_model_loads(released_b2, dicom, tmp_path, case, capsys, monkeypatch):
    _, path, bert = released_b2
    _refuse_loading(monkeypatch)
    argv, expected = ["--checkpoint", str(path), "--text-encoder", str(bert), "--image", str(dicom)], ""
    if case == "text encoder without config.json":
        (tmp_path / "empty").mkdir()
        argv[3], expected = str(tmp_path / "empty"), "no config.json"
    elif case == "text encoder path missing":
        argv[3], expected = str(tmp_path / "no" / "bert"), "no such text-encoder folder"
    elif case == "checkpoint missing":
        argv[1], expected = str(tmp_path / "b5.tar"), "no such checkpoint"
    elif case == "folder without config.json":
        (tmp_path / "ckpt").mkdir()
        argv[1], expected = str(tmp_path / "ckpt"), "not a kit checkpoint folder"
    else:
        argv += [str(tmp_path / "a.dcm"), str(tmp_path / "b.dcm")]
        expected = "2 of 3 image path(s) do not exist"
    assert predict.main([*argv, "--device", "cpu"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines
