"""Check executed notebooks for what a teacher would not want on the projector.

``python -m mammoclip_kit.course.check_executed runs/smoke/notebooks [--figures runs/smoke/figures] [--json]``

Rules (each finding names the notebook, the cell and the rule):

``traceback``        an error output, or a traceback printed to a stream
``stderr-warning``   a warning on stderr (``...Warning: ...``, ``WARNING``, ``FutureWarning`` ...) that is not in
                     ``ALLOWED_STDERR`` (each allowed message says why)
``frozen-progress``  a progress bar whose static view is stuck at 0 % (a tqdm widget's text fallback, or a text bar
                     whose last state is 0 %)
``truncated-table``  a pandas table whose cells pandas cut to "..." (``display.max_colwidth``), e.g.
                     "DICOM decoding, VOI/windowing, breast crop, th..."
``exercises``        an exercise without an answer cell, or an answer cell that maps to no numbered exercise (and so
                     to no numbered "your turn" cell of the student copy, see ``course.student``)
``figure``           a figure saved through ``course.figures.finish`` without a title or axis labels, with a ``jet``
                     -like colour map or a heat map without colour bar (read from the run's ``figures/figures.json``)
``figure-unrecorded`` a PNG in the run's ``figures/`` folder that was not saved through ``course.figures.finish``, so
                     nothing vouches for its title and labels

Exit status 1 when anything is found.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import nbformat

from mammoclip_kit.course.figures import MANIFEST, figure_problems
from mammoclip_kit.course.student import exercise_numbers

RULES = ("traceback", "stderr-warning", "frozen-progress", "truncated-table", "exercises", "figure",
         "figure-unrecorded")

#: stderr messages that are not the notebook's fault, with the reason; a regular expression each.
ALLOWED_STDERR: dict[str, str] = {
    r"Kernel is running over TCP without encryption":
        "ipykernel's start-up notice about its own transport (the kernel's, not the notebook's; normally it goes to "
        "the runner's terminal, but a kernel started inside a notebook would print it into the outputs)",
}

_WARNING = re.compile(r"\b\w*Warning\b|\bWARNING\b|\bwarn(?:ing)?:", re.I)
_TRACEBACK = re.compile(r"Traceback \(most recent call last\)")
_BAR = re.compile(r"(?:^|[\s:])\s*(\d{1,3})%\|")
_WIDGET = "application/vnd.jupyter.widget-view+json"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_CUT_CELL = re.compile(r"\w\.\.\.(?=\s|$)", re.M)  # "th..." — pandas' mark for a cell cut at max_colwidth


@dataclass(frozen=True)
class Finding:
    notebook: str
    cell: int | None
    rule: str
    message: str

    def __str__(self) -> str:
        where = f"cell {self.cell}" if self.cell is not None else "figures"
        return f"{self.notebook}: {where}: [{self.rule}] {self.message}"


def _allowed(line: str) -> bool:
    return any(re.search(pattern, line) for pattern in ALLOWED_STDERR)


def _last_bar_state(text: str) -> str:
    """The state a text progress bar was left in: the last non-empty carriage-return segment."""
    segments = [s for s in re.split(r"[\r\n]", text) if s.strip()]
    return segments[-1] if segments else ""


def check_notebook(path: str | Path) -> list[Finding]:
    """All findings in one executed notebook (cells are numbered as in the executed file)."""
    path = Path(path)
    name = path.name
    nb = nbformat.read(path, as_version=4)
    found: list[Finding] = []

    def add(cell: int | None, rule: str, message: str) -> None:
        found.append(Finding(name, cell, rule, message))

    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for output in cell.get("outputs", []):
            kind = output.get("output_type")
            if kind == "error":
                add(index, "traceback", f"{output.get('ename')}: {str(output.get('evalue'))[:200]}")
                continue
            if kind == "stream":
                text = _ANSI.sub("", output.get("text", ""))
                if _TRACEBACK.search(text):
                    add(index, "traceback", "a traceback printed to " + output.get("name", "a stream"))
                if output.get("name") == "stderr":
                    for line in text.splitlines():
                        if _WARNING.search(line) and not _allowed(line):
                            add(index, "stderr-warning", line.strip()[:240])
                bar = _BAR.search(_last_bar_state(text))
                if bar and int(bar.group(1)) == 0:
                    add(index, "frozen-progress", _last_bar_state(text).strip()[:120])
                continue
            data = output.get("data", {})
            plain = data.get("text/plain", "")
            plain = "".join(plain) if isinstance(plain, list) else plain
            html = data.get("text/html", "")
            html = "".join(html) if isinstance(html, list) else html
            if "dataframe" in html and _CUT_CELL.search(plain):
                cut = _CUT_CELL.search(plain)
                line = plain[plain.rfind("\n", 0, cut.start()) + 1:plain.find("\n", cut.end()) % (len(plain) + 1)]
                add(index, "truncated-table", f"table cells cut to '...': {line.strip()[:120]!r}")
            if _WIDGET in data:
                bar = _BAR.search(plain)
                if bar and int(bar.group(1)) == 0:
                    add(index, "frozen-progress", f"progress widget shows {plain.strip()[:100]!r} when not live")

    exercises, answers = exercise_numbers(nb)
    for cell, number in answers.items():
        if number is None:
            add(cell, "exercises", "answer cell follows no numbered exercise")
        elif number not in exercises:
            add(cell, "exercises", f"answer cell names exercise {number}, which the notebook does not list")
    for number in exercises:
        if number not in answers.values():
            add(None, "exercises", f"exercise {number} has no answer cell")
    return found


def check_figures(figures_dir: str | Path) -> list[Finding]:
    """Findings for the figures of a run: manifest entries with problems, PNGs saved outside the helper."""
    figures_dir = Path(figures_dir)
    manifest_path = figures_dir / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    found: list[Finding] = []
    for file, entry in sorted(manifest.items()):
        for problem in figure_problems(entry):  # recomputed: the rules may be newer than the run
            found.append(Finding(_owner(file), None, "figure", f"{file}: {problem}"))
    for png in sorted(figures_dir.glob("*.png")):
        if png.name not in manifest:
            found.append(Finding(_owner(png.name), None, "figure-unrecorded",
                                 f"{png.name} was not saved through course.figures.finish"))
    return found


def _owner(file: str) -> str:
    """Figures are named after their notebook: ``05_joint_space.png`` belongs to notebook 05."""
    match = re.match(r"(\d\d)_", file)
    return f"{match.group(1)} (figure)" if match else "(figure)"


def check_run(notebooks_dir: str | Path, figures_dir: str | Path | None = None) -> list[Finding]:
    """Check every ``NN_*.ipynb`` of an executed run and its figures (default: ``<notebooks_dir>/../figures``)."""
    notebooks_dir = Path(notebooks_dir)
    found: list[Finding] = []
    for path in sorted(notebooks_dir.glob("[0-9][0-9]_*.ipynb")):
        found += check_notebook(path)
    figures_dir = Path(figures_dir) if figures_dir else notebooks_dir.parent / "figures"
    if figures_dir.is_dir():
        found += check_figures(figures_dir)
    return found


def counts(found: list[Finding]) -> dict[str, int]:
    """Number of findings per rule (every rule listed, zeros included)."""
    tally = Counter(f.rule for f in found)
    return {rule: tally.get(rule, 0) for rule in RULES}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mammoclip_kit.course.check_executed",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", type=Path, help="folder of executed notebooks (e.g. runs/smoke/notebooks)")
    parser.add_argument("--figures", type=Path, default=None, help="figures folder (default: ../figures)")
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")
    args = parser.parse_args(argv)
    if not args.notebooks.is_dir():
        parser.error(f"{args.notebooks} is not a folder")
    found = check_run(args.notebooks, args.figures)
    if args.json:
        print(json.dumps({"counts": counts(found), "findings": [asdict(f) for f in found]}, indent=1))
    else:
        for finding in found:
            print(finding)
        print("\n" + "  ".join(f"{rule}: {n}" for rule, n in counts(found).items()))
        print(f"{len(found)} finding(s)")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
