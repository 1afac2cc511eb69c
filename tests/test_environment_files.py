"""environment.yml and pyproject.toml must install the same packages; torch pins agree everywhere."""

import re
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _conda_pip_section() -> list[str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict) and "pip" in item)
    return [line for line in pip if not line.startswith("-")]


def test_environment_yml_names_the_same_packages_as_pyproject():
    project = _pyproject()["project"]
    declared = {_name(r) for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        declared |= {_name(r) for r in extra}
    conda = {_name(r) for r in _conda_pip_section()}
    assert conda - declared == set(), f"in environment.yml only: {sorted(conda - declared)}"
    assert declared - conda == set(), f"in pyproject.toml only: {sorted(declared - conda)}"


def test_torch_pins_agree_between_constraints_and_environment_yml():
    constraints = {_name(line): line.strip() for line in (ROOT / "constraints.txt").read_text().splitlines()
                   if line.strip() and not line.startswith("#")}
    conda = {_name(r): r.strip() for r in _conda_pip_section()}
    for package in ("torch", "torchvision"):
        assert constraints[package] == conda[package]
        assert "==" in constraints[package]


def test_environment_yml_uses_python_311():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
