"""validate_inputs: every input of a paper-profile run checked before the first long phase, each problem named."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from mammoclip_kit.context import make_context
from mammoclip_kit.course.inputs import InputError, required_parts, validate_inputs
from mammoclip_kit.models.towers import DEFAULT_CORPUS, build_small_bert


def _ctx(tmp_path, inputs, profile="rehearsal", **params):
    given = {name: str(path) for name, path in inputs.items()}
    given.update(params)
    return make_context(None, profile=profile, output_dir=str(tmp_path / "out"), device="cpu", **given)


@pytest.fixture()
def data_copy(rehearsal_inputs, tmp_path):
    copy = tmp_path / "data_root"
    shutil.copytree(rehearsal_inputs["data_root"], copy)
    return {**rehearsal_inputs, "data_root": copy}


def test_the_rehearsal_inputs_pass_and_the_report_says_what_was_checked(rehearsal_inputs, tmp_path):
    report = str(validate_inputs(_ctx(tmp_path, rehearsal_inputs)))
    assert "b2-model-best-epoch-10.tar: loads with this text encoder" in report and "none missing" in report
    assert "input size 320×192" in report and "all 40 listed DICOMs present" in report
    assert "inspects the given checkpoint" in report


def test_a_missing_dicom_is_named_before_any_conversion(data_copy, tmp_path):
    victim = next((data_copy["data_root"] / "rsna" / "train_images").rglob("*.dcm"))
    victim.unlink()
    with pytest.raises(InputError, match=r"rsna/train.csv: 1 of 32 listed image\(s\) missing") as error:
        validate_inputs(_ctx(tmp_path, data_copy))
    assert victim.relative_to(data_copy["data_root"]).as_posix() in str(error.value)


def test_a_table_without_a_column_is_named(data_copy, tmp_path):
    csv = data_copy["data_root"] / "vindr" / "finding_annotations.csv"
    pd.read_csv(csv).drop(columns=["xmin"]).to_csv(csv, index=False)
    with pytest.raises(InputError, match=r"finding_annotations.csv: missing column\(s\) xmin"):
        validate_inputs(_ctx(tmp_path, data_copy))


def test_a_finding_without_test_boxes_stops_the_run_before_detection(data_copy, tmp_path):
    csv = data_copy["data_root"] / "vindr" / "finding_annotations.csv"
    frame = pd.read_csv(csv)
    calcification = frame["finding_categories"].str.contains("Suspicious Calcification") & (frame["split"] == "test")
    frame[~calcification].to_csv(csv, index=False)
    with pytest.raises(InputError, match=r"suspicious calcification \(4 training, 0 test\)"):
        validate_inputs(_ctx(tmp_path, data_copy), load_checkpoint=False)


def test_every_problem_is_listed_at_once(data_copy, tmp_path):
    shutil.rmtree(data_copy["data_root"] / "rsna")
    with pytest.raises(InputError) as error:
        validate_inputs(_ctx(tmp_path, data_copy, checkpoint=str(tmp_path / "b5-model-best-epoch-7.tar")))
    message = str(error.value)
    assert "2 problem(s)" in message and "b5-model-best-epoch-7.tar: no such file" in message
    assert "rsna/ needed for the cancer task" in message


def test_the_reports_are_needed_only_when_notebook_04_pretrains(data_copy, tmp_path):
    shutil.rmtree(data_copy["data_root"] / "reports")
    ctx = _ctx(tmp_path, data_copy)
    assert "reports" not in required_parts(ctx)
    validate_inputs(ctx, load_checkpoint=False)
    with pytest.raises(InputError, match="reports/ needed for pretraining from scratch"):
        validate_inputs(_ctx(tmp_path, data_copy, pretrain_from_scratch=True), load_checkpoint=False)


def test_checkpoint_and_text_encoder_problems(rehearsal_inputs, tmp_path):
    with pytest.raises(InputError, match="a released file needs text_encoder="):
        validate_inputs(_ctx(tmp_path, {k: v for k, v in rehearsal_inputs.items() if k != "text_encoder"},
                             profile="paper"))
    with pytest.raises(InputError, match="hub id, but offline .* not in the local Hugging Face cache"):
        validate_inputs(_ctx(tmp_path, rehearsal_inputs, text_encoder="nobody/no-such-bert-anywhere"))
    with pytest.raises(InputError, match="missing config.json"):
        validate_inputs(_ctx(tmp_path, rehearsal_inputs, text_encoder=str(tmp_path)))
    other = build_small_bert(DEFAULT_CORPUS, tmp_path / "other-bert", vocab_size=300, hidden=48, layers=1, heads=2,
                             max_length=512)
    with pytest.raises(InputError, match="b2-model-best-epoch-10.tar: cannot be loaded"):
        validate_inputs(_ctx(tmp_path, rehearsal_inputs, text_encoder=str(other)))  # weights do not fit


def test_the_paper_profile_needs_a_checkpoint(rehearsal_inputs, tmp_path):
    inputs = {k: v for k, v in rehearsal_inputs.items() if k != "checkpoint"}
    with pytest.raises(InputError, match="checkpoint: not given; the paper profile evaluates a given checkpoint"):
        validate_inputs(_ctx(tmp_path, inputs, profile="paper"))


def test_an_authors_png_release_replaces_the_dicom_check(data_copy, tmp_path, monkeypatch):
    shutil.rmtree(data_copy["data_root"] / "rsna" / "train_images")
    (data_copy["data_root"] / "rsna" / "train_images").mkdir()  # the layout's folder, but no DICOMs in it
    ctx = _ctx(tmp_path, data_copy)
    with pytest.raises(InputError, match="32 of 32 listed image"):
        validate_inputs(ctx, load_checkpoint=False)
    ctx.settings["tables"] = {**ctx.settings["tables"], "png_root": {"vindr": None, "rsna": "rsna_png"}}
    with pytest.raises(InputError, match="tables.png_root.rsna rsna_png: no such folder"):
        validate_inputs(ctx, load_checkpoint=False)
    (data_copy["data_root"] / "rsna_png").mkdir()
    assert "images from the PNG release rsna_png" in str(validate_inputs(ctx, load_checkpoint=False))
