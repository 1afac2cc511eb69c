"""One released ``.tar`` through every consumer of a model: predict, convert, zero-shot, the probe encoders, the
detection backbone, robustness and FActOR's feature maps all load it with the one loader and see the same weights.

The released towers take 1520 × 912 inputs; where a consumer lets a size be set explicitly the tests use a small one
(that explicit setting is printed), to keep the EfficientNet-B2 forward passes cheap on a CPU.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from _probe_fixtures import make_table

from mammoclip_kit import predict
from mammoclip_kit.context import make_context
from mammoclip_kit.convert import convert
from mammoclip_kit.eval.detection import DetectorConfig, create_detector, detection_settings
from mammoclip_kit.eval.encoders import create_encoder
from mammoclip_kit.eval.features import cached_features
from mammoclip_kit.eval.robustness import RobustnessConfig, run_robustness
from mammoclip_kit.eval.zero_shot import load_eval_model
from mammoclip_kit.factor import feature_maps
from mammoclip_kit.inference import load_model_input, model_image_size, zero_shot
from mammoclip_kit.models.loader import load_model

SMALL = (64, 40)


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    first, second = a.state_dict(), b.state_dict()
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


@pytest.fixture(scope="module")
def run(released_b2, tmp_path_factory):
    model, path, bert = released_b2
    root = tmp_path_factory.mktemp("released-run")
    ctx = make_context(None, profile="smoke", output_dir=str(root), checkpoint=str(path), text_encoder=str(bert),
                       device="cpu")
    return ctx, model, path, bert, root, make_table(root, n_patients=8, size=(64, 40))  # predict refuses < 32 px


def test_predict_cli(run, capsys):
    _, _, path, bert, root, table = run
    png = root / table["png_path"].iloc[0]
    assert predict.main(["--checkpoint", str(path), "--text-encoder", str(bert), "--image", str(png), "--json",
                         "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    record = json.loads(captured.out)[0]
    assert 0.0 <= record["mass"] <= 1.0 and "coverage 100.0 %" in captured.err


def test_convert(run, tmp_path):
    _, model, path, bert, _, _ = run
    out, report = convert(path, tmp_path / "converted", text_encoder=bert)
    assert report.coverage == 100.0
    assert _same(load_model(out, device="cpu"), model)


def test_zero_shot_model(run):
    ctx, model, _, _, _, _ = run
    loaded, description = load_eval_model(ctx)
    assert "b2-model-best-epoch-10.tar" in description and _same(loaded, model)
    with torch.inference_mode():
        embeddings = loaded.encode_image(torch.randn(3, 3, *SMALL, generator=torch.Generator().manual_seed(0)))
    probabilities = zero_shot(embeddings, loaded, {"mass": (["no mass"], ["mass"])})
    assert probabilities["mass"].between(0, 1).all() and len(probabilities) == 3


def test_probe_encoder(run, capsys):
    ctx, model, _, _, root, table = run
    spec = create_encoder("released", ctx)
    assert spec.name == "b2-model-best-epoch-10" and spec.kind == "released"
    tower = spec.load()  # the probe encoders once passed the (model, report) tuple on: a TypeError
    assert _same(tower, model.image_encoder) and model_image_size(tower) == (1520, 912)
    features = cached_features(tower, table, root=root, cache_dir=root / "cache", table="vindr", image_size=SMALL,
                               progress=False)
    assert features.features.shape == (len(table), 1408)
    assert "image_size 64×40 set explicitly (the model's input size: 1520×912)" in capsys.readouterr().out


def test_detection_backbone(run):
    ctx, model, _, _, _, _ = run
    tower = create_encoder("released", ctx).load()
    settings = detection_settings(ctx, "Mass", "frozen", encoder=tower)
    assert settings.detector.image_size == (1520, 912)  # the detector input defaults to the encoder's own size
    detector = create_detector(tower, DetectorConfig(image_size=SMALL, fpn_channels=16, anchor_scale=0.25)).eval()
    with torch.inference_mode():
        out = detector([torch.randn(3, *SMALL)])
    assert set(out[0]) == {"boxes", "scores", "labels"}
    assert _same(detector.backbone.encoder, model.image_encoder)


def test_robustness(run):
    ctx, _, _, _, root, table = run
    spec = create_encoder("released", ctx)
    cfg = RobustnessConfig(tasks=["mass"], shifts={"contrast": [2]}, holdout=[], n_boot=5, image_size=SMALL)
    drops = run_robustness([spec], {"vindr": table}, cfg, root=root, cache_dir=root / "cache", progress=False).drops()
    assert set(drops["encoder"]) == {"b2-model-best-epoch-10"} and set(drops["severity"]) == {2}
    assert np.isfinite(drops[["clean_value", "value"]].to_numpy()).all()


def test_factor_feature_maps(run, tmp_path):
    ctx, model, _, _, root, table = run
    tower = create_encoder("released", ctx).load()
    paths = [root / p for p in table["png_path"].iloc[:2]]
    maps, sizes = feature_maps(tower, paths, image_size=SMALL, device="cpu", progress=False)
    assert maps.shape[:2] == (2, 1408) and sizes == [tuple(cv2.imread(str(p), 0).shape) for p in paths]
    with torch.inference_mode():
        direct = model.image_encoder.forward_features(torch.stack([
            load_model_input(p, SMALL)
            for p in paths]))
    torch.testing.assert_close(maps, direct.float())
