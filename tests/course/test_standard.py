"""Every notebook follows the standard; each broken rule is caught and named (one failing fixture per rule)."""

import copy
from pathlib import Path

import nbformat
import pytest

from mammoclip_kit.course.standard import RULES, check_notebook

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_the_design_card_sequence_starts_here():
    assert NOTEBOOKS and NOTEBOOKS[0].name == "00_welcome.ipynb"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_follows_the_standard(path):
    violations = check_notebook(path)
    assert not violations, "\n".join(str(v) for v in violations)


# ---------------------------------------------------------------- failing fixtures, one per rule
def _good() -> nbformat.NotebookNode:
    return nbformat.read(ROOT / "notebooks" / "00_welcome.ipynb", as_version=4)


def _code_index(nb, text):
    return next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and text in c.source)


def _no_title(nb):
    nb.cells[0].source = nb.cells[0].source.replace("# 00", "00", 1)


def _no_runtime(nb):
    nb.cells[0].source = nb.cells[0].source.replace("**Runtime**", "**Time**").replace("paper", "real")


def _two_parameter_cells(nb):
    extra = nbformat.v4.new_code_cell("seed = 1")
    extra.metadata["tags"] = ["parameters"]
    nb.cells.insert(3, extra)


def _foreign_parameter(nb):
    i = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells[i].source += "\nlearning_rate = 0.1\n"


def _wrong_setup_name(nb):
    i = _code_index(nb, "setup_notebook(")
    nb.cells[i].source = nb.cells[i].source.replace('"00_welcome"', '"welcome"')


def _wrong_kernel(nb):
    nb.metadata["kernelspec"]["name"] = "ir"


def _stored_output(nb):
    i = _code_index(nb, "draw_pipeline()")
    nb.cells[i].outputs = [nbformat.v4.new_output("stream", text="hello")]
    nb.cells[i].execution_count = 3


def _absolute_path(nb):
    nb.cells.insert(4, nbformat.v4.new_code_cell('images = "/' + 'home/alice/vindr/images"'))  # split: no machine path in this file


def _device_literal(nb):
    nb.cells.insert(4, nbformat.v4.new_code_cell('model.to("cuda")'))


def _no_metrics(nb):
    i = _code_index(nb, "ctx.write_metrics(")
    nb.cells[i].source = "print('done')"


def _no_exercises(nb):
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = cell.source.replace("## Exercises", "## Further reading")


def _solution_untagged(nb):
    for cell in nb.cells:
        cell.metadata["tags"] = [t for t in cell.metadata.get("tags", []) if t != "solution"]


FIXTURES = {
    "opening": [_no_title, _no_runtime],
    "parameters": [_two_parameter_cells, _foreign_parameter],
    "setup": [_wrong_setup_name],
    "kernel": [_wrong_kernel],
    "outputs": [_stored_output],
    "paths": [_absolute_path],
    "device": [_device_literal],
    "metrics": [_no_metrics],
    "ending": [_no_exercises, _solution_untagged],
}
CASES = [(rule, breaker) for rule, breakers in FIXTURES.items() for breaker in breakers]


def test_every_rule_has_a_failing_fixture():
    assert set(FIXTURES) == set(RULES)


def test_the_good_fixture_passes(tmp_path):
    path = tmp_path / "00_welcome.ipynb"
    nbformat.write(_good(), path)
    assert check_notebook(path) == []


@pytest.mark.parametrize(("rule", "breaker"), CASES, ids=[f"{r}-{b.__name__}" for r, b in CASES])
def test_broken_rule_is_reported_with_notebook_and_rule(tmp_path, rule, breaker):
    nb = copy.deepcopy(_good())
    breaker(nb)
    path = tmp_path / "00_welcome.ipynb"
    nbformat.write(nb, path)
    violations = check_notebook(path)
    assert violations, f"{breaker.__name__} was not caught"
    assert {v.rule for v in violations} == {rule}
    assert all(str(v).startswith("00_welcome.ipynb: [") for v in violations)
