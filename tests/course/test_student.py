"""`make student` copies: answers removed, everything else kept."""

from pathlib import Path

import nbformat

from mammoclip_kit.course.student import YOUR_TURN_CODE, make_student_copies

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
        assert all(c.source == YOUR_TURN_CODE for c in turn if c.cell_type == "code")
        for solution in solutions:  # no answer text survives
            assert all(solution.source != c.source for c in student.cells)
        kept = [c.source for c in original.cells if "solution" not in c.metadata.get("tags", [])]
        assert kept == [c.source for c in student.cells if "your-turn" not in c.metadata.get("tags", [])]
