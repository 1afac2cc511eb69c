"""The papermill runner: parameters, summary, failure report, resume, exit code."""

import argparse
import json
import re

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


def _slow_notebook(path, counter, sleep):
    """A notebook whose second code cell counts its runs in ``counter`` and then sleeps ``sleep`` seconds."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("profile = None\noutput_dir = None\nseed = 0\n")
    params.metadata["tags"] = ["parameters"]
    body = (f"import pathlib, time\ncounter = pathlib.Path({str(counter)!r})\n"
            "counter.write_text(str(int(counter.read_text() or 0) + 1) if counter.exists() else '1')\n"
            f"time.sleep({sleep})\n")
    nb.cells = [params, nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_a_timeout_fails_the_notebook_naming_the_cell_and_the_time_without_a_rerun(tmp_path):
    counter = tmp_path / "runs.txt"
    _slow_notebook(tmp_path / "00_slow.ipynb", counter, 30)
    result = runner.run_notebook(tmp_path / "00_slow.ipynb", tmp_path / "out", {}, timeout=3)
    assert result.status == "failed" and result.extra["timed_out"] and "retried" not in result.extra
    assert counter.read_text() == "1"  # the notebook ran once: its long phase was not started a second time
    # the time is measured, so a loaded machine may print 4 s: the test names the cell and the limit exactly
    assert re.match(r"code cell 3 of 3 \(notebook cell 2\) ran [3-9] s, past the per-cell timeout of 3 s", result.error)
    assert "time.sleep(30)" in result.failing_cell and result.extra["timed_out_cell"] == 2
    assert 3 <= result.wall_s < 30
    _notebook(tmp_path / "01_bad.ipynb", BAD)
    bad = runner.run_notebook(tmp_path / "01_bad.ipynb", tmp_path / "out", {}, timeout=30)
    assert bad.status == "failed" and "retried" not in bad.extra and "timed_out" not in bad.extra


def test_retries_are_opt_in_and_the_reported_time_counts_every_attempt(tmp_path):
    counter = tmp_path / "runs.txt"
    _slow_notebook(tmp_path / "00_slow.ipynb", counter, 30)
    result = runner.run_notebook(tmp_path / "00_slow.ipynb", tmp_path / "out", {}, timeout=2, retries=1)
    assert result.status == "failed" and len(result.extra["retried"]) == 1 and counter.read_text() == "2"
    assert result.wall_s >= 4  # two attempts of at least 2 s each (the old runner reported the last one only)


def test_live_progress_names_the_running_cell_and_its_time(tmp_path, capsys):
    counter = tmp_path / "runs.txt"
    _slow_notebook(tmp_path / "00_slow.ipynb", counter, 2.5)
    result = runner.run_notebook(tmp_path / "00_slow.ipynb", tmp_path / "out", {"seed": 1}, timeout=30,
                                 progress="lines")
    assert result.status == "ok"
    err = capsys.readouterr().err
    assert "00_slow: cell 4/4 done in 2." in err  # the injected parameters cell counts; quick cells print nothing
    assert "cell 2/4" not in err


def test_cell_progress_heartbeat_and_terminal_status_line(capsys):
    import io
    import time

    stream = io.StringIO()
    progress = runner.CellProgress("07_localization", 12, "lines", stream, min_seconds=0.0, heartbeat=0.5)
    progress.on_cell_execute(cell=nbformat.v4.new_code_cell("train()"), cell_index=5)
    time.sleep(1.6)
    assert progress.running() and progress.cell_index == 5 and progress.source == "train()"
    progress.on_cell_executed(cell=None, cell_index=5)
    progress.close()
    lines = stream.getvalue().splitlines()
    assert any("07_localization: cell 1/12 still running" in line for line in lines)
    assert lines[-1].startswith("  07_localization: cell 1/12 done in 1.")
    tty = io.StringIO()
    status = runner.CellProgress("02_dicom", 3, "tty", tty)
    status.on_cell_execute(cell=nbformat.v4.new_code_cell("x"), cell_index=1)
    status.close()
    assert "02_dicom  cell 1/3  0:00  (this cell 0:00)" in tty.getvalue()


def test_kernels_import_this_checkout_and_draw_static_progress_bars(tmp_path, monkeypatch):
    """A user with two clones runs the code of the clone whose runner they call; an executed notebook shows each bar
    once, in its final state (a live widget would be saved at 0 %)."""
    folder = tmp_path / "nbs"
    folder.mkdir()
    _notebook(folder / "00_env.ipynb", """
