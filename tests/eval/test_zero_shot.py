"""Zero-shot evaluation: hand-computed AUC / density / breast-level numbers on fixed embeddings, and a table run."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from _zs_standins import LookupModel, TinyClip

from mammoclip_kit.context import RunContext
from mammoclip_kit.eval import metrics
from mammoclip_kit.eval import zero_shot as zs

DIM = 10  # e0/e1 mass, e2/e3 calc, e4..e7 density A-D, e8 malignancy-, e9 filler (keeps every norm ≈ 10)
PROMPTS = {
    "mass": (["no mass"], ["mass"]),
    "suspicious_calcification": (["no calc"], ["calc"]),
    "malignancy": (["benign", "no cancer"], ["cancer"]),
    "density": {"A": ["fatty"], "B": ["scattered"], "C": ["heterogeneous"], "D": ["extreme"]},
}
_AXES = {"no mass": 0, "mass": 1, "no calc": 2, "calc": 3, "fatty": 4, "scattered": 5, "heterogeneous": 6,
         "extreme": 7, "benign": 8, "no cancer": 8, "cancer": 1}


def _model() -> LookupModel:
    vectors = {}
    for text, axis in _AXES.items():
        v = np.zeros(DIM)
        v[axis] = 1.0
        vectors[text] = v.tolist()
    return LookupModel(vectors)


def _image(mass_delta: float = 0.0, density: int = 2) -> list[float]:
    v = np.zeros(DIM)
    v[1] = mass_delta  # cos to "mass" minus cos to "no mass" ∝ delta
    v[4 + density] = 0.5
    v[9] = 10.0
    return v.tolist()


def test_evaluate_vindr_hand_computed():
    table = pd.DataFrame({
        "patient_id": ["p1", "p1", "p2", "p2"], "image_id": ["a", "b", "c", "d"],
        "Mass": [1, 0, 0, 1], "Suspicious_Calcification": [0, 0, 0, 1], "density": [2, 2, 0, 3],
    })
    emb = torch.tensor([_image(0.1, 2), _image(0.3, 2), _image(-0.2, 1), _image(0.5, 3)])
    config = zs.ZeroShotConfig(scoring="reference", n_boot=100)
    out, predictions = zs.evaluate_vindr(table, _model(), emb, PROMPTS, config)
    # reference scoring: P(mass) = sigmoid(cos(img, mass) - cos(img, no mass)) = sigmoid(delta / |img|)
    norms = emb.norm(dim=1).numpy()
    expected = 1 / (1 + np.exp(-np.array([0.1, 0.3, -0.2, 0.5]) / norms))
    np.testing.assert_allclose(predictions["mass"], expected, rtol=1e-5)
    # positives .1 and .5 against negatives .3 and -.2: 3 of 4 pairs
    assert out["vindr_mass_auc"] == pytest.approx(0.75)
    assert out["vindr_mass_auc_ci_low"] <= out["vindr_mass_auc"] <= out["vindr_mass_auc_ci_high"]
    assert out["vindr_mass_n"] == 4 and out["vindr_mass_n_positive"] == 2
    # calc: every image is equally (un)aligned -> all scores tie -> AUC 0.5
    assert out["vindr_suspicious_calcification_auc"] == pytest.approx(0.5)
    # density predicted C, C, B, D for truth C, C, A, D
    assert list(predictions["density_pred"]) == [2, 2, 1, 3]
    assert out["vindr_density_accuracy"] == pytest.approx(0.75)
    assert out["vindr_density_balanced_accuracy"] == pytest.approx(2 / 3)
    assert out["vindr_density_macro_f1"] == pytest.approx(0.5)  # F1 0, 0, 1, 1 over classes A-D
    assert out["vindr_density_majority_rate"] == pytest.approx(0.5)
    assert out["vindr_n_patients"] == 2


def test_evaluate_rsna_is_breast_level():
    table = pd.DataFrame({
        "patient_id": [1, 1, 1, 2, 2, 3, 3],
        "laterality": ["L", "L", "R", "L", "L", "R", "L"],
        "cancer": [0, 1, 0, 0, 0, 1, 0],
    })
    deltas = [0.1, 0.5, 0.2, -0.4, -0.2, 0.6, 0.4]
    emb = torch.tensor([_image(d) for d in deltas])
    config = zs.ZeroShotConfig(scoring="reference", n_boot=100)
    model = LookupModel({"benign": [1.0] + [0.0] * (DIM - 1), "cancer": [0.0, 1.0] + [0.0] * (DIM - 2)})
    out, predictions = zs.evaluate_rsna(table, model, emb, {"malignancy": (["benign"], ["cancer"])}, config)
    # breasts 1_L (pos, mean of .1/.5), 1_R (.2), 2_L (-.4/-.2), 3_R (pos, .6), 3_L (.4): 1_L loses to 3_L -> 5/6
    assert out["rsna_n_breasts"] == 5
    assert out["rsna_malignancy_auc"] == pytest.approx(5 / 6)
    assert out["rsna_malignancy_image_auc"] == pytest.approx(1.0)
    assert out["rsna_malignancy_n_positive"] == 2
    assert list(predictions["breast_id"])[:3] == ["1_L", "1_L", "1_R"]


def test_compare_prompts_reference_ignores_extra_prompts():
    model = _model()
    labels = np.array([1, 0, 0, 1])
    emb = torch.tensor([_image(0.1), _image(0.3), _image(-0.2), _image(0.5)])
    emb[:, 8] = torch.tensor([0.0, 3.0, 0.0, 0.0])  # image 1 aligns with the second negative prompt ("benign")
    variants = {"single": (["no mass"], ["mass"]), "two negatives": (["no mass", "benign"], ["mass"])}
    table = zs.compare_prompts(emb, labels, model, variants, n_boot=50)
    assert list(table["variant"]) == ["single", "single", "two negatives", "two negatives"]
    ref = table[table["scoring"] == "reference"]["auc"].to_numpy()
    assert ref[0] == ref[1] == pytest.approx(0.75)  # reference scoring uses the first prompt of each class only
    ensemble = table[(table["variant"] == "two negatives") & (table["scoring"] == "ensemble")].iloc[0]
    assert ensemble["auc"] == pytest.approx(1.0)  # the extra negative prompt pushes image 1 down
    assert ensemble["n_prompts"] == 3 and ensemble["negative"] == "no mass | benign"


def test_run_zero_shot_on_built_tables(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(8):
        path = f"png/vindr/p{i // 2}/img{i}.png"
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / path), rng.integers(0, 255, (32, 16)).astype(np.uint8))
        rows.append({"patient_id": f"p{i // 2}", "image_id": f"img{i}", "laterality": "LR"[i % 2], "view": "CC",
                     "split": "test" if i < 6 else "training", "fold": i % 2, "density": i % 4,
                     "Mass": int(i in (1, 2)), "Suspicious_Calcification": int(i in (0, 3)), "png_path": path})
    tables = tmp_path / "tables"
    tables.mkdir()
    pd.DataFrame(rows).to_csv(tables / "vindr_images.csv", index=False)
    rsna = pd.DataFrame(rows).rename(columns={"Mass": "cancer"}).assign(fold=[0, 0, 0, 0, 1, 1, 0, 0])
    rsna.to_csv(tables / "rsna_images.csv", index=False)
    ctx = RunContext(profile="smoke", data_root=tmp_path, output_dir=tmp_path, device=torch.device("cpu"), seed=0,
                     settings={"zero_shot": {"n_boot": 30, "batch_size": 4}})
    model = TinyClip()
    result = zs.run_zero_shot(ctx, model, build_tables=False, progress=False)
    m = result.metrics
    assert m["vindr_n_images"] == 6 and m["rsna_n_images"] == 6
    assert m["n_boot"] == 30 and m["prompts"] == "kit"
    assert set(result.predictions) == {"vindr", "rsna"}
    assert result.embeddings["vindr"].shape == (6, 8)
    # the metric is the AUC of the stored predictions
    pred = result.predictions["vindr"]
    assert m["vindr_mass_auc"] == pytest.approx(metrics.roc_auc(pred["Mass"], pred["mass"]))
    # same seed, same numbers
    again = zs.run_zero_shot(ctx, model, build_tables=False, progress=False).metrics
    assert again == m
    with pytest.raises(ValueError, match="split == 'validation'"):
        zs.run_zero_shot(ctx, model, zs.ZeroShotConfig(vindr_split="validation"), datasets=["vindr"],
                         build_tables=False, progress=False)


def test_missing_png_and_bad_config_are_named(tmp_path):
    table = pd.DataFrame({"png_path": ["png/x.png"]}, index=[7])
    with pytest.raises(FileNotFoundError, match="row 7"):
        zs.embed_table(table, TinyClip(), tmp_path)
    with pytest.raises(ValueError, match="zero_shot.scoring"):
        zs.ZeroShotConfig.from_dict({"scoring": "softmax"})
    with pytest.raises(KeyError, match="'Mass'"):
        zs.evaluate_vindr(pd.DataFrame({"patient_id": [1]}), _model(), torch.zeros(1, DIM), PROMPTS,
                          zs.ZeroShotConfig())
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['other'\]"):
        zs.ZeroShotConfig.from_dict({"n_boot": 5, "other": 1})
    # the notebook's own keys of the section are not settings of the evaluation, and are not errors
    assert zs.ZeroShotConfig.from_dict({"n_boot": 5, "n_boot_compare": 3, "retrieval_folds": [0]}).n_boot == 5


def test_retrieval_pairs_and_evaluation(tmp_path):
    table = pd.DataFrame({
        "patient_id": ["1", "1", "2", "3"], "laterality": ["L", "R", "L", "R"],
        "CC": [["png/a.png"], [], ["png/c.png"], ["png/d.png"]], "MLO": [["png/a2.png"], ["png/b.png"], [], []],
        "text": [["no mass .", "birads 1 ."], ["no mass .", "birads 1 ."], ["mass in the upper quadrant ."], ["x"]],
        "fold": [0, 0, 0, 1],
    })
    pairs = zs.retrieval_pairs(table, folds=[0])
    assert list(pairs["png_path"]) == ["png/a.png", "png/b.png", "png/c.png"]  # CC first, MLO when no CC
    assert list(pairs["view"]) == ["CC", "MLO", "CC"]
    assert pairs["text"][0] == "no mass . birads 1 ."
    rng = np.random.default_rng(0)
    for path in pairs["png_path"]:
        (tmp_path / path).parent.mkdir(exist_ok=True)
        cv2.imwrite(str(tmp_path / path), rng.integers(0, 255, (32, 16)).astype(np.uint8))
    out, image_emb, text_emb = zs.evaluate_retrieval(pairs, TinyClip(), tmp_path, ks=(1, 2), progress=False)
    assert out["retrieval_n_texts"] == 2.0 and out["retrieval_n_images"] == 3.0  # the two identical reports merge
    assert out["retrieval_image_to_text_R@2"] == 1.0  # only two distinct texts
    expected = metrics.retrieval_metrics(image_emb, text_emb, ks=(1, 2), text_ids=pairs["text"].tolist())
    assert out["retrieval_text_to_image_mean_rank"] == expected["text_to_image_mean_rank"]


def test_project_2d_is_joint_pca():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 4)), rng.normal(size=(3, 4))
    pa, pb = zs.project_2d(a, b)
    assert pa.shape == (5, 2) and pb.shape == (3, 2)
    # the two axes are the top principal components of the normalised, centred union
    stacked = np.concatenate([a / np.linalg.norm(a, axis=1, keepdims=True), b / np.linalg.norm(b, axis=1, keepdims=True)])
    coords = np.concatenate([pa, pb])
    np.testing.assert_allclose(coords.mean(0), 0, atol=1e-12)
    variance = np.var(coords, axis=0) * len(coords)
    singular = np.linalg.svd(stacked - stacked.mean(0), compute_uv=False)
    np.testing.assert_allclose(variance, singular[:2] ** 2, rtol=1e-10)
    with pytest.raises(ValueError, match="one width"):
        zs.project_2d(a, rng.normal(size=(2, 3)))
