"""Every notebook in the rehearsal profile: the paper profile's code paths at CI scale, through the runner (papermill).

The inputs are what a researcher brings to the paper profile — a released-layout ``.tar`` (EfficientNet-B2, seeded
weights, the authors' archive layout), a text-encoder folder written with ``save_pretrained`` and a data root in the
VinDr-Mammo / RSNA / reports formats — given as parameters, as the README's paper command gives them. Each notebook is
its own test, so that a failure names it; the runner's report (failing cell, stderr, traceback) is the message.
"""

import json
from pathlib import Path

import pytest

from mammoclip_kit.course import check_executed, runner

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = runner.discover_notebooks(ROOT / "notebooks")


@pytest.fixture(scope="session")
def rehearsal_run(rehearsal_inputs, tmp_path_factory):
    output = tmp_path_factory.mktemp("runs") / "rehearsal"
    parameters = {name: str(path) for name, path in rehearsal_inputs.items()}
    results = runner.run("rehearsal", output=output, parameters=parameters, verbose=True, timeout=300)
    return output, {r.notebook: r for r in results}


@pytest.mark.parametrize("notebook", [p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_rehearsal_profile(rehearsal_run, notebook):
    _, results = rehearsal_run
    result = results[notebook]
    message = (f"{notebook} failed\n--- failing cell ---\n{result.failing_cell}\n--- stderr ---\n{result.stderr}"
               f"\n--- error ---\n{result.error}")
    assert result.status == "ok", message


def test_the_paper_code_paths_were_taken(rehearsal_run):
    """Paper preprocessing, the given checkpoint evaluated (not pretrained), its weights all mapped from the file."""
    output, results = rehearsal_run
    summary = json.loads((output / "summary.json").read_text())
    assert summary["profile"] == "rehearsal"
    settings = json.loads((output / "png" / "vindr" / "settings.json").read_text())
    assert "paper" in json.dumps(settings)
    if results["04_contrastive_pretraining"].status == "ok":
        pretraining = summary["notebooks"]["04_contrastive_pretraining"]["metrics"]
        assert pretraining["pretrained_here"] is False
        assert pretraining["checkpoint"]["missing"] == 0 and pretraining["checkpoint"]["weights_mapped"] > 500
        assert not (output / "checkpoints" / "mammoclip").exists()  # nothing was trained from scratch


def test_executed_notebooks_pass_the_checker(rehearsal_run):
    """No traceback, no warning on stderr, no progress bar left at 0 %, every saved figure titled and labelled."""
    output, _ = rehearsal_run
    found = check_executed.check_run(output / "notebooks", output / "figures")
    assert not found, "\n".join(map(str, found))


def test_pretraining_from_scratch_runs_only_when_asked(rehearsal_run, rehearsal_inputs):
    """The same notebook 04 with ``pretrain_from_scratch=True``: paper-b2 with the local text encoder is trained (a
    couple of steps at the rehearsal's size) instead of the given checkpoint being inspected."""
    output, _ = rehearsal_run
    parameters = {name: str(path) for name, path in rehearsal_inputs.items()}
    parameters["pretrain_from_scratch"] = True
    result = runner.run("rehearsal", only=["04"], output=output, parameters=parameters, verbose=False, timeout=300,
                        prepare=False)[0]
    assert result.status == "ok", result.error
    metrics = json.loads((output / "metrics" / "04_contrastive_pretraining.json").read_text())["metrics"]
    assert "pretrained_here" not in metrics and metrics["mammoclip"]["steps"] == 2
    assert (output / "checkpoints" / "mammoclip" / "model.safetensors").exists()
