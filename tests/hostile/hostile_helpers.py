"""Shared helpers of the hostile-input tests (issue 16): calling a CLI, checking its one-line error, file digests,
a tiny phantom and copies of a cohort's CSVs."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np


def run_cli(main: Callable, argv: list[str], capsys) -> tuple[int, str, str]:
    """Call a CLI ``main``; returns (exit status, stdout, stderr)."""
    try:
        result = main(argv)
        code = result if isinstance(result, int) else 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def assert_clear_error(code: int, err: str, *needles: str) -> str:
    """Non-zero exit, no traceback, exactly one ``error:`` line that contains every needle; returns that line."""
    assert code != 0, f"exit 0 for a user error; stderr: {err}"
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def phantom(rows: int = 120, cols: int = 80, seed: int = 0) -> np.ndarray:
    """A 12-bit breast-like blob on a black background (enough for both preprocessing modes)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:rows, :cols]
    inside = ((y - rows / 2) / (rows * 0.45)) ** 2 + (x / (cols * 0.8)) ** 2 < 1
    image = np.where(inside, 1500 + rng.normal(0, 200, (rows, cols)), 0)
    return np.clip(image, 0, 4095).astype(np.uint16)



def copy_vindr(cohort: Path, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(cohort / "vindr", data / "vindr", ignore=shutil.ignore_patterns("images"))
    return data


def copy_part(cohort: Path, tmp_path: Path, part: str) -> Path:
    data = tmp_path / "data"
    source = cohort / part
    (data / part).mkdir(parents=True)
    for csv_file in source.glob("*.csv"):
        shutil.copy(csv_file, data / part / csv_file.name)
    return data



SMOKE_PRETRAIN = Path(__file__).resolve().parents[2] / "configs" / "pretrain" / "smoke.yaml"


def sys_path_train() -> None:
    """Make ``tests/train`` helpers (``tiny_model``, ``test_pipeline``) importable."""
    import sys

    folder = str(Path(__file__).parents[1] / "train")
    if folder not in sys.path:
        sys.path.insert(0, folder)

