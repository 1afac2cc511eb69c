"""The rehearsal profile's inputs and run order: what the paper profile takes, written at CI scale in the real formats."""

from __future__ import annotations

import zipfile

import pandas as pd
import pytest

from mammoclip_kit.context import PAPER_PROFILES, PROFILES, load_profile_settings, make_context
from mammoclip_kit.course.rehearsal import ensure_rehearsal_inputs
from mammoclip_kit.models.loader import image_tower, load_model
from mammoclip_kit.models.reference import read_reference_file


def test_the_checkpoint_is_in_the_released_layout_and_records_its_input_size(rehearsal_inputs):
    path = rehearsal_inputs["checkpoint"]
    assert path.name == "b2-model-best-epoch-10.tar" and zipfile.is_zipfile(path)  # a torch zip despite ".tar"
    data = read_reference_file(path)
    assert {"model", "config", "optimizer", "scheduler", "epoch", "train_loss"} <= set(data)
    assert data["config"]["base"]["image_size_h"] == 320 and data["config"]["base"]["image_size_w"] == 192
    assert data["config"]["model"]["image_encoder"]["name"] == "tf_efficientnetv2-detect"  # the authors' B2 name
    model = load_model(path, text_encoder=rehearsal_inputs["text_encoder"], device="cpu", verbose=False)
    assert model.load_report.coverage == 100.0 and not model.load_report.missing
    assert tuple(model.config.image_size) == (320, 192) and image_tower(model).image_size == (320, 192)


def test_the_text_encoder_is_a_save_pretrained_folder_shaped_like_bio_clinicalbert(rehearsal_inputs):
    from transformers import AutoConfig, AutoTokenizer

    folder = rehearsal_inputs["text_encoder"]
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    assert config.model_type == "bert" and config.max_position_embeddings == 512  # Bio_ClinicalBERT: 512 positions
    assert config.hidden_size == 32 and config.num_hidden_layers == 1  # tiny (Bio_ClinicalBERT: 768 × 12)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    assert len(tokenizer("irregular mass in the left breast")["input_ids"]) > 3


def test_the_data_root_holds_the_real_formats_and_nothing_else(rehearsal_inputs):
    root = rehearsal_inputs["data_root"]
    assert sorted(p.name for p in root.iterdir()) == ["reports", "rsna", "vindr"]  # no truth/, no cohort record
    breasts = pd.read_csv(root / "vindr" / "breast-level_annotations.csv", dtype=str)
    assert breasts["study_id"].nunique() == 10 and set(breasts["split"]) == {"training", "test"}
    assert all((root / "vindr" / "images" / s / f"{i}.dicom").is_file()
               for s, i in zip(breasts["study_id"], breasts["image_id"], strict=True))
    assert pd.read_csv(root / "rsna" / "train.csv", dtype=str)["patient_id"].nunique() == 8
    assert pd.read_csv(root / "reports" / "reports.csv", dtype=str)["patient_id"].nunique() == 6


def test_the_rehearsal_is_a_paper_profile_with_the_same_sections():
    assert "rehearsal" in PROFILES and set(PAPER_PROFILES) == {"paper", "rehearsal"}
    paper, rehearsal = load_profile_settings("paper"), load_profile_settings("rehearsal")
    assert set(paper) - {"profile"} == set(rehearsal) - {"profile", "inputs"}
    for section in paper:
        if isinstance(paper[section], dict) and section not in ("pretrain", "cohort"):
            assert set(paper[section]) == set(rehearsal[section]), section  # the same keys: the same code paths
    assert rehearsal["preprocess"]["mode"] == "paper" and rehearsal["detection"]["encoders"] == ["released"]


@pytest.mark.parametrize(("profile", "given", "expected"), [("smoke", None, True), ("classroom", None, True),
                                                            ("paper", None, False), ("rehearsal", None, False),
                                                            ("paper", True, True), ("smoke", False, False)])
def test_the_run_order_pretrains_from_scratch_only_when_asked(tmp_path, profile, given, expected):
    extra = {"data_root": str(tmp_path)} if profile == "paper" else {}
    ctx = make_context(None, profile=profile, output_dir=str(tmp_path), device="cpu", pretrain_from_scratch=given,
                       **extra)
    assert ctx.pretrain_from_scratch is expected
    assert ctx.is_paper is (profile in ("paper", "rehearsal"))


def test_the_paper_profile_asks_for_data_root_without_a_wrong_hint(tmp_path):
    with pytest.raises(ValueError, match="pass data_root") as error:
        make_context(None, profile="paper", output_dir=str(tmp_path), device="cpu")
    assert "MAMMOCLIP_DATA" not in str(error.value)  # that variable moves the embedded cohort, not the paper's data


def test_default_inputs_are_written_once_under_the_data_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("MAMMOCLIP_DATA", str(tmp_path / "data"))
    ctx = make_context(None, profile="rehearsal", output_dir=str(tmp_path / "out"), device="cpu")
    folder = tmp_path / "data" / "rehearsal"
    assert ctx.params["checkpoint"] == str(folder / "b2-model-best-epoch-10.tar") and not ctx.is_cohort
    assert ctx.data_root == folder / "data_root" and ctx.params["text_encoder"] == str(folder / "Bio_ClinicalBERT-tiny")
    paths = ensure_rehearsal_inputs(ctx)
    stamp = paths["checkpoint"].stat().st_mtime_ns
    assert ensure_rehearsal_inputs(ctx) == paths and paths["checkpoint"].stat().st_mtime_ns == stamp  # reused
    (folder / "rehearsal.json").unlink()
    with pytest.raises(FileExistsError, match="not written by the rehearsal"):
        ensure_rehearsal_inputs(ctx)  # a folder it did not write is never replaced
