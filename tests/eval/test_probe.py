"""Linear probe, feature cache, patient subsampling, metrics paths, fine-tuning and the resumable sweep."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from _probe_fixtures import TinyEncoder, make_table

from mammoclip_kit.context import make_context
from mammoclip_kit.eval.encoders import EncoderSpec
from mammoclip_kit.eval.features import cached_features, extract_features, model_fingerprint
from mammoclip_kit.eval.finetune import FineTuneConfig, fine_tune
from mammoclip_kit.eval.linear_probe import LinearProbeConfig, fit_linear_probe
from mammoclip_kit.eval.metrics import density_metrics
from mammoclip_kit.eval.sweep import SweepConfig, paired_comparison, run_sweep, scores_csv_path, sweep_table
from mammoclip_kit.eval.tasks import (
    _class_metrics,
    evaluate_predictions,
    split_for_task,
    subsample_by_patient,
    task_labels,
)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    return root, make_table(root)


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_frozen_features_leave_parameters_and_bn_buffers_unchanged(cohort) -> None:
    root, table = cohort
    encoder = TinyEncoder()
    encoder.train()
    before = _state(encoder)
    paths = [root / p for p in table["png_path"]]
    first = extract_features(encoder, paths, batch_size=8, progress=False)
    second = extract_features(encoder, paths, batch_size=5, progress=False)
    after = _state(encoder)
    assert set(before) == set(after) and any("running_mean" in k for k in before)
    for name in before:
        assert torch.equal(before[name], after[name]), f"{name} changed"
    assert encoder.training, "the previous train/eval mode must be restored"
    assert first.shape == (len(table), TinyEncoder.num_features)
    np.testing.assert_allclose(first, second, rtol=1e-5, atol=1e-6)  # eval mode: no dropout, batch independent
    # The reference's "LP" runs the encoder in train mode: BN running stats move. Show the check can fail.
    with torch.no_grad():
        encoder(torch.randn(4, 3, 40, 24))
    assert not torch.equal(before["bn.running_mean"], encoder.state_dict()["bn.running_mean"])


def test_feature_cache_is_reused_without_encoder_forward(cohort, tmp_path) -> None:
    root, table = cohort
    encoder = TinyEncoder()
    kwargs = dict(root=root, cache_dir=tmp_path, table="vindr", batch_size=16, progress=False)
    cold = cached_features(encoder, table, **kwargs)
    calls = encoder.calls
    assert calls == 3 and not cold.from_cache  # 48 images in batches of 16
    warm = cached_features(encoder, table, **kwargs)
    assert encoder.calls == calls, "the second run must not call the encoder"
    assert warm.from_cache and warm.key == cold.key
    np.testing.assert_array_equal(warm.features, cold.features)
    # A shift, another image size or other weights is another cache entry.
    shifted = cached_features(encoder, table, transform=lambda im, key: 255 - im, transform_key="invert", **kwargs)
    assert not shifted.from_cache and shifted.key != cold.key
    other = TinyEncoder(seed=1)
    assert model_fingerprint(other) != model_fingerprint(encoder)
    assert not cached_features(other, table, **kwargs).from_cache
    assert cached_features(encoder, table, retrain=True, **kwargs).from_cache is False


def test_subsample_keeps_patients_together_and_is_stratified(cohort) -> None:
    _, table = cohort
    labels = table["Mass"].to_numpy()
    sub = subsample_by_patient(table, labels, fraction=0.5, seed=3)
    kept = set(sub["patient_id"])
    # every image of a kept patient is kept
    assert len(sub) == int(table["patient_id"].isin(kept).sum())
    positives = table.groupby("patient_id")["Mass"].max()
    n_pos, n_neg = int(positives.sum()), int((positives == 0).sum())
    assert positives[list(kept)].sum() == round(0.5 * n_pos)
    assert (positives[list(kept)] == 0).sum() == round(0.5 * n_neg)
    again = subsample_by_patient(table, labels, fraction=0.5, seed=3)
    assert again.index.equals(sub.index)
    assert not subsample_by_patient(table, labels, fraction=0.5, seed=4).index.equals(sub.index)
    shots = subsample_by_patient(table, labels, shots=2, seed=0)
    assert shots["patient_id"].nunique() == 4 and set(positives[shots["patient_id"].unique()]) == {0, 1}
    small = subsample_by_patient(table, labels, fraction=0.01, seed=0)  # at least one patient per stratum
    assert set(positives[small["patient_id"].unique()]) == {0, 1}
    assert subsample_by_patient(table, labels, fraction=1.0).equals(table)
    with pytest.raises(ValueError, match="exactly one"):
        subsample_by_patient(table, labels)


def test_density_metrics_path_hand_computed() -> None:
    # confusion: class 0: 2 right; class 1: 1 right, 1 -> 2; class 2: 3 right, 1 -> 1; class 3: 0 right, 1 -> 2
    truth = np.array([0, 0, 1, 1, 2, 2, 2, 2, 3])
    predicted = np.array([0, 0, 1, 2, 2, 2, 2, 1, 2])
    probabilities = np.eye(4)[predicted] * 0.7 + 0.075
    result = evaluate_predictions("density", truth, probabilities, n_boot=50, seed=0)
    assert result["accuracy"].point == pytest.approx(6 / 9)
    assert result["balanced_accuracy"].point == pytest.approx((1 + 0.5 + 0.75 + 0) / 4)
    f1 = [1.0, 2 * 0.5 * 0.5 / 1.0, 2 * 0.6 * 0.75 / 1.35, 0.0]  # per-class F1 from precision/recall
    assert result["macro_f1"].point == pytest.approx(np.mean(f1))
    for ci in result.values():
        assert ci.low <= ci.point <= ci.high
    # the fast confusion-matrix path agrees with the shared metrics module on random predictions
    rng = np.random.default_rng(1)
    for _ in range(5):
        t, p = rng.integers(0, 4, 40), rng.integers(0, 4, 40)
        t[t == 3] = 2  # a class absent from the truth
        assert _class_metrics(t, p, 4) == pytest.approx(density_metrics(t, p, labels=[0, 1, 2, 3]))


def test_breast_level_auc_and_patient_bootstrap() -> None:
    # breasts: a (pos, mean 0.8), b (neg, mean 0.3), c (neg, mean 0.9), d (pos, mean 0.6) -> AUC = 2/4 = 0.5
    scores = np.array([0.9, 0.7, 0.3, 0.9, 0.5, 0.7])
    labels = np.array([1, 0, 0, 0, 1, 1])
    breasts = ["a", "a", "b", "c", "d", "d"]
    result = evaluate_predictions("cancer", labels, scores, breast_ids=breasts, patient_ids=["p1"] * 3 + ["p2"] * 3,
                                  n_boot=20)
    assert result["auc"].point == pytest.approx(0.5)
    image_level = evaluate_predictions("mass", labels, scores, n_boot=0)["auc"].point
    assert image_level == pytest.approx(5 / 9)
    with pytest.raises(ValueError, match="breast_ids"):
        evaluate_predictions("cancer", labels, scores)


def test_linear_probe_learns_weighting_and_missing_classes(cohort) -> None:
    _, table = cohort
    rng = np.random.default_rng(0)
    labels = np.array([0] * 30 + [1] * 6)
    features = rng.normal(size=(36, 5)) + labels[:, None] * 2.0
    probe = fit_linear_probe(features, labels, "mass", LinearProbeConfig(C=1.0))
    weights = probe.pipeline[-1].class_weight
    assert weights == {0: 1.0, 1: 5.0}  # pos_weight = negatives / positives
    scores = probe.predict_scores(features)
    assert scores.shape == (36,) and scores[labels == 1].mean() > scores[labels == 0].mean()
    dense = fit_linear_probe(features, np.array([0, 1, 3] * 12), "density")
    assert dense.predict_scores(features).shape == (36, 4)
    assert np.all(dense.predict_scores(features)[:, 2] == 0)  # class 2 never seen
    with pytest.raises(ValueError, match="only class"):
        fit_linear_probe(features, np.zeros(36), "mass")
    bad = table.assign(Mass=table["Mass"].where(table.index != 5, 7))
    with pytest.raises(ValueError, match="row 5, column 'Mass': value '7'"):
        task_labels(bad, "mass", "vindr_images.csv")


def test_fine_tune_trains_a_copy_and_checkpoints(cohort, tmp_path) -> None:
    root, table = cohort
    train, _ = split_for_task(table, "mass")
    encoder = TinyEncoder()
    before = _state(encoder)
    cfg = FineTuneConfig(epochs=2, lr=1e-2, batch_size=8, augment=True, val_fraction=0.3, progress=False)
    result = fine_tune(encoder, TinyEncoder.num_features, train, "mass", root=root, cfg=cfg, seed=0,
                       checkpoint_dir=tmp_path / "ft")
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items()), "the input encoder is untouched"
    assert len(result.history) == 2 and 1 <= result.best_epoch <= 2
    assert 0.0 <= result.best_metric <= 1.0
    assert (tmp_path / "ft" / "model.safetensors").is_file() and (tmp_path / "ft" / "meta.json").is_file()
    changed = [k for k, v in result.model.encoder.state_dict().items() if not torch.equal(before[k], v)]
    assert changed, "fine-tuning must update the tower"
    again = fine_tune(encoder, TinyEncoder.num_features, train, "mass", root=root, cfg=cfg, seed=0)
    assert [h["loss"] for h in again.history] == pytest.approx([h["loss"] for h in result.history])
    dens = fine_tune(encoder, TinyEncoder.num_features, train, "density", root=root,
                     cfg=FineTuneConfig(epochs=1, batch_size=16, augment=False, max_steps=1, progress=False))
    assert dens.history[0]["steps"] == 1


def test_sweep_writes_tidy_csv_and_resumes(cohort, tmp_path, capsys) -> None:
    root, table = cohort
    encoders = {"a": TinyEncoder(0), "b": TinyEncoder(1)}
    specs = [EncoderSpec(name, lambda e=e: e) for name, e in encoders.items()]
    cfg = SweepConfig(tasks=["mass", "density", "cancer"], fractions=[0.5, 1.0], shots=[2], seeds=[0],
                   finetune=FineTuneConfig(epochs=1, batch_size=16, augment=False, max_steps=1, progress=False),
                   finetune_encoders=["a"], finetune_fractions=[1.0], finetune_seeds=[0], finetune_tasks=["mass"],
                   n_boot=10, rsna_test_fold=3)
    csv = tmp_path / "sweeps" / "sweep.csv"  # a folder that does not exist yet
    kwargs = dict(tables={"vindr": table, "rsna": table}, root=root, cache_dir=tmp_path / "cache", csv_path=csv,
                  progress=False)
    first = run_sweep(specs, cfg=cfg, **kwargs)
    # 2 encoders x [mass 1 + density 3 + cancer 1 metrics] x 3 budgets x 1 seed + 1 fine-tune x 1 metric
    assert len(first) == 2 * 5 * 3 + 1
    assert set(first["method"]) == {"linear_probe", "finetune"}
    assert set(first["budget"]) == {"50%", "100%", "2-shot"}
    assert (first["ci_low"] <= first["value"] + 1e-12).all() and (first["value"] <= first["ci_high"] + 1e-12).all()
    assert first.attrs["timing"]["features_computed"] == 4  # 2 encoders x 2 tables, once each
    assert pd.read_csv(csv).shape[0] == len(first)
    scores = pd.read_csv(scores_csv_path(csv))
    n_test = {t: len(split_for_task(table, t, test_fold=3)[1]) for t in ("mass", "cancer")}
    # binary tasks only: 2 encoders x 3 budgets x (mass + cancer) + the fine-tune on mass, one row per test image
    assert len(scores) == 2 * 3 * (n_test["mass"] + n_test["cancer"]) + n_test["mass"]
    ft_scores = scores.query("method == 'finetune'").sort_values("row")
    assert ft_scores["row"].tolist() == list(range(n_test["mass"]))
    calls = {name: e.calls for name, e in encoders.items()}
    second = run_sweep(specs, cfg=cfg, **kwargs)
    assert {name: e.calls for name, e in encoders.items()} == calls, "a finished sweep does no encoder work"
    assert len(second) == len(first) and pd.read_csv(csv).shape[0] == len(first)
    # resume: drop encoder b's rows from the CSV; only they are recomputed, from the feature cache
    pd.read_csv(csv).query("encoder == 'a'").to_csv(csv, index=False)
    third = run_sweep(specs, cfg=cfg, **kwargs)
    assert encoders["b"].calls == calls["b"] and third.attrs["timing"]["features_from_cache"] == 2
    merged = third.sort_values(list(third.columns[:7])).reset_index(drop=True)
    expected = first.sort_values(list(first.columns[:7])).reset_index(drop=True)
    np.testing.assert_allclose(merged["value"].to_numpy(), expected["value"].to_numpy())
    # scores lost (or a sweep from before they were kept): the binary points are computed again, nothing duplicated
    scores_csv_path(csv).unlink()
    fourth = run_sweep(specs, cfg=cfg, **kwargs)
    assert len(fourth) == len(first) and pd.read_csv(csv).shape[0] == len(first)
    assert len(pd.read_csv(scores_csv_path(csv))) == len(scores)
    table_view = sweep_table(first)
    assert "mass auc" in table_view.columns and len(table_view) == 2 * 3 + 1
    # other settings (here the bootstrap) give other numbers: the old file is not resumed but replaced
    capsys.readouterr()
    fifth = run_sweep(specs, cfg=replace(cfg, n_boot=5), **kwargs)
    assert "sweep.csv: settings changed (n_boot); starting a new sweep" in capsys.readouterr().out
    assert len(fifth) == len(first) and pd.read_csv(csv).shape[0] == len(first)
    assert fifth.attrs["timing"]["features_from_cache"] == 4  # the features do not depend on the bootstrap
    assert not np.allclose(fifth["ci_low"].fillna(0), first["ci_low"].fillna(0))


def test_sweep_fine_tunes_an_encoder_left_out_of_probe_encoders(cohort, tmp_path) -> None:
    root, table = cohort
    encoders = {"a": TinyEncoder(0), "random": TinyEncoder(1)}
    specs = [EncoderSpec(name, lambda e=e: e) for name, e in encoders.items()]
    cfg = SweepConfig(tasks=["mass"], fractions=[1.0], seeds=[0], probe_encoders=["a", "b?"],
                      finetune=FineTuneConfig(epochs=1, batch_size=16, augment=False, max_steps=1, progress=False),
                      finetune_encoders=["random"], finetune_fractions=[1.0], finetune_seeds=[0], n_boot=10)
    assert cfg.probe_encoders == ["a", "b"]  # an optional name ("b?") names the encoder
    result = run_sweep(specs, {"vindr": table}, cfg, root=root, cache_dir=tmp_path / "cache", progress=False)
    methods = result.groupby("encoder")["method"].agg(set).to_dict()
    assert methods == {"a": {"linear_probe"}, "random": {"finetune"}}
    assert result.attrs["timing"]["features_computed"] == 1  # no feature pass for the fine-tuned-only tower


def test_sweep_config_from_the_profile_and_the_notebook_parameters(tmp_path) -> None:
    ctx = make_context(None, profile="smoke", output_dir=str(tmp_path), device="cpu", batch_size=4, max_steps=2,
                       num_workers=1)
    cfg = SweepConfig.from_context(ctx)
    section = ctx.section("data_efficiency")
    assert cfg.tasks == section["tasks"] and cfg.probe.C == section["linear_probe"]["C"]
    assert cfg.finetune_encoders == section["finetune"]["encoders"] and cfg.finetune_tasks == ["mass"]
    assert cfg.batch_size == 4 and cfg.finetune.batch_size == 4  # the notebook parameter wins over the profile
    assert cfg.finetune.max_steps == 2 and cfg.finetune.num_workers == 1 and cfg.finetune.lr == 3e-4
    assert cfg.image_size is None  # every encoder at its own input size
    with pytest.raises(ValueError, match=r"data_efficiency section.finetune: unknown setting\(s\) \['lr_decay'\]"):
        SweepConfig.from_dict({"finetune": {"lr_decay": 0.5}})
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['fraction'\]"):
        SweepConfig.from_dict({"fraction": [0.1]})


def _paired_scores(test: pd.DataFrame, sides: dict[str, list[np.ndarray]]) -> pd.DataFrame:
    return pd.concat([pd.DataFrame({"encoder": name, "fingerprint": "f", "method": "linear_probe", "task": "mass",
                                    "budget": "10%", "seed": seed, "row": np.arange(len(test)), "score": score})
                      for name, per_seed in sides.items() for seed, score in enumerate(per_seed)], ignore_index=True)


def test_paired_comparison_on_hand_made_scores() -> None:
    test = pd.DataFrame({"patient_id": ["p1", "p1", "p2", "p2", "p3", "p3"], "laterality": ["L", "R"] * 3,
                         "Mass": [1, 0, 1, 0, 1, 0]})
    y = test["Mass"].to_numpy()
    perfect, reversed_, half = y * 0.8 + 0.1, 0.9 - y * 0.8, np.array([0.9, 0.1, 0.2, 0.3, 0.4, 0.5])
    # half: positives 0.9, 0.2, 0.4 vs negatives 0.1, 0.3, 0.5 -> 3 + 1 + 2 = 6 of 9 pairs ordered -> AUC 2/3
    scores = _paired_scores(test, {"a": [perfect, perfect], "b": [reversed_], "c": [half]})
    a, b, c = ({"encoder": n} for n in "abc")
    ab = paired_comparison(scores, test, "mass", a, b, n_boot=50, seed=0)
    assert ab.point == pytest.approx(1.0) and ab.low == pytest.approx(1.0) and ab.high == pytest.approx(1.0)
    ac = paired_comparison(scores, test, "mass", a, c, n_boot=50, seed=0)
    assert ac.point == pytest.approx(1 - 2 / 3) and ac.low >= 0.0 and ac.n_boot == 50
    assert paired_comparison(scores, test, "mass", c, c, n_boot=20).high == pytest.approx(0.0)
    # a retrained encoder: only its latest fingerprint counts
    newer = _paired_scores(test, {"b": [perfect]}).assign(fingerprint="g")
    assert paired_comparison(pd.concat([scores, newer]), test, "mass", a, b, n_boot=5).point == pytest.approx(0.0)
    with pytest.raises(ValueError, match="no scores"):
        paired_comparison(scores, test, "mass", {"encoder": "zzz"}, b)
    with pytest.raises(ValueError, match="6 test rows, the test split has 4"):
        paired_comparison(scores, test.iloc[:4], "mass", a, b)
    with pytest.raises(ValueError, match="not binary"):
        paired_comparison(scores, test, "density", a, b)


def test_paired_comparison_breast_level_averages_views() -> None:
    # two views per breast; breast scores are the view means: a separates breasts perfectly, b inverts them
    test = pd.DataFrame({"patient_id": ["p1"] * 4 + ["p2"] * 4, "laterality": list("LLRR") * 2,
                         "cancer": [1, 1, 0, 0, 0, 0, 1, 1]})
    a = np.array([0.9, 0.3, 0.2, 0.1, 0.1, 0.2, 0.8, 0.4])  # breast means 0.6, 0.15, 0.15, 0.6
    b = 1.0 - a
    scores = _paired_scores(test, {"a": [a], "b": [b]}).assign(task="cancer")
    result = paired_comparison(scores, test, "cancer", {"encoder": "a"}, {"encoder": "b"}, n_boot=20)
    assert result.point == pytest.approx(1.0)


def test_trunk_memo_shares_the_trunk_and_gives_the_plain_features(cohort) -> None:
    from mammoclip_kit.eval.features import TrunkMemo
    from mammoclip_kit.models.loader import image_tower, load_model

    root, table = cohort
    paths, keys = [root / p for p in table["png_path"]], table["image_id"].tolist()
    first = image_tower(load_model("smoke", image_only=True, device="cpu"))
    second = copy.deepcopy(first)  # same trunk, other later stages (like CLIP vs Mammo-CLIP from one ImageNet start)
    with torch.no_grad():
        for p in second.model.blocks[-1].parameters():
            p.add_(0.1)
    other = image_tower(load_model("smoke", image_only=True, device="cpu"))
    with torch.no_grad():
        other.model.conv_stem.weight.mul_(-1.0)  # another trunk: must not read the first one's maps
    options = dict(image_size=(64, 32), batch_size=8, progress=False, keys=keys)
    memo = TrunkMemo(blocks=2)
    for encoder in (first, second, other):
        plain = extract_features(encoder, paths, **options)
        shared = extract_features(encoder, paths, trunk_memo=memo, **options)
        np.testing.assert_allclose(shared, plain, rtol=1e-4, atol=1e-5)
    # first: all computed; second: all served from the memo; other: all computed again
    assert memo.computed == 2 * len(paths) and memo.hits == len(paths) and len(memo) == 2 * len(paths)
    # a shifted image is another entry, and the transform must be named
    with pytest.raises(ValueError, match="transform_key"):
        extract_features(first, paths, trunk_memo=memo, transform=lambda im, key: 255 - im, **options)
    inverted = extract_features(first, paths, trunk_memo=memo, transform=lambda im, key: 255 - im,
                                transform_key="invert", **options)
    assert memo.computed == 3 * len(paths)
    np.testing.assert_allclose(inverted, extract_features(first, paths, transform=lambda im, key: 255 - im, **options),
                               rtol=1e-4, atol=1e-5)
    # an encoder that cannot be split runs as usual; a full memo computes without keeping
    tiny = TinyEncoder()
    np.testing.assert_allclose(extract_features(tiny, paths, trunk_memo=memo, **options),
                               extract_features(tiny, paths, **options), rtol=1e-5, atol=1e-6)
    small = TrunkMemo(blocks=2, max_bytes=0)
    extract_features(first, paths, trunk_memo=small, **options)
    assert len(small) == 0 and small.computed == len(paths)
