"""Student copies of the notebooks: every answer cell (tagged ``solution``) becomes a numbered "your turn" cell.

``python -m mammoclip_kit.course.student [--src notebooks] [--out student]`` (``make student``).

Exercises are the numbered items (``1. ...``) of the markdown cells after the ``## Exercises`` heading. Each answer
cell answers one of them: the number it starts with (``# 3.`` in code, ``3.`` in markdown) when it names one,
otherwise the next exercise of the markdown cell above it that no answer has taken yet (an answer in several cells
keeps the number of the last exercise). Its "your turn" cell says which: "Your turn — exercise 3".
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import nbformat

YOUR_TURN_CODE = "# Your turn — exercise {number}: write your answer here.\n"
YOUR_TURN_MARKDOWN = "*Your turn — exercise {number}: write your answer here.*"

_EXERCISES_HEADING = re.compile(r"^##\s+Exercises", re.M)
_ITEM = re.compile(r"^(\d+)\.\s", re.M)
_ANSWER_NUMBER = {"code": re.compile(r"\A\s*#\s*(?:Answer\s+)?(\d+)\.\s"),
                  "markdown": re.compile(r"\A\s*(\d+)\.\s")}


def exercise_numbers(notebook: nbformat.NotebookNode) -> tuple[list[int], dict[int, int | None]]:
    """The exercises of a notebook and the exercise each answer cell answers.

    Returns (exercise numbers in order, {index of a ``solution`` cell: its exercise number, or None when no exercise
    precedes it}).
    """
    exercises: list[int] = []
    answers: dict[int, int | None] = {}
    started = False
    pending: list[int] = []
    last: int | None = None
    for index, cell in enumerate(notebook.cells):
        tags = cell.get("metadata", {}).get("tags", [])
        if "solution" in tags:
            explicit = _ANSWER_NUMBER.get(cell.cell_type, _ANSWER_NUMBER["code"]).match(cell.source)
            if explicit:
                number = int(explicit.group(1))
                pending = [n for n in pending if n != number]
            elif pending:
                number = pending.pop(0)
            else:
                number = last
            answers[index] = number
            last = number
            continue
        if cell.cell_type != "markdown":
            continue
        if not started:
            match = _EXERCISES_HEADING.search(cell.source)
            if not match:
                continue
            started = True
            text = cell.source[match.end():]
        else:
            text = cell.source
        items = [int(n) for n in _ITEM.findall(text)]
        exercises += items
        if items:
            pending = items
    return exercises, answers


def make_student_notebook(notebook: nbformat.NotebookNode) -> tuple[nbformat.NotebookNode, int]:
    """Return a copy with each ``solution`` cell replaced by a numbered "your turn" cell, and how many were replaced.

    Raises ``ValueError`` for an answer cell that follows no numbered exercise.
    """
    copy = nbformat.from_dict(notebook)
    _, answers = exercise_numbers(copy)
    replaced = 0
    for index, cell in enumerate(copy.cells):
        tags = list(cell.get("metadata", {}).get("tags", []))
        if "solution" not in tags:
            continue
        number = answers[index]
        if number is None:
            raise ValueError(f"answer cell {index} follows no numbered exercise ('1. ...' after '## Exercises')")
        new_tags = [t for t in tags if t != "solution"] + ["your-turn"]
        if cell.cell_type == "code":
            new = nbformat.v4.new_code_cell(YOUR_TURN_CODE.format(number=number))
        else:
            new = nbformat.v4.new_markdown_cell(YOUR_TURN_MARKDOWN.format(number=number))
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
