"""The shared build-if-missing helper and the atomic writers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from types import SimpleNamespace

import pandas as pd
import pytest

from mammoclip_kit.artifacts import Artifact, atomic_write_csv, atomic_write_text, ensure
from mammoclip_kit.config import StageConfig


def test_ensure_builds_once_reuses_and_rebuilds_on_new_parameters(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MAMMOCLIP_VERBOSE", "1")  # a reuse is reported only when asked
    builds = []

    def build(path):
        builds.append(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "out.txt").write_text(str(len(builds)))
        return "built"

    target = tmp_path / "artefact"
    assert ensure(target, {"size": (3, 2)}, build) == "built"
    assert ensure(target, {"size": [3, 2]}, build, load=lambda p: (p / "out.txt").read_text()) == "1"
    assert len(builds) == 1 and "reusing" in capsys.readouterr().out
    ensure(target, {"size": (4, 2)}, build)
    assert len(builds) == 2 and "parameters changed (size)" in capsys.readouterr().out
    ensure(target, {"size": (4, 2)}, build, retrain=True)
    assert len(builds) == 3
    assert json.loads((target / "params.json").read_text()) == {"params": {"size": [4, 2]}, "complete": True}


def test_interrupted_build_is_built_again(tmp_path):
    target = tmp_path / "cache.npz"

    def crash(path):
        path.write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        ensure(target, {"a": 1}, crash)
    assert not Artifact(target, {"a": 1}).is_current()          # no record: not reused
    ensure(target, {"a": 1}, lambda p: p.write_text("whole"))
    assert Artifact(target, {"a": 1}).is_current() and target.read_text() == "whole"
    assert (tmp_path / "cache.npz.params.json").is_file()


def test_atomic_writes_keep_the_old_file_on_failure(tmp_path):
    path = tmp_path / "table.csv"
    atomic_write_csv(path, pd.DataFrame({"a": [1, 2]}))
    assert path.read_text() == "a\n1\n2\n"

    class Broken:
        def to_csv(self, **_):
            raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write_csv(path, Broken())
    assert path.read_text() == "a\n1\n2\n" and [p.name for p in tmp_path.iterdir()] == ["table.csv"]
    atomic_write_text(tmp_path / "sub" / "x.txt", "é")
    assert (tmp_path / "sub" / "x.txt").read_text(encoding="utf-8") == "é"


@dataclass
class _Cfg(StageConfig):
    SECTION = "probe"
    PARAMETERS = {"batch_size": "batch_size", "num_workers": "workers"}
    IGNORED = frozenset({"other", "sub"})
    batch_size: int = 8
    workers: int = 0
    epochs: int = 5


def test_stage_config_order_default_section_parameter_keyword():
    ctx = SimpleNamespace(section=lambda name: {"batch_size": 16, "epochs": 7, "other": 1, "sub": {"epochs": 2}},
                          params={"batch_size": 32, "num_workers": None})
    cfg = _Cfg.from_context(ctx)
    assert (cfg.batch_size, cfg.workers, cfg.epochs) == (32, 0, 7)     # parameter beats section; None ignored
    assert _Cfg.from_context(ctx, epochs=9, workers=None).epochs == 9  # keyword beats section
    assert _Cfg.from_context(ctx, subsection="sub").epochs == 2
    with pytest.raises(ValueError, match=r"probe section: unknown setting\(s\) \['typo'\]"):
        _Cfg.from_dict({"typo": 1})


def test_a_reuse_is_silent_unless_verbose(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MAMMOCLIP_VERBOSE", raising=False)
    ensure(tmp_path / "a", {"x": 1}, lambda p: p.mkdir())
    ensure(tmp_path / "a", {"x": 1}, lambda p: p.mkdir())
    assert capsys.readouterr().out == ""
    ensure(tmp_path / "a", {"x": 2}, lambda p: None)                 # a rebuild is always said
    assert "parameters changed (x)" in capsys.readouterr().out
    monkeypatch.setenv("MAMMOCLIP_VERBOSE", "1")
    ensure(tmp_path / "a", {"x": 2}, lambda p: None)
    assert "reusing" in capsys.readouterr().out
