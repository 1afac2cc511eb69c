"""The run context: profile resolution, vocabulary, locations, metrics files."""

import json

import pytest

from mammoclip_kit import context, env


def test_profile_resolution_order(monkeypatch):
    monkeypatch.delenv(env.PROFILE_ENV, raising=False)
    assert context.resolve_profile(None) == "classroom"
    monkeypatch.setenv(env.PROFILE_ENV, "smoke")
    assert context.resolve_profile(None) == "smoke"
    assert context.resolve_profile("paper") == "paper"
    with pytest.raises(ValueError, match="unknown profile 'huge'"):
        context.resolve_profile("huge")


def test_unknown_parameter_is_rejected():
    with pytest.raises(TypeError, match="learning_rate"):
        context.make_context("x", profile="smoke", learning_rate=0.1)


def test_paper_profile_needs_real_data(monkeypatch):
    monkeypatch.delenv(env.DATA_ENV, raising=False)
    with pytest.raises(ValueError, match="data_root"):
        context.make_context("x", profile="paper")


def test_default_locations_follow_environment_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv(env.DATA_ENV, str(tmp_path / "d"))
    monkeypatch.setenv(env.RUNS_ENV, str(tmp_path / "r"))
    ctx = context.make_context("05_x", profile="smoke")
    assert ctx.data_root == tmp_path / "d" / "cohort" / "smoke"
    assert ctx.is_cohort
    assert ctx.output_dir == tmp_path / "r" / "smoke"
    assert ctx.png_dir("vindr") == tmp_path / "r" / "smoke" / "png" / "vindr"
    assert ctx.checkpoint_dir("clip") == tmp_path / "r" / "smoke" / "checkpoints" / "clip"
    assert ctx.relpath(ctx.tables_dir / "a.csv") == "tables/a.csv"
    assert ctx.abspath("tables/a.csv") == ctx.tables_dir / "a.csv"


def test_user_data_root_is_not_a_cohort(tmp_path):
    ctx = context.make_context("x", profile="classroom", data_root=str(tmp_path), output_dir=str(tmp_path / "o"))
    assert not ctx.is_cohort and ctx.data_root == tmp_path


def test_param_prefers_user_value_then_profile_section(tmp_path):
    ctx = context.make_context("x", profile="classroom", output_dir=str(tmp_path))
    assert ctx.param("batch_size", "pretrain", default=7) == ctx.section("pretrain").get("batch_size", 7)
    ctx = context.make_context("x", profile="classroom", output_dir=str(tmp_path), batch_size=3)
    assert ctx.param("batch_size", "pretrain", default=7) == 3


def test_write_metrics_serialises_numpy_and_nan(tmp_path):
    np = pytest.importorskip("numpy")
    ctx = context.make_context("07_demo", profile="smoke", output_dir=str(tmp_path))
    path = ctx.write_metrics({"auc": np.float32(0.75), "n": np.int64(3), "bad": float("nan"), "p": tmp_path})
    payload = json.loads(path.read_text())
    assert path == tmp_path / "metrics" / "07_demo.json"
    assert payload["metrics"] == {"auc": 0.75, "n": 3, "bad": None, "p": str(tmp_path)}
    assert payload["profile"] == "smoke" and payload["notebook"] == "07_demo"


def test_setup_notebook_reads_vocabulary_from_namespace(tmp_path, capsys):
    namespace = {"profile": "smoke", "output_dir": str(tmp_path), "seed": 5, "unrelated": 1}
    ctx = context.setup_notebook("00_welcome", namespace)
    assert ctx.profile == "smoke" and ctx.seed == 5
    out = capsys.readouterr().out
    assert "torch" in out and "profile" in out and str(tmp_path) not in out


def test_seed_everything_repeats_random_draws():
    import torch

    env.seed_everything(3)
    a = torch.rand(4)
    env.seed_everything(3)
    assert torch.equal(a, torch.rand(4))


def test_pick_device_honours_explicit_choice():
    assert str(env.pick_device("cpu")) == "cpu"
    assert env.pick_device(None).type in {"cpu", "cuda", "mps"}


def test_cpu_allocator_tuning_is_applied_once_and_can_be_turned_off():
    import os
    import platform
    import subprocess
    import sys

    code = ("from mammoclip_kit import env; first = env.tune_cpu_allocator(); "
            "print(first, env.tune_cpu_allocator(), 'CPU allocator' in env.versions_report())")
    tuned = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert tuned == [str(glibc), str(glibc), "True"]  # idempotent, and the versions report says what was done
    off = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "MAMMOCLIP_MALLOC": "default"}).stdout.split()
    assert off == ["False", "False", "True"]
