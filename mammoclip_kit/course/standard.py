"""The notebook standard as code: every rule a kit notebook must follow, checked on the ``.ipynb`` source.

Rules (each violation names the notebook and the rule):

``opening``     first cell is markdown: ``# Title``, learning objectives, runtime for smoke / classroom / paper
``parameters``  exactly one code cell tagged ``parameters``, assigning every name of the shared vocabulary and
                nothing else
``setup``       the cell after it calls ``setup_notebook("<file stem>", ...)``
``kernel``      kernelspec name ``python3``
``outputs``     no stored outputs or execution counts
``paths``       no absolute paths
``device``      no hard-coded device strings ("cuda", "mps", "cpu") in code
``metrics``     the notebook writes its metrics with ``ctx.write_metrics``
``ending``      a ``## Summary`` section, then ``## Exercises`` with at least one answer cell tagged ``solution``;
                every ``solution`` cell comes after the Exercises heading
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import nbformat

from mammoclip_kit.context import PARAMETERS

RULES = ("opening", "parameters", "setup", "kernel", "outputs", "paths", "device", "metrics", "ending")

_ABSOLUTE_PATH = re.compile(
    r"""(?:["'](?:/(?!/)[\w.\-]+){2,}/?["'])"""   # a quoted POSIX path with at least two components
    r"""|(?:\b[A-Za-z]:\\\\?[\w])"""             # a Windows drive path
    r"""|(?:/(?:home|Users|root|work|mnt|scratch|restricted|ocean)/[\w.\-]+)""",  # machine folders anywhere
)
_DEVICE_LITERAL = re.compile(r"""["'](?:cuda|mps|cpu)(?::\d+)?["']""")


@dataclass(frozen=True)
class Violation:
    notebook: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.notebook}: [{self.rule}] {self.message}"


def _tags(cell) -> set[str]:
    return set(cell.get("metadata", {}).get("tags", []))


def _assigned_names(source: str) -> list[str]:
    tree = ast.parse(source)
    names = []
    for node in tree.body:
        if isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.append(node.target.id)
        else:
            names.append(f"<{type(node).__name__} statement>")
    return names


def check_notebook(path: str | Path) -> list[Violation]:
    """All violations of the standard in one notebook (an empty list means it complies)."""
    path = Path(path)
    name = path.name
    nb = nbformat.read(path, as_version=4)
    cells = nb.cells
    found: list[Violation] = []

    def add(rule: str, message: str) -> None:
        found.append(Violation(name, rule, message))

    # opening
    first = cells[0] if cells else None
    if first is None or first.cell_type != "markdown":
        add("opening", "the first cell must be a markdown cell with the title, objectives and runtime")
    else:
        text = first.source
        if not re.match(r"\s*# \S", text):
            add("opening", "the first cell must start with a '# Title' heading")
        if "objective" not in text.lower():
            add("opening", "the first cell must list the learning objectives")
        runtime = text.lower()
        if "runtime" not in runtime or not all(p in runtime for p in ("smoke", "classroom", "paper")):
            add("opening", "the first cell must give the runtime for the smoke, classroom and paper profiles")

    # parameters + setup
    tagged = [i for i, c in enumerate(cells) if "parameters" in _tags(c)]
    if len(tagged) != 1:
        add("parameters", f"expected exactly one cell tagged 'parameters', found {len(tagged)}")
    else:
        index = tagged[0]
        cell = cells[index]
        if cell.cell_type != "code":
            add("parameters", "the cell tagged 'parameters' must be a code cell")
        else:
            try:
                names = _assigned_names(cell.source)
            except SyntaxError as exc:
                add("parameters", f"the parameters cell does not parse: {exc}")
                names = []
            extra = [n for n in names if n not in PARAMETERS]
            missing = [n for n in PARAMETERS if n not in names]
            if extra:
                add("parameters", f"names outside the shared vocabulary: {extra}")
            if missing:
                add("parameters", f"vocabulary names missing from the parameters cell: {missing}")
        following = next((c for c in cells[index + 1:] if c.cell_type == "code"), None)
        call = f'setup_notebook("{path.stem}"'
        if following is None or call not in following.source:
            add("setup", f"the code cell after the parameters must call {call}, globals())")

    # kernel
    kernel = nb.metadata.get("kernelspec", {}).get("name")
    if kernel != "python3":
        add("kernel", f"kernelspec name must be 'python3', found {kernel!r}")

    # outputs, paths, device, metrics
    writes_metrics = False
    for i, cell in enumerate(cells):
        if cell.cell_type == "code":
            if cell.get("outputs") or cell.get("execution_count") is not None:
                add("outputs", f"cell {i} has stored outputs or an execution count (strip them)")
            if _DEVICE_LITERAL.search(cell.source):
                add("device", f"cell {i} hard-codes a device string; use ctx.device")
            if "ctx.write_metrics(" in cell.source:
                writes_metrics = True
        match = _ABSOLUTE_PATH.search(cell.source)
        if match:
            add("paths", f"cell {i} contains an absolute path {match.group(0)!r}")
    if not writes_metrics:
        add("metrics", "no cell calls ctx.write_metrics(...)")

    # ending
    headings = [(i, c.source) for i, c in enumerate(cells) if c.cell_type == "markdown"]
    summary = next((i for i, s in headings if re.search(r"^##\s+Summary", s, re.M)), None)
    exercises = next((i for i, s in headings if re.search(r"^##\s+Exercises", s, re.M)), None)
    solutions = [i for i, c in enumerate(cells) if "solution" in _tags(c)]
    if summary is None:
        add("ending", "no '## Summary' markdown section")
    if exercises is None:
        add("ending", "no '## Exercises' markdown section")
    elif summary is not None and exercises < summary:
        add("ending", "'## Exercises' must come after '## Summary'")
    if not solutions:
        add("ending", "no answer cell tagged 'solution'")
    elif exercises is not None and min(solutions) < exercises:
        add("ending", "a 'solution' cell appears before the Exercises section")
    return found


def check_all(directory: str | Path) -> list[Violation]:
    """Check every ``NN_*.ipynb`` in ``directory``."""
    found: list[Violation] = []
    for path in sorted(Path(directory).glob("[0-9][0-9]_*.ipynb")):
        found += check_notebook(path)
    return found


KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}


def normalize_notebook(path: str | Path) -> None:
    """Set the ``python3`` kernelspec, drop editor metadata (jupytext), strip outputs and execution counts."""
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    nb.metadata = nbformat.NotebookNode({"kernelspec": KERNELSPEC, "language_info": {"name": "python"}})
    for cell in nb.cells:
        cell.metadata = nbformat.NotebookNode({k: v for k, v in cell.metadata.items() if k == "tags"})
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    nbformat.write(nb, path)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m mammoclip_kit.course.standard",
                                     description="Check notebooks against the kit's notebook standard.")
    parser.add_argument("paths", nargs="*", type=Path, default=[Path("notebooks")])
    parser.add_argument("--normalize", action="store_true",
                        help="first set the kernelspec, drop editor metadata and strip outputs (in place)")
    args = parser.parse_args(argv)
    found: list[Violation] = []
    for path in args.paths:
        if args.normalize:
            for notebook in sorted(path.glob("[0-9][0-9]_*.ipynb")) if path.is_dir() else [path]:
                normalize_notebook(notebook)
        found += check_all(path) if path.is_dir() else check_notebook(path)
    for violation in found:
        print(violation)
    print(f"{len(found)} violation(s)")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
