"""Run the notebook sequence of one profile with papermill and collect its metrics.

``python -m mammoclip_kit.course.runner --profile {smoke,classroom,paper,rehearsal} [--only 03 05] [-p key=value ...]
[--output DIR] [--resume] [--timeout S] [--retries N]``

* prepares the inputs (builds a missing cohort; the rehearsal profile writes its checkpoint, text encoder and data root)
  and checks them all before the first notebook (:func:`mammoclip_kit.course.inputs.validate_inputs`);
* executes ``notebooks/NN_*.ipynb`` in order (kernel ``python3``), injecting ``profile``, ``output_dir`` and every
  ``-p`` value into the cell tagged ``parameters``;
* writes the executed copies to ``<output>/notebooks/`` (default output: ``runs/<profile>``);
* merges the metrics JSON each notebook writes (``<output>/metrics/<notebook>.json``) into ``<output>/summary.json``;
* shows live progress on stderr (a status line with the running cell and the elapsed time on a terminal; in a log, a
  line per cell of 2 s or more and a heartbeat every minute); kernels draw static progress bars (final counts);
* a cell that runs past the per-cell timeout fails its notebook, naming the cell and the time (no silent rerun);
* prints a table (notebook, status, real wall time); on failure prints the failing cell's source, its stderr and the
  traceback, runs the remaining notebooks and exits non-zero;
* a notebook that ran to the end but printed ``missing input:`` lines (inputs listed in a CSV and absent on disk)
  gets status ``missing inputs``, not ``ok``: the lines are printed and the runner exits non-zero;
* ``--resume`` skips notebooks that already succeeded with the same parameters and the same notebook source.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import hashlib
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mammoclip_kit import env
from mammoclip_kit.context import PARAMETER_KINDS, PARAMETERS, PROFILES, check_parameter
from mammoclip_kit.errors import cli_errors

NOTEBOOK_DIR = env.repo_root() / "notebooks"
STATE_FILE = "runner_state.json"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")

#: The course: notebook stem -> what it teaches (the order of the design card).
SEQUENCE: dict[str, str] = {
    "00_welcome": "what Mammo-CLIP is, the profiles, your environment",
    "01_the_cohort": "the synthetic screening cohort: views, density, findings, vendors, reports",
    "02_dicom_to_png": "DICOM decoding, VOI/windowing, breast crop, the paper's PNGs",
    "03_reports_and_prompts": "report sections, cleaning, augmentation, label-to-text, prompts, training tables",
    "04_contrastive_pretraining": "CLIP and multi-view contrastive pretraining (MVS) on a CPU",
    "05_zero_shot_and_retrieval": "zero-shot classification by prompting, image-text retrieval",
    "06_data_efficiency": "linear probes and fine-tuning at 10/50/100 % of the labels",
    "07_localization": "RetinaNet on the Mammo-CLIP image tower, mAP",
    "08_robustness": "vendor hold-out and image shifts at graded severities",
    "09_mammo_factor": "Mammo-FActOR: sentence-level attribution maps and weak localization",
    "10_paper_tables": "the kit's numbers next to the paper's tables",
}


@dataclass
class NotebookResult:
    """Outcome of one notebook execution."""

    notebook: str
    status: str  # "ok" | "failed" | "missing inputs" | "skipped (resume)"
    wall_s: float = 0.0
    executed: str = ""
    error: str = ""
    failing_cell: str = ""
    stderr: str = ""
    fingerprint: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def discover_notebooks(directory: Path | None = None, only: list[str] | None = None) -> list[Path]:
    """Notebooks named ``NN_topic.ipynb`` in order; ``only`` keeps those whose number or stem is listed."""
    directory = Path(directory) if directory else NOTEBOOK_DIR
    notebooks = sorted(p for p in directory.glob("[0-9][0-9]_*.ipynb") if p.is_file())
    if only:
        wanted = {str(item) for item in only}
        notebooks = [p for p in notebooks if p.stem[:2] in wanted or p.stem in wanted]
        known = {p.stem[:2] for p in notebooks} | {p.stem for p in notebooks}
        missing = sorted(wanted - known)
        if missing:
            raise SystemExit(f"--only names no notebook for {missing} in {directory}")
    return notebooks


def parse_parameter(text: str) -> tuple[str, Any]:
    """``key=value`` → (key, value); the value is read as a Python literal when it is one, else kept as a string."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"parameter {text!r} is not of the form key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if key not in PARAMETERS:
        raise argparse.ArgumentTypeError(f"parameter {key!r} is not in the shared vocabulary {sorted(PARAMETERS)}")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    if PARAMETER_KINDS.get(key) == "path" and value is not None:
        value = raw  # a path or hub id stays the text as given (e.g. a folder named 2024)
    try:
        value = check_parameter(key, value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return key, value


def fingerprint(notebook: Path, parameters: dict[str, Any]) -> str:
    """Hash of the notebook source and its parameters (what ``--resume`` compares)."""
    digest = hashlib.sha256(notebook.read_bytes())
    digest.update(json.dumps(parameters, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def _failure_details(executed: Path) -> tuple[str, str]:
    """Source and stderr of the first cell that raised, read from papermill's executed copy."""
    import nbformat

    if not executed.exists():
        return "", ""
    nb = nbformat.read(executed, as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outputs = cell.get("outputs", [])
        if any(out.get("output_type") == "error" for out in outputs):
            stderr = "".join(out.get("text", "") for out in outputs
                             if out.get("output_type") == "stream" and out.get("name") == "stderr")
            return cell.source, stderr[-4000:]
    return "", ""


#: Status of a notebook that ran to the end but printed ``missing input:`` lines (inputs listed in a CSV that are not
#: on disk, :data:`mammoclip_kit.data.records.MISSING_INPUT`): its numbers leave those inputs out, so it is not "ok".
MISSING_INPUTS = "missing inputs"


def reported_missing_inputs(executed: Path) -> list[str]:
    """The ``missing input:`` lines an executed notebook printed on stderr (in order, without repeats)."""
    from mammoclip_kit.data.records import MISSING_INPUT

    try:
        cells = json.loads(Path(executed).read_text()).get("cells", [])
    except (OSError, ValueError):
        return []
    lines = [line.strip() for cell in cells for out in cell.get("outputs", [])
             if out.get("output_type") == "stream" and out.get("name") == "stderr"
             for line in "".join(out.get("text", "")).splitlines() if line.startswith(MISSING_INPUT)]
    return list(dict.fromkeys(lines))


def _timed_out(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError) or type(exc).__name__ in {"CellTimeoutError", "DeadKernelError"}


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


def count_code_cells(notebook: Path, parameters: dict[str, Any] | None = None) -> int:
    """Code cells papermill will execute: the non-empty code cells, plus the injected parameters cell."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    return sum(c.cell_type == "code" and bool(c.source.strip()) for c in nb.cells) + (1 if parameters else 0)


class CellProgress:
    """Live progress of one notebook through nbclient's cell hooks: which code cell runs and for how long.

    ``mode``: ``"tty"`` rewrites one status line (``03_reports  cell 7/24  0:42``) every second; ``"lines"`` (logs, CI)
    prints a line for every cell that took ``min_seconds`` or more and a heartbeat every ``heartbeat`` seconds while a
    cell runs; ``"off"`` prints nothing but still records the running cell (for a timeout report).
    """

    def __init__(self, name: str, total: int, mode: str = "lines", stream: Any = None, *, min_seconds: float = 2.0,
                 heartbeat: float = 60.0) -> None:
        import threading

        self.name, self.total, self.mode = name, total, mode
        self.stream = stream or sys.stderr
        self.min_seconds, self.heartbeat = min_seconds, heartbeat
        self.started = time.perf_counter()
        self.count, self.cell_index, self.source, self.cell_started = 0, None, "", None
        self._last_beat = self.started
        self._stop = threading.Event()
        self._thread = None
        if mode in ("tty", "lines"):
            self._thread = threading.Thread(target=self._tick, daemon=True)
            self._thread.start()

    # nbclient hooks (called with keyword arguments)
    def on_cell_execute(self, cell: Any = None, cell_index: int | None = None, **_: Any) -> None:
        self.count += 1
        self.cell_index, self.source, self.cell_started = cell_index, getattr(cell, "source", ""), time.perf_counter()
        self._last_beat = self.cell_started
        if self.mode == "tty":
            self._status()

    def on_cell_executed(self, cell: Any = None, cell_index: int | None = None, **_: Any) -> None:
        seconds = self.cell_seconds()
        self.cell_started = None
        if self.mode == "lines" and seconds >= self.min_seconds:
            self._print(f"  {self.name}: cell {self.count}/{self.total} done in {seconds:.1f} s "
                        f"({_clock(self.elapsed())} elapsed)")

    def cell_seconds(self) -> float:
        return 0.0 if self.cell_started is None else time.perf_counter() - self.cell_started

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def running(self) -> bool:
        return self.cell_started is not None

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self.mode == "tty":
            print("\r\x1b[2K", end="", file=self.stream, flush=True)

    def _status(self) -> None:
        line = f"{self.name}  cell {self.count}/{self.total}  {_clock(self.elapsed())}"
        if self.running():
            line += f"  (this cell {_clock(self.cell_seconds())})"
        print(f"\r\x1b[2K{line}", end="", file=self.stream, flush=True)

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            if self.mode == "tty":
                self._status()
            elif self.running() and time.perf_counter() - self._last_beat >= self.heartbeat:
                self._last_beat = time.perf_counter()
                self._print(f"  {self.name}: cell {self.count}/{self.total} still running "
                            f"({_clock(self.cell_seconds())}; {_clock(self.elapsed())} elapsed)")


def run_notebook(notebook: Path, output_dir: Path, parameters: dict[str, Any], *,
                 timeout: int | None = None, progress: bool | str = False, retries: int = 0) -> NotebookResult:
    """Execute one notebook with papermill; never raises for a failing notebook (the result says so).

    ``timeout`` bounds every cell (seconds). A cell that runs past it is a failure of the notebook that names the cell
    (its number and source) and how long it ran; the long phases are cached artefacts, so ``--resume`` or a rerun
    continues cheaply. ``retries`` (default 0) reruns a timed-out notebook with a fresh kernel that many times (for a
    kernel that lost a message); ``wall_s`` is always the real time of all attempts together. An error raised *by*
    the notebook is never retried. ``progress``: True/"tty"/"lines"/"off" (see :class:`CellProgress`).
    """
    start = time.perf_counter()
    result = _run_once(notebook, output_dir, parameters, timeout=timeout, progress=progress)
    attempts = []
    while result.status == "failed" and result.extra.get("timed_out") and len(attempts) < retries:
        attempts.append(result.error)
        print(f"{notebook.stem}: {result.error.splitlines()[0] if result.error else 'timed out'}; retrying with a "
              "fresh kernel", file=sys.stderr)
        result = _run_once(notebook, output_dir, parameters, timeout=timeout, progress=progress)
    if attempts:
        result.extra["retried"] = attempts
    result.wall_s = round(time.perf_counter() - start, 2)
    return result


def _progress_mode(progress: bool | str) -> str:
    if progress is True:
        return "tty" if sys.stderr.isatty() else "lines"
    return progress if progress in ("tty", "lines") else "off"


def _run_once(notebook: Path, output_dir: Path, parameters: dict[str, Any], *, timeout: int | None,
              progress: bool | str) -> NotebookResult:
    import papermill

    executed = output_dir / "notebooks" / notebook.name
    executed.parent.mkdir(parents=True, exist_ok=True)
    result = NotebookResult(notebook=notebook.stem, status="ok", executed=str(executed),
                            fingerprint=fingerprint(notebook, parameters))
    cells = CellProgress(notebook.stem, count_code_cells(notebook, parameters), _progress_mode(progress))
    start = time.perf_counter()
    try:
        with _kernel_environment():
            papermill.execute_notebook(
                str(notebook), str(executed), parameters=parameters, kernel_name="python3",
                cwd=str(notebook.parent), progress_bar=False, execution_timeout=timeout,
                report_mode=False, log_output=False,
                on_cell_execute=cells.on_cell_execute, on_cell_executed=cells.on_cell_executed)
    except papermill.PapermillExecutionError as exc:
        result.status = "failed"
        result.error = _ANSI.sub("", f"{exc.ename}: {exc.evalue}\n" + "\n".join(exc.traceback))
        result.failing_cell, result.stderr = _failure_details(executed)
    except Exception as exc:  # noqa: BLE001 - a broken kernel or notebook must not stop the batch
        result.status = "failed"
        result.error = f"{type(exc).__name__}: {exc}"
        if _timed_out(exc):
            result.extra["timed_out"] = True
            if cells.running():
                what = f"code cell {cells.count} of {cells.total} (notebook cell {cells.cell_index})"
                result.error = (f"{what} ran {cells.cell_seconds():.0f} s, past the per-cell timeout of {timeout} s "
                                f"({_clock(cells.elapsed())} into the notebook)\n{result.error}")
                result.failing_cell = cells.source
                result.extra["timed_out_cell"] = cells.cell_index
    finally:
        cells.close()
    result.wall_s = round(time.perf_counter() - start, 2)
    missing = reported_missing_inputs(executed) if result.status == "ok" else []
    if missing:
        result.status, result.extra["missing_inputs"] = MISSING_INPUTS, missing
    return result


@contextlib.contextmanager
def _kernel_environment():
    """Environment of the kernels the runner starts: this checkout's kit first on the path (a user with two clones runs
    the code of the clone whose runner they call), static progress bars (``MAMMOCLIP_PROGRESS=static``: a bar prints
    its final count once, where a widget would be saved as its first frame, 0 %; Hugging Face's own bars off) and
    interactive viewers off (``MAMMOCLIP_BATCH=1``: static figures only)."""
    root = str(Path(__file__).resolve().parents[2])
    saved = {name: os.environ.get(name) for name in ("PYTHONPATH", env.PROGRESS_ENV, env.BATCH_ENV,
                                                     "HF_HUB_DISABLE_PROGRESS_BARS")}
    paths = [root] + [p for p in (saved["PYTHONPATH"] or "").split(os.pathsep) if p and p != root]
    os.environ["PYTHONPATH"] = os.pathsep.join(paths)
    os.environ[env.PROGRESS_ENV] = "static"  # each bar prints its final state once: no widget frozen at 0 %
    os.environ[env.BATCH_ENV] = "1"  # viewers draw static figures: no widget traffic in a batch kernel
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # transformers' "Loading weights" bars were saved at 0 %
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _load_state(output_dir: Path) -> dict[str, Any]:
    path = output_dir / STATE_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def _save_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    tmp.replace(path)


def collect_summary(output_dir: Path, profile: str, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Merge the per-notebook metrics JSON files and the run results into ``summary.json``."""
    notebooks: dict[str, Any] = {}
    for name, result in sorted(results.items()):
        entry = {"status": result.get("status"), "wall_s": result.get("wall_s")}
        metrics_file = output_dir / "metrics" / f"{name}.json"
        if metrics_file.exists():
            payload = json.loads(metrics_file.read_text())
            entry["metrics"] = payload.get("metrics", {})
            entry["data"] = payload.get("data_root")
            entry["checkpoint"] = payload.get("checkpoint")
        notebooks[name] = entry
    summary = {"profile": profile, "generated_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "total_wall_s": round(sum(r.get("wall_s") or 0 for r in results.values()), 2),
               "notebooks": notebooks}
    _save_json(output_dir / "summary.json", summary)
    return summary


def print_table(results: list[NotebookResult], stream=None) -> None:
    stream = stream or sys.stdout
    width = max([len(r.notebook) for r in results] + [8])
    print(f"\n{'notebook':<{width}}  {'status':<17}  wall time", file=stream)
    for r in results:
        print(f"{r.notebook:<{width}}  {r.status:<17}  {r.wall_s:8.1f} s", file=stream)
    total = sum(r.wall_s for r in results)
    print(f"{'total':<{width}}  {'':<17}  {total:8.1f} s", file=stream)


def print_failure(result: NotebookResult, stream=None) -> None:
    stream = stream or sys.stderr
    bar = "=" * 100
    print(f"\n{bar}\nFAILED: {result.notebook} (executed copy: {result.executed})", file=stream)
    if result.failing_cell:
        print("--- failing cell source ---", file=stream)
        print(result.failing_cell, file=stream)
    if result.stderr:
        print("--- stderr of that cell ---", file=stream)
        print(result.stderr, file=stream)
    print("--- error ---", file=stream)
    print(result.error, file=stream)
    print(bar, file=stream)


def prepare_data(profile: str, parameters: dict[str, Any], *, verbose: bool = True) -> float:
    """Make the run's inputs exist and check them before any notebook starts; returns the seconds spent.

    The embedded cohort of smoke / classroom is built when missing; the rehearsal profile writes its default inputs
    (:mod:`mammoclip_kit.course.rehearsal`). Then :func:`mammoclip_kit.course.inputs.validate_inputs` checks the
    checkpoint, text encoder, data root and every input table the sequence needs, and raises
    :class:`~mammoclip_kit.course.inputs.InputError` listing each problem — before the first long phase.
    """
    from mammoclip_kit.context import make_context
    from mammoclip_kit.course.inputs import validate_inputs

    start = time.perf_counter()
    ctx = make_context(None, **{k: v for k, v in parameters.items() if k in PARAMETERS})
    if ctx.is_cohort:
        ctx.require_data()
    report = validate_inputs(ctx)
    if verbose and not ctx.is_cohort:
        print(f"inputs checked ({time.perf_counter() - start:.1f} s):\n{report}")
    return round(time.perf_counter() - start, 2)


#: Per-cell timeout (seconds) of each profile when none is given: a cell that runs longer is reported as a failure of
#: its notebook (cell and time named). Generous against the longest cell measured (classroom: the formula-driven init,
#: about 4 minutes on 2 cores); none for the paper profile (hours per cell).
DEFAULT_CELL_TIMEOUT: dict[str, int | None] = {"smoke": 300, "classroom": 1200, "paper": None, "rehearsal": 300}


def run(profile: str, *, only: list[str] | None = None, parameters: dict[str, Any] | None = None,
        output: Path | None = None, resume: bool = False, timeout: int | None = None,
        notebook_dir: Path | None = None, prepare: bool = True, progress: bool | str = False,
        verbose: bool = True, retries: int = 0) -> list[NotebookResult]:
    """Run the sequence; returns one result per selected notebook (see the module docstring).

    ``timeout`` bounds each cell in seconds: None takes :data:`DEFAULT_CELL_TIMEOUT` of the profile, 0 means none.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}: expected one of {', '.join(PROFILES)}")
    timeout = DEFAULT_CELL_TIMEOUT.get(profile) if timeout is None else (timeout or None)
    for name, value in (parameters or {}).items():  # typed and checked before any notebook starts
        check_parameter(name, value)
    output_dir = Path(output) if output else env.default_runs_root() / profile
    output_dir.mkdir(parents=True, exist_ok=True)
    params = {**(parameters or {}), "profile": profile, "output_dir": str(output_dir.resolve())}
    notebooks = discover_notebooks(notebook_dir, only)
    if not notebooks:
        raise SystemExit(f"no notebooks found in {notebook_dir or NOTEBOOK_DIR}")
    state = _load_state(output_dir)
    if prepare:
        seconds = prepare_data(profile, params, verbose=verbose)
        if verbose and seconds >= 1:
            print(f"inputs ready after {seconds:.1f} s")
    results: list[NotebookResult] = []
    for notebook in notebooks:
        key = fingerprint(notebook, params)
        previous = state.get(notebook.stem, {})
        if resume and previous.get("status") == "ok" and previous.get("fingerprint") == key:
            result = NotebookResult(notebook=notebook.stem, status="skipped (resume)",
                                    wall_s=0.0, executed=previous.get("executed", ""), fingerprint=key)
            results.append(result)
            continue
        if verbose:
            print(f"running {notebook.name} ({count_code_cells(notebook, params)} code cells) ...", flush=True)
        result = run_notebook(notebook, output_dir, params, timeout=timeout, progress=progress, retries=retries)
        results.append(result)
        if verbose:
            print(f"  {notebook.stem}: {result.status} after {result.wall_s:.1f} s", flush=True)
        state[notebook.stem] = {"status": result.status, "wall_s": result.wall_s,
                                "fingerprint": result.fingerprint, "executed": result.executed}
        _save_json(output_dir / STATE_FILE, state)
        if result.status == "failed" and verbose:
            print_failure(result)
        if result.status == MISSING_INPUTS and verbose:
            print(f"{notebook.stem}: inputs missing on disk (its numbers leave them out):\n  "
                  + "\n  ".join(result.extra["missing_inputs"]), file=sys.stderr)
    collect_summary(output_dir, profile, {k: v for k, v in state.items()})
    if verbose:
        print_table(results)
        print(f"\nexecuted notebooks: {output_dir / 'notebooks'}")
        print(f"metrics summary:    {output_dir / 'summary.json'}")
    return results


@cli_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mammoclip-run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", required=True, choices=PROFILES)
    parser.add_argument("--only", nargs="+", metavar="NN", help="run only these notebooks (numbers or stems)")
    parser.add_argument("-p", "--parameter", dest="parameters", action="append", type=parse_parameter, default=[],
                        metavar="KEY=VALUE", help="override a vocabulary parameter in every notebook")
    parser.add_argument("--output", type=Path, help="output folder (default: runs/<profile>)")
    parser.add_argument("--resume", action="store_true", help="skip notebooks that already succeeded unchanged")
    parser.add_argument("--timeout", type=int, default=None,
                        help="per-cell timeout in seconds (default: smoke and rehearsal 300, classroom 1200, paper none; "
                             "0 = none); a cell that runs longer fails its notebook, naming the cell and the time")
    parser.add_argument("--retries", type=int, default=0,
                        help="rerun a notebook whose cell timed out this many times with a fresh kernel (default 0; "
                             "cached artefacts make a rerun cheap); the wall time reported counts every attempt")
    parser.add_argument("--no-prepare", action="store_true", help="do not build a missing cohort before running")
    parser.add_argument("--notebooks", type=Path, default=None, help="notebook folder (default: notebooks/)")
    args = parser.parse_args(argv)
    results = run(args.profile, only=args.only, parameters=dict(args.parameters), output=args.output,
                  resume=args.resume, timeout=args.timeout, prepare=not args.no_prepare, notebook_dir=args.notebooks,
                  progress=True, retries=args.retries)
    failed = [r.notebook for r in results if r.status == "failed"]
    if failed:
        print(f"\n{len(failed)} notebook(s) failed: {', '.join(failed)}", file=sys.stderr)
    incomplete = [r.notebook for r in results if r.status == MISSING_INPUTS]
    if incomplete:
        print(f"\n{len(incomplete)} notebook(s) reported missing inputs: {', '.join(incomplete)}", file=sys.stderr)
    return 1 if failed or incomplete else 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["NotebookResult", "discover_notebooks", "run", "run_notebook", "collect_summary", "main"]
