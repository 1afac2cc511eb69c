"""Notebook 10 never mixes results of different checkpoints unawares (issue 17): each notebook's metrics record the
checkpoint it evaluated, the tables name it, and results of different checkpoints are marked and warned about."""

from __future__ import annotations

import json
from pathlib import Path

from mammoclip_kit.context import RunContext
from mammoclip_kit.course import tables as T


def _kit_folder(folder: Path, sha: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"format": "mammoclip-kit", "weights_sha256": sha}))
    return folder


def _context(output_dir: Path, **params) -> RunContext:
    return RunContext(profile="smoke", data_root=output_dir / "data", output_dir=output_dir, device="cpu", seed=0,
                      settings={}, params=params)


def test_write_metrics_records_the_checkpoint_of_the_run(tmp_path):
    ctx = _context(tmp_path)
    assert json.loads(ctx.write_metrics({"x": 1}, "05_zero_shot_and_retrieval").read_text())["checkpoint"] is None
    _kit_folder(ctx.checkpoint_dir("mammoclip"), "a1" * 32)
    recorded = json.loads(ctx.write_metrics({"x": 1}, "05_zero_shot_and_retrieval").read_text())["checkpoint"]
    assert recorded == {"checkpoint": "checkpoints/mammoclip", "name": "mammoclip", "kind": "kit folder",
                        "sha256": "a1" * 6, "source": "the smoke profile's model"}
    released = tmp_path / "b2-model-best-epoch-10.tar"
    released.write_bytes(b"released weights")
    given = _context(tmp_path, checkpoint=str(released))
    recorded = json.loads(given.write_metrics({"x": 1}, "06_data_efficiency").read_text())["checkpoint"]
    assert recorded["kind"] == "released file" and recorded["source"] == "checkpoint parameter"
    assert recorded["checkpoint"] == str(released) and len(recorded["sha256"]) == 12


def _two_result_files(tmp_path: Path, second_sha: str) -> dict:
    """Results of notebooks 05 and 09 as written by write_metrics, from checkpoints ``a1…`` and ``second_sha``."""
    for notebook, sha, metrics in (
            ("05_zero_shot_and_retrieval", "a1" * 32, {"model": "kit smoke model 'mammoclip'",
                                                       "kit_protocol": {"vindr_mass_auc": 0.66}}),
            ("09_mammo_factor", second_sha, {"model": "m", "mass_map25": 0.4, "gradcam_mass_map25": 0.3})):
        folder = tmp_path / "checkpoints" / sha[:4]
        if not folder.exists():
            _kit_folder(folder, sha)
        ctx = _context(tmp_path, checkpoint=str(folder))
        ctx.write_metrics(metrics, notebook)
    return T.load_summary(tmp_path)


def test_results_of_two_checkpoints_are_marked_and_warned_about(tmp_path):
    summary = _two_result_files(tmp_path, "b2" * 32)
    warning = T.checkpoint_warning(summary)
    assert warning is not None and warning.startswith("WARNING: these tables mix results of different checkpoints")
    assert f"05_zero_shot_and_retrieval: a1a1 (kit folder, sha256 {'a1' * 6})" in warning
    assert f"09_mammo_factor: b2b2 (kit folder, sha256 {'b2' * 6})" in warning
    blocks = {b.title: b for b in T.all_tables(summary)}
    zero_shot, factor = blocks["Zero-shot classification"], blocks["Mammo-FActOR weakly supervised localization"]
    assert set(zero_shot.kit["checkpoint"]) == {f"a1a1 (kit folder, sha256 {'a1' * 6})"}
    assert set(factor.kit["checkpoint"]) == {f"b2b2 (kit folder, sha256 {'b2' * 6})"}
    assert zero_shot.kit_label.endswith(f"checkpoint a1a1 (kit folder, sha256 {'a1' * 6})")
    assert factor.kit_cells == 2  # FActOR and Grad-CAM mass @0.25; the checkpoint label column is no cell
    metrics = T.tables_metrics(list(blocks.values()), summary)
    assert metrics["mixed_checkpoints"] is True and set(metrics["checkpoints"]) == {"05_zero_shot_and_retrieval",
                                                                                   "09_mammo_factor"}


def test_results_of_one_checkpoint_carry_no_mark(tmp_path):
    summary = _two_result_files(tmp_path, "a1" * 32)
    assert T.checkpoint_warning(summary) is None
    assert all(b.kit is None or "checkpoint" not in b.kit.columns for b in T.all_tables(summary))
    assert T.tables_metrics(T.all_tables(summary), summary)["mixed_checkpoints"] is False


def test_a_notebook_without_a_recorded_checkpoint_cannot_be_assumed_the_same(tmp_path):
    summary = _two_result_files(tmp_path, "a1" * 32)
    summary["notebooks"]["09_mammo_factor"]["checkpoint"] = None  # written before the kit recorded it
    assert "09_mammo_factor: not recorded" in T.checkpoint_warning(summary)
