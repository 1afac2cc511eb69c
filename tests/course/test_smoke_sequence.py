"""Execute every notebook in the smoke profile through the runner (papermill), in order, once per session.

Each notebook is its own test so that a failure names the notebook; the runner's report (failing cell, stderr,
traceback) is the assertion message. The tables notebook reads the summary these runs produce.
"""

import json
from pathlib import Path

import pytest

from mammoclip_kit.course import check_executed, runner

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = runner.discover_notebooks(ROOT / "notebooks")


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("runs") / "smoke"
    # a per-cell bound: a lost kernel message must fail (and be retried) instead of hanging CI
    results = runner.run("smoke", output=output, verbose=True, timeout=300)
    return output, {r.notebook: r for r in results}


@pytest.mark.parametrize("notebook", [p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_smoke_profile(smoke_run, notebook):
    _, results = smoke_run
    result = results[notebook]
    message = (f"{notebook} failed\n--- failing cell ---\n{result.failing_cell}\n--- stderr ---\n{result.stderr}"
               f"\n--- error ---\n{result.error}")
    assert result.status == "ok", message


def test_summary_collects_metrics_of_every_notebook(smoke_run):
    output, results = smoke_run
    summary = json.loads((output / "summary.json").read_text())
    assert summary["profile"] == "smoke"
    for notebook, result in results.items():
        if result.status == "ok":
            assert summary["notebooks"][notebook].get("metrics"), f"{notebook} wrote no metrics"


def test_executed_notebooks_pass_the_checker(smoke_run):
    """What a teacher would see on the projector: no traceback, no warning on stderr, every exercise answered and
    numbered, every saved figure titled and labelled (``mammoclip_kit.course.check_executed``)."""
    output, _ = smoke_run
    found = check_executed.check_run(output / "notebooks", output / "figures")
    assert not found, "\n".join(map(str, found))
    assert (output / "figures" / "figures.json").exists()


def test_no_progress_bar_is_left_at_zero(smoke_run):
    output, _ = smoke_run
    frozen = [f for f in check_executed.check_run(output / "notebooks") if f.rule == "frozen-progress"]
    assert not frozen, "\n".join(map(str, frozen[:10]))
