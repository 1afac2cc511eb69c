"""Execute every notebook in the smoke profile through the runner (papermill), in order, once per session.

Each notebook is its own test so that a failure names the notebook; the runner's report (failing cell, stderr,
traceback) is the assertion message. The tables notebook reads the summary these runs produce.
"""

import json
from pathlib import Path

import pytest

from mammoclip_kit.course import runner

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
