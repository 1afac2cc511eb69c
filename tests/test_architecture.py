"""The package's dependency rules, checked on the import graph of the source (see docs/DESIGN.md, "Dependency rules").

Every ``import`` of a ``mammoclip_kit`` module, at module level or inside a function, is an edge between two *units*
(a subpackage such as ``eval`` or a top-level module such as ``inference``); imports under ``if TYPE_CHECKING:`` are
annotations only (e.g. ``RunContext`` in a stage's signature) and are not edges. A unit may import only the units listed
for it in :data:`ALLOWED`; nothing imports a command-line module; no unit reaches into another unit's private
(``_name``) module or private names; and the unit graph has no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mammoclip_kit"
DATA_PREP = PACKAGE.parent / "data_prep"

#: Command-line modules: entry points only, imported by nothing in the library.
CLIS = {"predict", "convert", "pretrain", "bench", "runner"}
FOUNDATION = {"env", "config", "artifacts", "errors"}

#: unit → the units it may import (besides itself). Read bottom-up: foundation, cohort and data, models, training,
#: inference, evaluation, FActOR, course tooling.
ALLOWED: dict[str, set[str]] = {
    "env": set(),
    "config": set(),
    "artifacts": {"env"},
    "errors": set(),
    "cohort": FOUNDATION,
    "data": FOUNDATION,
    "losses": FOUNDATION,
    "models": FOUNDATION | {"data"},
    # context is the caller that makes data exist: it builds the embedded cohort or checks a user data root
    "context": FOUNDATION | {"cohort", "data"},
    "inference": FOUNDATION | {"data", "models"},
    "train": FOUNDATION | {"context", "data", "models", "losses", "inference", "cohort"},
    "eval": FOUNDATION | {"context", "data", "models", "losses", "inference", "train"},
    "factor": FOUNDATION | {"context", "data", "models", "inference", "train", "eval"},
    "course": FOUNDATION | {"context", "cohort", "data", "models", "losses", "inference", "train", "eval", "factor"},
    "__init__": {"context", "env", "models", "inference", "eval"},
}
ALLOWED.update({cli: set(ALLOWED) - CLIS for cli in CLIS})


def _unit(module: str) -> str:
    """``mammoclip_kit.eval.probe`` → ``eval``; ``mammoclip_kit`` → ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(imported module, imported names, line) for every import of a mammoclip_kit module in ``path``."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    typing_only = {id(inner) for node in ast.walk(tree)
                   if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                   for stmt in node.body for inner in ast.walk(stmt)}
    found = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names if alias.name.startswith("mammoclip_kit")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("mammoclip_kit"):
                names = [alias.name for alias in node.names]
                # ``from mammoclip_kit.x import y`` may import the submodule y
                found.append((target, names, node.lineno))
    return found


def _edges() -> list[tuple[str, str, str, list[str], int]]:
    """(source file, source unit, target module, names, line) for every import inside the package."""
    edges = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = _module_name(path)
        for target, names, line in _imports(path):
            edges.append((str(path.relative_to(PACKAGE.parent)), _unit(source), target, names, line))
    return edges


EDGES = _edges()


def test_every_unit_has_a_rule():
    units = {_unit(_module_name(p)) for p in PACKAGE.rglob("*.py")}
    assert units <= set(ALLOWED), f"units without a dependency rule: {sorted(units - set(ALLOWED))}"


def test_no_upward_or_sideways_imports():
    bad = []
    for where, unit, target, names, line in EDGES:
        targets = {_unit(target)}
        if target == "mammoclip_kit":
            targets = {n for n in names if n in ALLOWED} or {"__init__"}
        for other in targets - {unit}:
            if other not in ALLOWED[unit]:
                bad.append(f"{where}:{line} ({unit}) imports {target} {names or ''} ({other})")
    assert not bad, "imports that break the dependency rules:\n" + "\n".join(bad)


def test_nothing_imports_a_command_line_module():
    bad = [f"{where}:{line} imports {target}" for where, unit, target, names, line in EDGES
           if unit not in CLIS and (_unit(target) in CLIS and target.count(".") == 1
                                    or target == "mammoclip_kit" and set(names) & CLIS)]
    assert not bad, "\n".join(bad)


def test_no_reaching_into_another_units_private_parts():
    bad = []
    for where, unit, target, names, line in EDGES:
        other = _unit(target)
        if other == unit:
            continue
        private_module = any(part.startswith("_") for part in target.split(".")[1:])
        private_names = [n for n in names if n.startswith("_")]
        if private_module or private_names:
            bad.append(f"{where}:{line} imports {target} {private_names or ''}")
    assert not bad, "imports of another unit's private module or names:\n" + "\n".join(bad)


def test_unit_graph_has_no_cycle():
    graph: dict[str, set[str]] = {}
    for _, unit, target, _names, _ in EDGES:
        if _unit(target) != unit and unit != "__init__" and _unit(target) != "__init__":
            graph.setdefault(unit, set()).add(_unit(target))
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " → ".join(path[path.index(nxt):] + [nxt]))
            if not state.get(nxt):
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if not state.get(node):
            visit(node)


def test_data_prep_tools_are_thin():
    """``data_prep/`` holds command-line wrappers only: the work is in the library (importable, tested)."""
    for path in DATA_PREP.glob("*.py"):
        assert len(path.read_text().splitlines()) <= 120, f"{path.name} grew beyond a thin CLI"


#: The longest a library module or test file may grow (docs/DESIGN.md, "Package map"): past it, split by job.
MAX_MODULE_LINES = 800


def test_modules_stay_small():
    tests = PACKAGE.parent / "tests"
    files = [*PACKAGE.rglob("*.py"), *DATA_PREP.glob("*.py"), *tests.rglob("*.py")]
    long = {str(p.relative_to(PACKAGE.parent)): n for p in files
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"files over {MAX_MODULE_LINES} lines (split them by job): {long}"
