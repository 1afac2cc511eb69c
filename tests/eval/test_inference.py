"""Inference API: prompt-ensemble math, reference scoring, image inputs, the predict CLI."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _zs_standins import LookupModel, TinyClip

from mammoclip_kit import inference
from mammoclip_kit.data.transforms import resize_to
from mammoclip_kit.eval import metrics
from mammoclip_kit.models.loader import load_model

# ------------------------------------------------------------------------------------------------- scoring math


def test_class_embeddings_ensemble_and_reference():
    prompts = [torch.tensor([[2.0, 0.0], [0.0, 5.0]]), torch.tensor([[0.0, -1.0]])]
    ens = inference.class_embeddings(prompts, "ensemble")
    # normalise each prompt ([1,0], [0,1]) -> mean [.5,.5] -> renormalise
    torch.testing.assert_close(ens, torch.tensor([[1 / math.sqrt(2), 1 / math.sqrt(2)], [0.0, -1.0]]))
    ref = inference.class_embeddings(prompts, "reference")
    torch.testing.assert_close(ref, torch.tensor([[1.0, 0.0], [0.0, -1.0]]))
    with pytest.raises(ValueError, match="scoring"):
        inference.class_embeddings(prompts, "mean")


def test_zero_shot_probabilities_hand_computed():
    image = torch.tensor([[3.0, 0.0]])  # unit vector [1, 0] after normalisation
    classes = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    raw = inference.zero_shot_probabilities(image, classes)  # softmax([1, 0])
    torch.testing.assert_close(raw, torch.tensor([[math.e / (math.e + 1), 1 / (math.e + 1)]]))
    scaled = inference.zero_shot_probabilities(image, classes, logit_scale=2.0)  # softmax([2, 0])
    torch.testing.assert_close(scaled, torch.tensor([[1 / (1 + math.exp(-2)), 1 / (1 + math.exp(2))]]))


def test_zero_shot_ensemble_vs_single_prompt_on_fixed_embeddings():
    # negative prompts along x (and a second along -y); positive prompt along y
    model = LookupModel({"no mass": [1, 0], "normal": [0, -1], "mass": [0, 1]}, logit_scale=10.0)
    images = torch.tensor([[1.0, 1.0], [1.0, -1.0]])
    prompts = {"mass": (["no mass", "normal"], ["mass"])}
    ref = inference.zero_shot(images, model, prompts, scoring="reference")["mass"].to_numpy()
    # reference: cos to "no mass" and "mass" only, no scale
    c = 1 / math.sqrt(2)
    np.testing.assert_allclose(ref, [0.5, 1 / (1 + math.exp(2 * c))], rtol=1e-6)
    ens = inference.zero_shot(images, model, prompts, scoring="ensemble")["mass"].to_numpy()
    # ensemble negative = normalise([1,0] + [0,-1]) = [c, -c]; image 0: cos 0 vs c; image 1: cos 1 vs -c
    np.testing.assert_allclose(ens, [1 / (1 + math.exp(-10 * c)), 1 / (1 + math.exp(10 * (1 + c)))], rtol=1e-5)


def test_zero_shot_reference_equals_direct_softmax_over_cosine():
    model = TinyClip()
    images = F.normalize(torch.randn(6, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    prompts = {"mass": (["no mass", "no mass is seen"], ["mass", "a mass is seen"])}
    out = inference.zero_shot(images, model, prompts, scoring="reference")
    text = inference.embed_texts(["no mass", "mass"], model)
    direct = torch.softmax(F.cosine_similarity(images[:, None], text[None], dim=-1), dim=1)[:, 1]
    np.testing.assert_allclose(out["mass"].to_numpy(), direct.numpy(), rtol=1e-5, atol=1e-7)
    # the ensemble with the learned scale is different, and is the manual computation
    ens = inference.zero_shot(images, model, prompts)["mass"].to_numpy()
    negatives = F.normalize(inference.embed_texts(["no mass", "no mass is seen"], model).mean(0), dim=0)
    positives = F.normalize(inference.embed_texts(["mass", "a mass is seen"], model).mean(0), dim=0)
    logits = (1 / 0.07) * images @ torch.stack([negatives, positives]).T
    np.testing.assert_allclose(ens, logits.softmax(1)[:, 1].numpy(), rtol=1e-4, atol=1e-6)


def test_zero_shot_multiclass_columns_and_prompt_validation():
    model = LookupModel({"a": [1, 0, 0], "b": [0, 1, 0], "c": [0, 0, 1]})
    images = torch.tensor([[0.1, 0.9, 0.0], [0.0, 0.0, 1.0]])
    out = inference.zero_shot(images, model, {"density": {"A": ["a"], "B": ["b"], "C": ["c"]}})
    assert list(out.columns) == ["density_p0", "density_p1", "density_p2", "density_pred"]
    assert list(out["density_pred"]) == [1, 2]
    np.testing.assert_allclose(out[["density_p0", "density_p1", "density_p2"]].sum(axis=1), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        inference.zero_shot(images, model, {"mass": ["mass"]})
    with pytest.raises(ValueError, match=r"prompts\['mass'\]\[1\]"):
        inference.zero_shot(images, model, {"mass": (["a"], [])})


# ------------------------------------------------------------------------------------------------- image inputs


def _gray(height: int, width: int, dtype=np.uint8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    peak = np.iinfo(dtype).max
    return rng.integers(0, peak, size=(height, width), endpoint=True).astype(dtype)


def test_embed_images_png_path_and_array_identical(tmp_path):
    model = TinyClip()
    arrays = [_gray(32, 16, seed=1), _gray(32, 16, np.uint16, seed=2)]
    paths = []
    for i, array in enumerate(arrays):
        path = tmp_path / f"img{i}.png"
        cv2.imwrite(str(path), array)
        paths.append(path)
    from_paths = inference.embed_images(paths, model, batch_size=1, progress=False)
    from_arrays = inference.embed_images(arrays, model, batch_size=2, progress=False)
    from_tensor = inference.embed_images([torch.from_numpy(arrays[0].astype(np.float32))], model, progress=False)
    assert from_paths.shape == (2, 8)
    torch.testing.assert_close(from_paths, from_arrays, rtol=0, atol=1e-6)
    torch.testing.assert_close(from_tensor[0], from_arrays[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(from_paths.norm(dim=1), torch.ones(2))


def test_embed_images_resizes_to_the_model_size(tmp_path):
    model = TinyClip(image_size=(32, 16))
    big = _gray(96, 48, seed=3)
    cv2.imwrite(str(tmp_path / "big.png"), big)
    a = inference.embed_images([tmp_path / "big.png"], model, progress=False)
    b = inference.embed_images([resize_to(big, 32, 16)], model, progress=False)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_embed_images_dicom_equals_its_converted_png(tmp_path):
    from mammoclip_kit.data.dicom import write_dicom
    from mammoclip_kit.data.preprocess import make_phantom, preprocess_file

    model = TinyClip(image_size=(64, 40))
    dcm = write_dicom(tmp_path / "p1" / "img.dcm", make_phantom(160, 96, seed=4))
    for mode in ("voi", "paper"):
        png = tmp_path / f"{mode}.png"
        preprocess_file(dcm, png, mode=mode, height=64, width=40)
        from_dicom = inference.embed_images([dcm], model, dicom_mode=mode, progress=False)
        from_png = inference.embed_images([png], model, progress=False)
        torch.testing.assert_close(from_dicom, from_png, rtol=0, atol=1e-6)


def test_embed_images_errors_name_the_input(tmp_path):
    model = TinyClip()
    with pytest.raises(FileNotFoundError, match="missing.png"):
        inference.embed_images([tmp_path / "missing.png"], model, progress=False)
    with pytest.raises(ValueError, match="2-D"):
        inference.embed_images([np.zeros((4, 4, 4))], model, progress=False)


def test_embed_images_restores_train_mode_and_texts_batch_invariant():
    model = TinyClip().train()
    inference.embed_images([_gray(32, 16)], model, progress=False)
    assert model.training
    texts = ["no mass", "a mass is seen", "benign calcification", "x"]
    torch.testing.assert_close(inference.embed_texts(texts, model, batch_size=1),
                               inference.embed_texts(texts, model, batch_size=64), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="text 1"):
        inference.embed_texts(["ok", ""], model)


def test_retrieval_metrics_is_the_metrics_function():
    import mammoclip_kit

    assert mammoclip_kit.retrieval_metrics is metrics.retrieval_metrics
    assert mammoclip_kit.zero_shot is inference.zero_shot


# ------------------------------------------------------------------------------------------------------------ CLI


@pytest.fixture(scope="module")
def smoke_checkpoint(tmp_path_factory):
    from mammoclip_kit.models.factory import create_model

    folder = tmp_path_factory.mktemp("ckpt") / "smoke"
    create_model("smoke").save_pretrained(folder)
    return folder


def test_predict_cli_on_a_smoke_checkpoint(tmp_path, smoke_checkpoint, capsys):
    from mammoclip_kit import predict
    from mammoclip_kit.data.dicom import write_dicom
    from mammoclip_kit.data.preprocess import make_phantom

    dcm = write_dicom(tmp_path / "p1" / "left.dcm", make_phantom(320, 192, seed=1))
    png = tmp_path / "right.png"
    cv2.imwrite(str(png), _gray(160, 96, seed=2))
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"mass": [["no mass", "no mass is seen"], ["mass"]],
                                   "density": {"A": ["fatty"], "B": ["scattered"], "C": ["heterogeneous"]}}))
    argv = ["--checkpoint", str(smoke_checkpoint), "--image", str(dcm), str(png), "--prompts", str(prompts)]
    assert predict.main(argv) == 0
    table = capsys.readouterr().out
    assert "mass" in table and "density_A" in table and "left.dcm" in table and "right.png" in table
    assert "density_pred" not in table and "density_p0" not in table
    assert predict.main([*argv, "--json", "--scoring", "reference"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in records] == [str(dcm), str(png)]
    model = load_model(smoke_checkpoint)
    expected = inference.zero_shot([dcm, png], model, {"mass": ("no mass", "mass")}, scoring="reference",
                                   progress=False, dicom_mode="paper")  # predict's default DICOM mode
    np.testing.assert_allclose([r["mass"] for r in records], expected["mass"], rtol=1e-5)
    assert all(abs(sum(r[f"density_{c}"] for c in "ABC") - 1) < 1e-5 for r in records)
    assert all(r["density"] in ("A", "B", "C") for r in records)
    # default prompts (the kit's sets) cover the paper's tasks
    assert predict.main(["--checkpoint", str(smoke_checkpoint), "--image", str(png), "--json"]) == 0
    assert {"mass", "suspicious_calcification", "malignancy", "density", "density_D"} <= set(
        json.loads(capsys.readouterr().out)[0])


def test_predict_cli_errors_are_named(tmp_path, smoke_checkpoint, capsys):
    from mammoclip_kit import predict

    png = tmp_path / "a.png"
    cv2.imwrite(str(png), _gray(160, 96))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"mass": ["only one"]}))
    assert predict.main(["--checkpoint", str(smoke_checkpoint), "--image", str(png), "--prompts", str(bad)]) == 2
    assert "bad.json" in capsys.readouterr().err
    assert predict.main(["--checkpoint", str(tmp_path / "nothing"), "--image", str(png)]) == 2
    assert "nothing" in capsys.readouterr().err
    assert predict.main(["--checkpoint", str(smoke_checkpoint), "--image", str(tmp_path / "gone.png")]) == 2
    assert "gone.png" in capsys.readouterr().err


def test_zero_shot_defaults_to_the_kit_prompt_sets():
    out = inference.zero_shot(torch.randn(3, 8), TinyClip())
    assert {"mass", "suspicious_calcification", "malignancy", "density_pred"} <= set(out.columns)
    assert list(out.index) == [0, 1, 2]


def test_eval_mode_restores_the_previous_state_also_on_error():
    module = torch.nn.BatchNorm1d(2)
    with inference.eval_mode(module) as inside:
        assert inside is module and not module.training
    assert module.training
    module.eval()
    with inference.eval_mode(module):
        pass
    assert not module.training
    module.train()
    with pytest.raises(RuntimeError), inference.eval_mode(module):
        raise RuntimeError("inside")
    assert module.training
