"""`make student` copies: answers removed, everything else kept, each "your turn" cell numbered by its exercise."""

from pathlib import Path

import nbformat
import pytest

from mammoclip_kit.course.student import (
    YOUR_TURN_CODE,
    YOUR_TURN_MARKDOWN,
    exercise_numbers,
    make_student_copies,
    make_student_notebook,
)

ROOT = Path(__file__).resolve().parents[2]


def test_student_copies_replace_every_solution_cell(tmp_path):
    counts = make_student_copies(ROOT / "notebooks", tmp_path)
    sources = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert sorted(counts) == [p.name for p in sources]
    for path in sources:
        original = nbformat.read(path, as_version=4)
        student = nbformat.read(tmp_path / path.name, as_version=4)
        solutions = [c for c in original.cells if "solution" in c.metadata.get("tags", [])]
        assert counts[path.name] == len(solutions) >= 1
        assert len(student.cells) == len(original.cells)
        assert not any("solution" in c.metadata.get("tags", []) for c in student.cells)
        turn = [c for c in student.cells if "your-turn" in c.metadata.get("tags", [])]
        assert len(turn) == len(solutions)
        for solution in solutions:  # no answer text survives
            assert all(solution.source != c.source for c in student.cells)
        kept = [c.source for c in original.cells if "solution" not in c.metadata.get("tags", [])]
        assert kept == [c.source for c in student.cells if "your-turn" not in c.metadata.get("tags", [])]


def test_every_exercise_of_the_course_has_a_numbered_your_turn_cell(tmp_path):
    make_student_copies(ROOT / "notebooks", tmp_path)
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        exercises, answers = exercise_numbers(nbformat.read(path, as_version=4))
        assert exercises == list(range(1, len(exercises) + 1)), f"{path.name}: exercises numbered {exercises}"
        assert set(answers.values()) == set(exercises), f"{path.name}: exercises {exercises}, answered {answers}"
        student = nbformat.read(tmp_path / path.name, as_version=4)
        turn = [c.source for c in student.cells if "your-turn" in c.metadata.get("tags", [])]
        numbers = {int(s.split("exercise ")[1].split(":")[0]) for s in turn}
        assert numbers == set(exercises), path.name
        # four answers in a row (notebook 04) are no longer four identical cells
        assert len(set(turn)) == len(turn), f"{path.name}: identical 'your turn' cells"


def _notebook(*cells):
    nb = nbformat.v4.new_notebook()
    for kind, source, tags in cells:
        cell = (nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell)(source)
        cell.metadata["tags"] = tags
        nb.cells.append(cell)
    return nb


def test_numbers_come_from_the_exercise_list_or_from_the_answer_itself():
    nb = _notebook(
        ("markdown", "## Summary\n\n- 1. is not an exercise\n\n## Exercises\n\n1. First.\n2. Second.\n3. Third.", []),
        ("code", "print('a')", ["solution"]),           # takes 1
        ("code", "# 3. the third, named\nx = 3", ["solution"]),  # names 3
        ("code", "print('b')", ["solution"]),           # the next one not taken: 2
        ("markdown", "4. Fourth.", []),
        ("markdown", "Answer in prose.", ["solution"]),  # 4
        ("code", "print('rest of 4')", ["solution"]),   # still 4 (an answer in two cells)
    )
    exercises, answers = exercise_numbers(nb)
    assert exercises == [1, 2, 3, 4]
    assert answers == {1: 1, 2: 3, 3: 2, 5: 4, 6: 4}
    student, replaced = make_student_notebook(nb)
    assert replaced == 5
    assert student.cells[2].source == YOUR_TURN_CODE.format(number=3)
    assert student.cells[5].source == YOUR_TURN_MARKDOWN.format(number=4)
    assert "Your turn — exercise 2" in student.cells[3].source


def test_an_answer_before_any_exercise_is_refused():
    nb = _notebook(("markdown", "## Exercises\n\nNo numbered item here.", []), ("code", "1 + 1", ["solution"]))
    with pytest.raises(ValueError, match="follows no numbered exercise"):
        make_student_notebook(nb)
