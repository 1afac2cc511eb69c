"""Student copies of the notebooks: every answer cell (tagged ``solution``) becomes a "your turn" cell.

``python -m mammoclip_kit.course.student [--src notebooks] [--out student]`` (``make student``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nbformat

YOUR_TURN_CODE = "# Your turn: write your answer to the exercise above here.\n"
YOUR_TURN_MARKDOWN = "*Your turn: write your answer to the exercise above here.*"


def make_student_notebook(notebook: nbformat.NotebookNode) -> tuple[nbformat.NotebookNode, int]:
    """Return a copy with each ``solution`` cell replaced, and how many were replaced."""
    copy = nbformat.from_dict(notebook)
    replaced = 0
    for index, cell in enumerate(copy.cells):
        tags = list(cell.get("metadata", {}).get("tags", []))
        if "solution" not in tags:
            continue
        new_tags = [t for t in tags if t != "solution"] + ["your-turn"]
        if cell.cell_type == "code":
            new = nbformat.v4.new_code_cell(YOUR_TURN_CODE)
        else:
            new = nbformat.v4.new_markdown_cell(YOUR_TURN_MARKDOWN)
        new.metadata["tags"] = new_tags
        copy.cells[index] = new
        replaced += 1
    return copy, replaced


def make_student_copies(src: Path, out: Path) -> dict[str, int]:
    """Write a student copy of every ``NN_*.ipynb`` in ``src`` to ``out``; returns replaced cells per notebook."""
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for path in sorted(Path(src).glob("[0-9][0-9]_*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        student, replaced = make_student_notebook(notebook)
        nbformat.write(student, out / path.name)
        counts[path.name] = replaced
    return counts


def main(argv: list[str] | None = None) -> int:
    from mammoclip_kit.env import repo_root

    parser = argparse.ArgumentParser(prog="python -m mammoclip_kit.course.student", description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", type=Path, default=repo_root() / "notebooks")
    parser.add_argument("--out", type=Path, default=repo_root() / "student")
    args = parser.parse_args(argv)
    counts = make_student_copies(args.src, args.out)
    for name, replaced in counts.items():
        print(f"{name:<40} {replaced} answer cell(s) replaced")
    print(f"student copies written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
