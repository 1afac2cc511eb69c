"""The runner never reports "ok" for a notebook that printed ``missing input:`` lines (issue 17)."""

import json

import nbformat

from mammoclip_kit.course import runner
from mammoclip_kit.data.records import MISSING_INPUT


def _notebook(path, body):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("profile = None\noutput_dir = None\nseed = 0\n")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


MISSING = f"""
import sys
print("tables built")
print("{MISSING_INPUT} data/reports/images/p1/a.dcm is not on disk (listed in reports.csv row 1 (line 2))", file=sys.stderr)
print("{MISSING_INPUT} data/reports/images/p1/a.dcm is not on disk (listed in reports.csv row 1 (line 2))", file=sys.stderr)
"""
CLEAN = """
import sys
print("a note on stderr that names no missing input", file=sys.stderr)
"""


def test_missing_inputs_make_the_status_and_the_exit_code(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "nbs"
    folder.mkdir()
    _notebook(folder / "00_missing.ipynb", MISSING)
    _notebook(folder / "01_clean.ipynb", CLEAN)
    monkeypatch.setattr(runner, "NOTEBOOK_DIR", folder)
    code = runner.main(["--profile", "smoke", "--output", str(tmp_path / "out"), "--no-prepare", "--timeout", "120"])
    assert code == 1
    state = json.loads((tmp_path / "out" / runner.STATE_FILE).read_text())
    assert state["00_missing"]["status"] == runner.MISSING_INPUTS and state["01_clean"]["status"] == "ok"
    captured = capsys.readouterr()
    assert "00_missing  missing inputs" in captured.out
    assert captured.err.count("data/reports/images/p1/a.dcm is not on disk") == 1  # listed once, repeats folded
    assert "reported missing inputs: 00_missing" in captured.err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["notebooks"]["00_missing"]["status"] == runner.MISSING_INPUTS
