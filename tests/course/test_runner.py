"""The papermill runner: parameters, summary, failure report, resume, exit code."""

import argparse
import json

import nbformat
import pytest

from mammoclip_kit.course import runner


def _notebook(path, body):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("profile = None\noutput_dir = None\nseed = 0\n")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


GOOD = """
from mammoclip_kit.context import make_context
ctx = make_context("{stem}", profile=profile, output_dir=output_dir, seed=seed)
ctx.write_metrics({{"seed_seen": seed, "profile_seen": profile}})
"""
BAD = """
import sys
print("about to fail", file=sys.stderr)
raise ValueError("deliberate failure in the fixture")
"""


@pytest.fixture()
def notebook_dir(tmp_path):
    folder = tmp_path / "nbs"
    folder.mkdir()
    _notebook(folder / "00_first.ipynb", GOOD.format(stem="00_first"))
    _notebook(folder / "01_second.ipynb", GOOD.format(stem="01_second"))
    return folder


def test_parse_parameter_reads_literals_and_rejects_unknown_names():
    assert runner.parse_parameter("seed=3") == ("seed", 3)
    assert runner.parse_parameter("data_root=some/folder") == ("data_root", "some/folder")
    assert runner.parse_parameter("retrain=True") == ("retrain", True)
    with pytest.raises(argparse.ArgumentTypeError, match="vocabulary"):
        runner.parse_parameter("lr=0.1")
    with pytest.raises(argparse.ArgumentTypeError, match="key=value"):
        runner.parse_parameter("seed")


def test_discover_orders_and_filters(notebook_dir):
    assert [p.stem for p in runner.discover_notebooks(notebook_dir)] == ["00_first", "01_second"]
    assert [p.stem for p in runner.discover_notebooks(notebook_dir, ["01"])] == ["01_second"]
    with pytest.raises(SystemExit, match="07"):
        runner.discover_notebooks(notebook_dir, ["07"])


def test_run_writes_executed_copies_summary_and_resumes(notebook_dir, tmp_path, capsys):
    out = tmp_path / "out"
    results = runner.run("smoke", parameters={"seed": 4}, output=out, notebook_dir=notebook_dir, prepare=False)
    assert [r.status for r in results] == ["ok", "ok"]
    assert (out / "notebooks" / "00_first.ipynb").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["profile"] == "smoke"
    assert summary["notebooks"]["01_second"]["metrics"] == {"seed_seen": 4, "profile_seen": "smoke"}
    table = capsys.readouterr().out
    assert "00_first" in table and "summary.json" in table

    again = runner.run("smoke", parameters={"seed": 4}, output=out, notebook_dir=notebook_dir, prepare=False,
                       resume=True)
    assert [r.status for r in again] == ["skipped (resume)"] * 2
    changed = runner.run("smoke", parameters={"seed": 5}, output=out, notebook_dir=notebook_dir, prepare=False,
                         resume=True, only=["00"])
    assert [r.status for r in changed] == ["ok"]


def test_failure_prints_cell_stderr_and_traceback_and_exits_nonzero(notebook_dir, tmp_path, capsys, monkeypatch):
    _notebook(notebook_dir / "02_broken.ipynb", BAD)
    monkeypatch.setattr(runner, "NOTEBOOK_DIR", notebook_dir)
    code = runner.main(["--profile", "smoke", "--output", str(tmp_path / "o"), "--no-prepare", "--only", "02"])
    assert code == 1
    err = capsys.readouterr().err
    assert "FAILED: 02_broken" in err
    assert 'raise ValueError("deliberate failure in the fixture")' in err  # the failing cell's source
    assert "about to fail" in err  # its stderr
    assert "ValueError" in err and "deliberate failure" in err  # the traceback


def test_a_cell_that_hangs_times_out_and_is_retried_once_and_a_raising_cell_is_not(tmp_path):
    # the first run sleeps past the per-cell timeout (as when a kernel message is lost); the retry finds the marker
    marker = tmp_path / "ran_once"
    body = (f"import pathlib, time\nmarker = pathlib.Path({str(marker)!r})\n"
            "if not marker.exists():\n    marker.touch()\n    time.sleep(30)\n")
    _notebook(tmp_path / "00_slow.ipynb", body)
    result = runner.run_notebook(tmp_path / "00_slow.ipynb", tmp_path / "out", {}, timeout=3)
    assert result.status == "ok" and len(result.extra["retried"]) == 1 and "Timeout" in result.extra["retried"][0]
    marker.unlink()
    stuck = runner.run_notebook(tmp_path / "00_slow.ipynb", tmp_path / "out", {}, timeout=3, retries=0)
    assert stuck.status == "failed" and stuck.extra["timed_out"] and "retried" not in stuck.extra
    _notebook(tmp_path / "01_bad.ipynb", BAD)
    bad = runner.run_notebook(tmp_path / "01_bad.ipynb", tmp_path / "out", {}, timeout=30)
    assert bad.status == "failed" and "retried" not in bad.extra and "timed_out" not in bad.extra


def test_kernels_import_this_checkout_and_draw_no_progress_bars(tmp_path, monkeypatch):
    """A user with two clones runs the code of the clone whose runner they call; executed notebooks carry no bars."""
    folder = tmp_path / "nbs"
    folder.mkdir()
    _notebook(folder / "00_env.ipynb", """
import json, os, pathlib
import mammoclip_kit
from mammoclip_kit.env import progress_bar
bar = progress_bar(range(3))
list(bar)
pathlib.Path(output_dir, "seen.json").write_text(json.dumps({
    "package": str(pathlib.Path(mammoclip_kit.__file__).resolve().parents[1]),
    "progress": os.environ.get("MAMMOCLIP_PROGRESS"), "disabled": bar.disable,
    "widgets": __import__("mammoclip_kit.env").env.widgets_available()}))
""")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "elsewhere"))
    monkeypatch.delenv("MAMMOCLIP_PROGRESS", raising=False)
    monkeypatch.delenv("MAMMOCLIP_BATCH", raising=False)
    out = tmp_path / "out"
    out.mkdir()
    results = runner.run("smoke", parameters={"output_dir": str(out)}, output=out, notebook_dir=folder,
                         prepare=False, verbose=False)
    assert [r.status for r in results] == ["ok"], results[0].error
    seen = json.loads((out / "seen.json").read_text())
    checkout = str(runner.Path(runner.__file__).resolve().parents[2])
    assert seen == {"package": checkout, "progress": "0", "disabled": True, "widgets": False}  # static viewers
    import os

    assert os.environ["PYTHONPATH"] == str(tmp_path / "elsewhere") and "MAMMOCLIP_PROGRESS" not in os.environ
    assert "MAMMOCLIP_BATCH" not in os.environ


@pytest.mark.parametrize(("profile", "given", "expected"), [("smoke", None, 300), ("classroom", None, 1200),
                                                            ("paper", None, None), ("classroom", 0, None),
                                                            ("smoke", 7, 7)])
def test_every_profile_bounds_its_cells_unless_told_otherwise(notebook_dir, tmp_path, monkeypatch, profile, given,
                                                             expected):
    seen = []

    def fake_run_notebook(notebook, output_dir, params, *, timeout, progress):
        seen.append(timeout)
        return runner.NotebookResult(notebook=notebook.stem, status="ok")

    monkeypatch.setattr(runner, "run_notebook", fake_run_notebook)
    runner.run(profile, only=["00"], output=tmp_path / "out", notebook_dir=notebook_dir, prepare=False,
               verbose=False, timeout=given)
    assert seen == [expected]
