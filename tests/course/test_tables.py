"""Paper tables: the kit's metrics (as notebooks 05–09 write them) laid out next to the paper's numbers."""

from __future__ import annotations

import json

import pytest

from mammoclip_kit.course import tables as T
from mammoclip_kit.course.paper_results import PAPER_LABEL


def _summary() -> dict:
    """A hand-made summary with the structures notebooks 05–09 write (05 and 09 partly, 08 missing)."""
    probe_rows = [
        {"encoder": "mammoclip", "method": "linear_probe", "task": "mass", "budget": "50%", "metric": "auc",
         "value": 0.7},
        {"encoder": "mammoclip", "method": "linear_probe", "task": "mass", "budget": "100%", "metric": "auc",
         "value": 0.8},
        {"encoder": "random", "method": "finetune", "task": "mass", "budget": "100%", "metric": "auc", "value": 0.6},
        {"encoder": "mammoclip", "method": "linear_probe", "task": "density", "budget": "100%",
         "metric": "accuracy", "value": 0.5},
        {"encoder": "mammoclip", "method": "linear_probe", "task": "density", "budget": "100%",
         "metric": "macro_f1", "value": 0.4},
    ]
    return {
        "profile": "smoke",
        "notebooks": {
            "05_zero_shot_and_retrieval": {"status": "ok", "data": "embedded cohort (smoke)", "metrics": {
                "model": "kit smoke model 'mammoclip'",
                "paper_protocol": {"vindr_mass_auc": 0.61, "vindr_suspicious_calcification_auc": None},
                "kit_protocol": {"vindr_mass_auc": 0.66, "rsna_malignancy_auc": 0.52}}},
            "06_data_efficiency": {"status": "ok", "data": "embedded cohort (smoke)",
                                   "metrics": {"table": probe_rows}},
            "07_localization": {"status": "ok", "data": "embedded cohort (smoke)", "metrics": {
                "finding": "Mass", "mass_mammoclip_frozen_voc_map50": 0.12, "mass_random_frozen_voc_map50": 0.05,
                "mass_mammoclip_finetune_voc_map50": 0.2, "mass_mammoclip_frozen_coco_map": 0.01}},
            "09_mammo_factor": {"status": "ok", "data": "embedded cohort (smoke)", "metrics": {
                "model": "m", "mass_map25": 0.4, "mass_map50": 0.2, "gradcam_mass_map25": 0.3, "calc_map25": None,
                "grid": [28, 16], "ceiling": {"oracle_map25_tower": 0.29, "oracle_map25_stitched": 0.57, "oracle_pointing_stitched": 1.0,
                                              "supervised_map25_stitched": 0.32, "supervised_pointing_stitched": 0.5}}},
        },
    }


