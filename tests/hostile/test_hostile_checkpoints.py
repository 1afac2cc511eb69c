"""Hostile inputs, checkpoints and predict / convert: damaged or non-finite weights never predict,
bad images are skipped, JSON stays valid, convert never mixes a new model with an old folder's files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hostile_helpers import (
    assert_clear_error,
    phantom,
    run_cli,
    tree_digest,
)

# --------------------------------------------------------------------------------------------------------------------
# item 2: corrupted or non-finite weights never predict; JSON output is valid




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
                                            ("not an image", "not a readable image")])
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


def test_predict_refuses_missing_image_paths_before_loading_a_model(checkpoint: Path, mammogram_png: Path,
                                                                   tmp_path: Path, capsys, monkeypatch):
    from mammoclip_kit import predict

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded although an image path does not exist")

    monkeypatch.setattr(predict, "load_model", no_loading)
    gone = tmp_path / "missing.png"
    code, out, err = _predict(["--checkpoint", str(checkpoint), "--image", str(mammogram_png), str(gone), "--json",
                               "--device", "cpu"], capsys)
    assert_clear_error(code, err, "1 of 2 image path(s) do not exist", str(gone), "nothing was loaded")
    assert out == ""


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
    assert records == [{"image": str(mammogram_png), "error": records[0]["error"], "checkpoint": str(folder),
                        "checkpoint_sha256": records[0]["checkpoint_sha256"], "checkpoint_kind": "kit folder",
                        "prompts": "kit", "scoring": "ensemble", "dicom_mode": "paper",
                        "dicom_mode_source": records[0]["dicom_mode_source"]}]
    assert "non-finite model output" in records[0]["error"]