import json, os, pathlib
import mammoclip_kit
from mammoclip_kit.env import progress_bar
bar = progress_bar(range(3))
list(bar)
from transformers.utils import logging as hf_logging
hf_bars = hf_logging.is_progress_bar_enabled()
pathlib.Path(output_dir, "seen.json").write_text(json.dumps({
    "package": str(pathlib.Path(mammoclip_kit.__file__).resolve().parents[1]),
    "progress": os.environ.get("MAMMOCLIP_PROGRESS"), "bar": type(bar).__name__,
    "widgets": __import__("mammoclip_kit.env").env.widgets_available(), "hf_bars": hf_bars}))
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
    assert seen == {"package": checkout, "progress": "static", "bar": "StaticBar", "widgets": False,
                    "hf_bars": False}  # static viewers
    executed = nbformat.read(out / "notebooks" / "00_env.ipynb", as_version=4)
    shown = "".join(o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    assert "100%" in shown and "3/3" in shown  # the final count, printed once
    from mammoclip_kit.course import check_executed

    assert not check_executed.check_notebook(out / "notebooks" / "00_env.ipynb")
    import os

    assert os.environ["PYTHONPATH"] == str(tmp_path / "elsewhere") and "MAMMOCLIP_PROGRESS" not in os.environ
    assert "MAMMOCLIP_BATCH" not in os.environ


@pytest.mark.parametrize(("profile", "given", "expected"), [("smoke", None, 300), ("classroom", None, 1200),
                                                            ("paper", None, None), ("rehearsal", None, 300),
                                                            ("classroom", 0, None), ("smoke", 7, 7)])
def test_every_profile_bounds_its_cells_unless_told_otherwise(notebook_dir, tmp_path, monkeypatch, profile, given,
                                                             expected):
    seen = []

    def fake_run_notebook(notebook, output_dir, params, *, timeout, progress, retries):
        seen.append(timeout)
        return runner.NotebookResult(notebook=notebook.stem, status="ok")

    monkeypatch.setattr(runner, "run_notebook", fake_run_notebook)
    runner.run(profile, only=["00"], output=tmp_path / "out", notebook_dir=notebook_dir, prepare=False,
               verbose=False, timeout=given)
    assert seen == [expected]


def test_static_bars_print_their_final_count_once_even_when_a_loop_breaks(monkeypatch, capsys):
    """``MAMMOCLIP_PROGRESS=static`` (the runner's kernels): nothing while the loop runs, one line at the end. A loop
    cut by a step cap counts the step it ran (tqdm's own count read 0/3 there: a bar "frozen at 0 %")."""
    from mammoclip_kit.env import progress_bar

    monkeypatch.setenv("MAMMOCLIP_PROGRESS", "static")
    for _ in progress_bar(range(3), desc="fine-tune epoch 1/1"):
        break
    for _ in progress_bar(range(4), desc="embed"):
        pass
    with progress_bar(total=2, desc="manual") as bar:
        bar.update(2)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("fine-tune epoch 1/1:  33%") and "1/3" in lines[0]
    assert "4/4" in lines[1] and "100%" in lines[1] and "2/2" in lines[2]
    monkeypatch.setenv("MAMMOCLIP_PROGRESS", "0")
    assert progress_bar(range(2)).disable