def test_tables_lay_out_kit_numbers_beside_the_paper():
    blocks = {b.title: b for b in T.all_tables(_summary())}
    assert len(blocks) == 9
    zs = blocks["Zero-shot classification"]
    assert zs.kit.loc["kit smoke model 'mammoclip' · kit prompt ensembles", "VinDr mass AUC"] == 0.66
    assert zs.kit.loc["kit smoke model 'mammoclip' · paper prompts", "RSNA malignancy AUC (breast)"] is None or \
        zs.kit.isna().loc["kit smoke model 'mammoclip' · paper prompts", "RSNA malignancy AUC (breast)"]
    assert zs.paper.loc["Mammo-CLIP EN-B5", "VinDr mass AUC"] == "0.48"
    assert zs.kit_label == "kit, smoke profile, embedded cohort (smoke)"
    assert zs.paper_label.startswith(PAPER_LABEL)

    mass = blocks["VinDr mass: linear probe and fine-tune by label fraction"]
    assert list(mass.kit.columns) == ["LP 50%", "LP 100%", "FT 100%"]  # paper's column order first
    assert mass.kit.loc["mammoclip", "LP 100%"] == 0.8 and mass.kit.loc["random", "FT 100%"] == 0.6
    density = blocks["VinDr density: linear probe and fine-tune by label fraction"]
    assert density.kit.loc["mammoclip", "LP 100%"] == 0.5  # accuracy, as the paper, not macro-F1
    calc = blocks["VinDr suspicious calcification: linear probe and fine-tune by label fraction"]
    assert calc.kit is None and "without the calcification task" in calc.note

    det = blocks["Supervised localization, mass (RetinaNet)"]
    assert det.kit.loc["mammoclip", "frozen 100%"] == 0.12 and det.kit.loc["mammoclip", "FT 100%"] == 0.2
    assert det.kit.loc["random", "frozen 100%"] == 0.05
    assert blocks["Supervised localization, calcification (RetinaNet)"].kit is None

    factor = blocks["Mammo-FActOR weakly supervised localization"]
    assert factor.kit.loc["m · FActOR", "mass @0.25"] == 0.4
    assert factor.kit.loc["same model · Grad-CAM", "mass @0.25"] == 0.3
    assert factor.kit.loc["ceiling · box oracle (28×16 grid, uses boxes)", ["mass @0.25", "mass pointing"]].tolist() \
        == [0.57, 1.0]
    supervised = factor.kit.loc["ceiling · box-supervised channel weights (28×16 grid, uses boxes)"]
    assert supervised["mass @0.25"] == 0.32 and supervised["mass pointing"] == 0.5
    assert factor.paper.loc["Mammo-CLIP EN-B5", "mass @0.25"] == "0.45"

    robust = blocks["Robustness: metric drop at the strongest shift"]
    assert robust.kit is None and robust.paper is None
    assert robust.kit_label == "kit, smoke profile: 08_robustness not run"


def test_tables_metrics_count_filled_cells_and_missing_notebooks():
    blocks = T.all_tables(_summary())
    metrics = T.tables_metrics(blocks)
    assert metrics["n_tables"] == 9
    assert metrics["kit_cells"]["VinDr mass: linear probe and fine-tune by label fraction"] == 3
    assert metrics["kit_cells"]["Supervised localization, mass (RetinaNet)"] == 3
    assert metrics["without_kit_numbers"]["Robustness: metric drop at the strongest shift"] == \
        "kit, smoke profile: 08_robustness not run"
    empty = T.tables_metrics(T.all_tables({"profile": "classroom", "notebooks": {}}))
    assert empty["n_tables_with_kit_numbers"] == 0 and len(empty["without_kit_numbers"]) == 9


def test_failed_notebook_is_reported_not_used():
    summary = _summary()
    summary["notebooks"]["09_mammo_factor"]["status"] = "failed"
    block = T.factor_table(summary)
    assert block.kit is None and "failed" in block.kit_label
    with pytest.raises(ValueError, match="unknown task"):
        T.probe_table(summary, "birads")


def test_load_summary_prefers_fresh_metrics_files(tmp_path):
    (tmp_path / "metrics").mkdir()
    (tmp_path / "summary.json").write_text(json.dumps({"profile": "smoke", "notebooks": {
        "09_mammo_factor": {"status": "ok", "metrics": {"mass_map25": 0.1}, "data": "old"}}}))
    (tmp_path / "metrics" / "09_mammo_factor.json").write_text(json.dumps(
        {"notebook": "09_mammo_factor", "profile": "smoke", "data_root": "embedded cohort (smoke)",
         "metrics": {"mass_map25": 0.5}}))
    (tmp_path / "metrics" / "07_localization.json").write_text(json.dumps(
        {"notebook": "07_localization", "profile": "smoke", "data_root": "d", "metrics": {"finding": "Mass"}}))
    summary = T.load_summary(tmp_path)
    assert summary["notebooks"]["09_mammo_factor"]["metrics"]["mass_map25"] == 0.5
    assert summary["notebooks"]["07_localization"]["status"] == "ok"
    assert T.load_summary(tmp_path / "nothing") == {"profile": None, "notebooks": {}}
    (tmp_path / "summary.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="notebooks"):
        T.load_summary(tmp_path)
