"""Robustness runner on tiny stand-in encoders: paired drops, cache reuse, pooled vendor hold-out, the verdict."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _probe_fixtures import TinyEncoder, make_table

from mammoclip_kit.eval.encoders import EncoderSpec
from mammoclip_kit.eval.linear_probe import LinearProbeConfig
from mammoclip_kit.eval.metrics import roc_auc
from mammoclip_kit.eval.robustness import (
    CLEAN,
    DROP_COLUMNS,
    RobustnessConfig,
    RobustnessRun,
    _TestUnits,
    _units,
    attach_groups,
    claim_verdict,
    compare_drops,
    lesion_contrast,
    run_robustness,
)
from mammoclip_kit.eval.tasks import get_task


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("robust")
    return root, make_table(root, n_patients=24)


def test_run_gives_paired_drops_reuses_the_cache_and_pools_the_vendor_holdout(cohort, tmp_path) -> None:
    root, table = cohort
    encoders = {"a": TinyEncoder(0), "b": TinyEncoder(1)}
    specs = [EncoderSpec(n, lambda e=e: e) for n, e in encoders.items()]
    cfg = RobustnessConfig(tasks=["mass", "density"], shifts={"monochrome1": [1], "quantum_noise": [1, 5]},
                           holdout=["vendor"], n_boot=50, probe=LinearProbeConfig(C=1.0))
    kwargs = dict(tables={"vindr": table}, root=root, cache_dir=tmp_path / "cache", progress=False)
    run = run_robustness(specs, cfg=cfg, **kwargs)
    drops = run.drops()
    assert list(drops.columns) == list(DROP_COLUMNS)
    # per encoder and task: 3 shifted sets + the vendor hold-out
    assert len(drops) == 2 * 2 * 4
    assert set(drops["condition"]) == {"monochrome1", "quantum_noise 2000", "quantum_noise 50", "vendor hold-out"}
    n_test = int((table["split"] == "test").sum())
    assert (drops["n_test"] == n_test).all() and (drops["n_patients"] == 6).all()
    np.testing.assert_allclose(drops["drop"], drops["clean_value"] - drops["value"])
    assert (drops["drop_ci_low"] <= drops["drop"] + 1e-12).all() and (drops["drop"] <= drops["drop_ci_high"] + 1e-12).all()
    assert set(drops["metric"]) == {"auc", "balanced_accuracy"}
    # the clean AUC is the AUC of the stored clean scores
    labels = table[table["split"] == "test"]["Mass"].to_numpy()
    clean_auc = roc_auc(labels, run.scores[("a", "mass", *CLEAN)])
    assert drops[(drops["encoder"] == "a") & (drops["task"] == "mass")]["clean_value"].iloc[0] == pytest.approx(clean_auc)
    assert run.timing["shifted_computed"] == 2 * 3 and run.timing["encode_images_per_second"]["a"] > 0
    # the pooled hold-out scores every test image with a probe that never saw its vendor
    held = run.scores[("a", "mass", "vendor hold-out", 1)]
    assert held.shape == (n_test,) and np.isfinite(held).all()
    assert not np.allclose(held, run.scores[("a", "mass", *CLEAN)])
    # second run: every feature set from the cache, no encoder forward, same numbers
    calls = {n: e.calls for n, e in encoders.items()}
    again = run_robustness(specs, cfg=cfg, **kwargs)
    assert {n: e.calls for n, e in encoders.items()} == calls
    assert again.timing["shifted_from_cache"] == 2 * 3
    pd.testing.assert_frame_equal(again.drops(), drops)
    with pytest.raises(ValueError, match=r"unknown shift\(s\) \['blur'\]"):
        RobustnessConfig(shifts={"blur": [1]})
    with pytest.raises(ValueError, match="severity 7 outside"):
        RobustnessConfig(shifts={"jpeg": [7]})


def _run_from_scores(labels, patients, scores: dict, n_boot: int = 400) -> RobustnessRun:
    """A run built from given scores: the paired bootstrap and the verdict without any encoder."""
    frame = pd.DataFrame({"patient_id": patients, "Mass": labels})
    run = RobustnessRun(scores=scores)
    run.units["mass"] = _units(get_task("mass"), frame, n_boot, seed=0)
    return run


def test_paired_bootstrap_and_verdict_on_known_scores() -> None:
    rng = np.random.default_rng(0)
    n = 400
    labels = (rng.random(n) < 0.3).astype(int)
    patients = np.repeat(np.arange(n // 4), 4).astype(str)
    signal = labels + rng.normal(0, 0.6, n)
    scores = {}
    for encoder, noise in (("mammoclip", 0.2), ("imagenet", 1.5)):
        scores[(encoder, "mass", *CLEAN)] = signal
        scores[(encoder, "mass", "jpeg", 3)] = signal + rng.normal(0, noise, n)
    run = _run_from_scores(labels, patients, scores)
    drops = run.drops().set_index("encoder")
    # the shared resamples make the drop's CI narrower than two independent intervals would
    for encoder in ("mammoclip", "imagenet"):
        row = drops.loc[encoder]
        independent = np.hypot((row["clean_ci_high"] - row["clean_ci_low"]) / 2, (row["ci_high"] - row["ci_low"]) / 2)
        assert row["drop_half_width"] < independent, encoder
    row = drops.loc["mammoclip"]
    assert row["drop_half_width"] < (row["clean_ci_high"] - row["clean_ci_low"]) / 4
    assert drops.loc["imagenet", "drop_ci_low"] > 0.05
    comparison = compare_drops(run, "mammoclip", ["imagenet", "clip"])
    assert len(comparison) == 1 and comparison["outcome"].iloc[0] == "less"  # clip missing: no row
    verdict = claim_verdict(comparison)
    assert verdict["overall"] == "holds" and "smaller drop in 1" in verdict["text"]
    # swap the roles: the subject degrades more
    swapped = compare_drops(run, "imagenet", ["mammoclip"])
    assert claim_verdict(swapped, "imagenet")["overall"] == "contradicted"
    assert claim_verdict(compare_drops(run, "mammoclip", ["clip"]))["overall"] == "not tested"


def test_breast_level_units_average_images() -> None:
    units = _TestUnits(np.array([1, 0]), np.array([0, 1]), np.array([0, 0, 1, 1]))
    np.testing.assert_allclose(units.units(np.array([0.2, 0.4, 0.6, 1.0])), [0.3, 0.8])


def test_lesion_contrast_sees_a_bright_blob() -> None:
    image = np.full((40, 40), 50, np.uint8)
    image[0, 0] = 0
    image[15:25, 15:25] = 200
    assert lesion_contrast(image, np.array([[15, 15, 25, 25]])) == pytest.approx(150 / 200)
    assert lesion_contrast(image, np.array([[0, 30, 8, 38]])) == pytest.approx(0.0, abs=1e-9)


def test_attach_groups(cohort) -> None:
    _, table = cohort
    truth = table[["image_id", "vendor"]].assign(dataset="vindr")
    plain = table.drop(columns=["vendor"])
    with_vendor = attach_groups(plain, truth, "vendor", dataset="vindr")
    assert with_vendor["vendor"].tolist() == table["vendor"].tolist()
    with pytest.raises(ValueError, match="no 'vendor' for image 'I000_0'"):
        attach_groups(plain, truth[truth["image_id"] != "I000_0"], "vendor")


def test_config_from_the_profile_and_the_notebook_parameters(tmp_path) -> None:
    from mammoclip_kit.context import make_context

    ctx = make_context(None, profile="smoke", output_dir=str(tmp_path), device="cpu", seed=3, batch_size=4)
    cfg = RobustnessConfig.from_context(ctx)
    section = ctx.section("robustness")
    assert cfg.seed == 3 and cfg.batch_size == 4 and cfg.probe.C == section["linear_probe"]["C"]
    assert cfg.shifts == {name: list(levels) for name, levels in section["shifts"].items()}
    assert cfg.image_size is None  # every encoder at its own input size
    with pytest.raises(ValueError, match=r"robustness section: unknown setting\(s\) \['severity'\]"):
        RobustnessConfig.from_dict({"severity": 3})
