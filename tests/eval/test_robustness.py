"""Robustness runner on a tiny stand-in encoder: tidy CSV, clean rows, drops, cache reuse and vendor hold-out."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _probe_fixtures import TinyEncoder, make_table

from mammoclip_kit.eval.encoders import EncoderSpec
from mammoclip_kit.eval.linear_probe import LinearProbeConfig
from mammoclip_kit.eval.robustness import (
    ROBUSTNESS_COLUMNS,
    RobustnessConfig,
    attach_groups,
    run_group_holdout,
    run_shift_grid,
    summarise_drops,
)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("robust")
    return root, make_table(root, n_patients=24)


def test_shift_grid_writes_tidy_csv_and_reuses_cache(cohort, tmp_path) -> None:
    root, table = cohort
    encoders = {"a": TinyEncoder(0), "b": TinyEncoder(1)}
    specs = [EncoderSpec(n, lambda e=e: e) for n, e in encoders.items()]
    cfg = RobustnessConfig(tasks=["mass", "density"], shifts={"monochrome1": [1], "gaussian_noise": [1, 3]}, n_boot=10,
                        probe=LinearProbeConfig(C=1.0))
    csv = tmp_path / "robustness.csv"
    kwargs = dict(tables={"vindr": table}, root=root, cache_dir=tmp_path / "cache", progress=False)
    result = run_shift_grid(specs, cfg=cfg, csv_path=csv, **kwargs)
    assert list(result.columns) == list(ROBUSTNESS_COLUMNS)
    stored = pd.read_csv(csv)
    assert len(stored) == len(result)
    # per encoder: (mass 1 + density 3 metrics) x (2 shifts x clean + 3 shifted severities)
    assert len(result) == 2 * 4 * (2 + 3)
    assert set(result["shift"]) == {"monochrome1", "gaussian_noise"}
    clean = result[result["severity"] == 0]
    assert np.allclose(clean["drop"], 0.0) and np.allclose(clean["value"], clean["clean_value"])
    shifted = result[result["severity"] > 0]
    np.testing.assert_allclose(shifted["drop"], shifted["clean_value"] - shifted["value"])
    assert (result["n_test"] == (table["split"] == "test").sum()).all()
    assert (result["ci_low"] <= result["value"] + 1e-12).all()
    assert result.attrs["timing"]["shifted_computed"] == 2 * 3
    # the inversion really changes what the probe sees: some metric moves for some encoder
    inverted = result[(result["shift"] == "monochrome1") & (result["severity"] == 1)]
    assert (inverted["drop"].abs() > 0).any()
    # second run: every feature set from the cache, no encoder forward, same numbers
    calls = {n: e.calls for n, e in encoders.items()}
    again = run_shift_grid(specs, cfg=cfg, **kwargs)
    assert {n: e.calls for n, e in encoders.items()} == calls
    assert again.attrs["timing"]["shifted_from_cache"] == 2 * 3
    np.testing.assert_allclose(again["value"], result["value"])
    drops = summarise_drops(result, metric="auc")
    assert set(drops["shift"]) == {"monochrome1", "gaussian_noise"}
    assert (drops[drops["shift"] == "gaussian_noise"]["severity"] == 3).all()
    with pytest.raises(ValueError, match=r"unknown shift\(s\) \['blur'\]"):
        run_shift_grid(specs, cfg=RobustnessConfig(shifts={"blur": [1]}), **kwargs)


def test_group_holdout_and_attach_groups(cohort, tmp_path) -> None:
    root, table = cohort
    truth = table[["image_id", "vendor"]].assign(dataset="vindr")
    plain = table.drop(columns=["vendor"])
    with_vendor = attach_groups(plain, truth, "vendor", dataset="vindr")
    assert with_vendor["vendor"].tolist() == table["vendor"].tolist()
    with pytest.raises(ValueError, match="no 'vendor' for image 'I000_0'"):
        attach_groups(plain, truth[truth["image_id"] != "I000_0"], "vendor")
    spec = [EncoderSpec("a", lambda: TinyEncoder(0))]
    cfg = RobustnessConfig(tasks=["density"], n_boot=10)
    result = run_group_holdout(spec, with_vendor, "vindr", "vendor", cfg, root=root, cache_dir=tmp_path,
                               csv_path=tmp_path / "holdout.csv", progress=False)
    assert set(result["group"]) == {"A", "B", "C"}
    assert set(result["severity"]) == {0, 1} and set(result["experiment"]) == {"holdout:vendor"}
    for group, part in result.groupby("group"):
        test_rows = ((with_vendor["split"] == "test") & (with_vendor["vendor"] == group)).sum()
        assert (part["n_test"] == test_rows).all()
        held = part[part["severity"] == 1]
        train_rows = ((with_vendor["split"] == "training") & (with_vendor["vendor"] != group)).sum()
        assert (held["n_train"] == train_rows).all()
    assert pd.read_csv(tmp_path / "holdout.csv").shape[0] == len(result)


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
