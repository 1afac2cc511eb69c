"""The one image-size rule: every consumer feeds a model at the model's own input size; the PNG size is only what
preprocessing wrote, and an explicit different size is used and printed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from _probe_fixtures import TinyEncoder, make_table
from _zs_standins import TinyClip

from mammoclip_kit.context import make_context
from mammoclip_kit.eval.detection import detection_settings
from mammoclip_kit.eval.encoders import EncoderSpec
from mammoclip_kit.eval.features import cached_features, extract_features
from mammoclip_kit.eval.finetune import FineTuneConfig, fine_tune
from mammoclip_kit.eval.robustness import RobustnessConfig, run_robustness
from mammoclip_kit.inference import embed_images, load_model_input, model_image_size, resolve_image_size

OWN = (32, 16)  # the tower's input size; the PNGs on disk are 40 × 24


class SizedEncoder(TinyEncoder):
    """The tiny encoder with a stated input size (what models.loader.image_tower records) that sees its inputs."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        self.image_size = OWN
        self.shapes: list[tuple[int, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape[-2:]))
        return super().forward(x)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("sizes")
    return root, make_table(root, n_patients=12)


def test_resolve_image_size(capsys):
    encoder = SizedEncoder()
    assert model_image_size(encoder) == OWN and model_image_size(TinyClip(image_size=(48, 24))) == (48, 24)
    assert resolve_image_size(encoder) == OWN
    assert resolve_image_size(encoder, [32, 16]) == OWN and capsys.readouterr().out == ""  # same size: silent
    assert resolve_image_size(encoder, (40, 24), where="probe") == (40, 24)
    assert "probe: image_size 40×24 set explicitly (the model's input size: 32×16)" in capsys.readouterr().out
    assert resolve_image_size(TinyEncoder()) is None  # no stated size: the images keep theirs


def test_probe_features_default_to_the_encoder_size(cohort, tmp_path, capsys):
    root, table = cohort
    encoder = SizedEncoder()
    result = cached_features(encoder, table, root=root, cache_dir=tmp_path, table="vindr", progress=False)
    assert set(encoder.shapes) == {OWN}
    expected = extract_features(encoder, [root / p for p in table["png_path"]], image_size=OWN, progress=False)
    np.testing.assert_array_equal(result.features, expected)
    explicit = cached_features(encoder, table, root=root, cache_dir=tmp_path, table="vindr", image_size=(40, 24),
                               progress=False)
    assert explicit.key != result.key and encoder.shapes[-1] == (40, 24)
    assert "image_size 40×24 set explicitly" in capsys.readouterr().out


def test_fine_tune_trains_at_the_encoder_size(cohort):
    root, table = cohort
    encoder = SizedEncoder()
    result = fine_tune(encoder, encoder.num_features, table[table["split"] == "training"], "mass", root=root,
                       cfg=FineTuneConfig(epochs=1, batch_size=8, max_steps=1, augment=False, val_fraction=0.0,
                                          progress=False))
    assert result.image_size == OWN
    assert set(result.model.encoder.shapes) == {OWN}


def test_robustness_shifts_the_image_the_encoder_receives(cohort, tmp_path):
    root, table = cohort
    encoder = SizedEncoder()
    cfg = RobustnessConfig(tasks=["mass"], shifts={"contrast": [2]}, holdout=[], n_boot=5)
    run_robustness([EncoderSpec("sized", lambda: encoder)], {"vindr": table}, cfg, root=root, cache_dir=tmp_path,
                   progress=False)
    assert set(encoder.shapes) == {OWN}


def test_detection_defaults_to_the_encoder_size(tmp_path, capsys):
    ctx = make_context(None, profile="smoke", output_dir=str(tmp_path), device="cpu")
    assert detection_settings(ctx).detector.image_size is None  # no encoder yet: nothing to resolve
    assert detection_settings(ctx, encoder=SizedEncoder()).detector.image_size == OWN
    ctx.settings["detection"]["model"]["image_size"] = [64, 32]
    assert detection_settings(ctx, encoder=SizedEncoder()).detector.image_size == (64, 32)
    assert "detector (Mass, frozen): image_size 64×32 set explicitly" in capsys.readouterr().out


def test_embeddings_use_the_model_size(tmp_path):
    model = TinyClip(image_size=(48, 24))
    image = np.random.default_rng(0).integers(0, 255, (40, 24)).astype(np.uint8)
    seen = []
    original = model.encode_image

    def spy(x: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(x.shape[-2:]))
        return original(x)

    model.encode_image = spy
    embedding = embed_images([image], model, progress=False)
    assert seen == [(48, 24)] and model.training  # the previous mode is restored
    with torch.inference_mode():
        model.eval()
        direct = torch.nn.functional.normalize(original(load_model_input(image, (48, 24))[None]), dim=-1)
    torch.testing.assert_close(embedding, direct)
    assert pd.Series(embedding.norm(dim=1).numpy()).round(5).eq(1).all()
