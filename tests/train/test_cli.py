"""The pretraining CLI (interrupt + resume through the command line) and the pretrain benchmark."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from test_pipeline import SMOKE, _tables

from mammoclip_kit.pretrain import main
from mammoclip_kit.train.bench import benchmark


def test_pretrain_cli_stops_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _tables(tmp_path, n=12)
    args = ["--config", str(SMOKE), "--variant", "clip", "--output-dir", str(tmp_path), "image_size=[48,32]",
            "max_steps=3", "epochs=3"]
    assert main(args + ["--stop-at-step", "1"]) == 0
    assert '"interrupted": true' in capsys.readouterr().out
    out = tmp_path / "checkpoints" / "clip"
    assert (out / "train" / "last.pt").is_file() and not (out / "metrics.json").exists()
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 3 and metrics["loss"] == "clip"
    with pytest.raises(SystemExit):
        main(["--config", str(SMOKE), "--variant", "siglip"])


def test_bench_pretrain_prints_numbers(capsys: pytest.CaptureFixture) -> None:
    result = benchmark(["--preset", "smoke", "--batch", "2", "--steps", "1", "--warmup", "0", "--height", "48",
                        "--width", "32", "--text-len", "16", "--threads", "1"])
    assert result["step_s"] > 0 and result["img_per_s"] == pytest.approx(4 / result["step_s"])
    assert result["peak_mem_gb"] > 0 and result["cpu_s_per_step"] > 0
    assert "img/s" in capsys.readouterr().out


def test_help_documents_data_root_torchrun_and_resume(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for needle in ("--data-root", "torchrun --standalone --nproc_per_node", "--nnodes", "--node_rank",
                   "--rdzv_endpoint", "resume", "progress.log", "img/s", "image_init="):
        assert needle in text, needle


def test_tables_and_data_root_without_output_dir(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "data"          # image paths in the tables are relative to this folder
    _tables(data, n=12)
    out = tmp_path / "elsewhere" / "ckpt"
    args = ["--config", str(SMOKE), "--variant", "clip", "--tables", str(data / "tables"), "--data-root", str(data),
            "--out", str(out), "image_size=[48,32]", "max_steps=4", "epochs=2", "progress_every_steps=2",
            "tensorboard=false"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "step 2/4" in printed and "img/s" in printed and "ETA" in printed
    lines = (out / "train" / "progress.log").read_text().splitlines()
    assert [line.split(" (epoch")[0].split()[-1] for line in lines] == ["2/4", "4/4"]
    assert all("img/s" in line and "ETA" in line for line in lines)
    log = pd.read_csv(out / "train" / "log.csv")
    assert {"img_per_s", "eta_s", "elapsed_s"} <= set(log.columns) and (log["img_per_s"] > 0).all()
    assert log["eta_s"].iloc[-1] == 0


def test_missing_data_names_the_options_not_an_env_variable(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--config", str(SMOKE)])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "--data-root" in err and "MAMMOCLIP_DATA" not in err
    with pytest.raises(SystemExit):
        main(["--config", str(SMOKE), "--tables", str(tmp_path), "--data-root", str(tmp_path / "nope"),
              "--out", str(tmp_path / "o")])
    assert "nope: --data-root is not a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--config", str(SMOKE), "--profile", "paper", "--output-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert "--data-root" in err and "MAMMOCLIP_DATA" not in err


def test_batch_one_needs_two_processes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _tables(tmp_path, n=8)
    with pytest.raises(SystemExit):
        main(["--config", str(SMOKE), "--output-dir", str(tmp_path), "batch_size=1", "image_size=[48,32]"])
    err = capsys.readouterr().err
    assert "batch_size=1 on 1 process" in err and "no negative" in err and "torchrun" in err


def test_torchrun_two_cpu_processes_with_batch_one(tmp_path: Path) -> None:
    """``torchrun --standalone --nproc_per_node 2`` on CPU (gloo), batch 1 per process: the README's smoke command."""
    _tables(tmp_path, n=8)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
               "mammoclip_kit.pretrain", "--config", str(SMOKE), "--output-dir", str(tmp_path), "--variant", "clip",
               "image_size=[48,32]", "max_steps=2", "epochs=1", "batch_size=1", "tensorboard=false", "image_init=null"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "checkpoints" / "clip" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["batch_size"] == 1 and metrics["steps"] == 2
    assert metrics["final_val_loss"] > 0   # validation gathers the single rows of both ranks too
    assert (tmp_path / "checkpoints" / "clip" / "train" / "progress.log").read_text().count("img/s") == 1


def test_bert_base_stand_in_has_bio_clinical_bert_shape() -> None:
    from mammoclip_kit.models.towers import TextTowerConfig, create_text_tower
    from mammoclip_kit.train.bench import bert_base_text_config

    text, corpus = bert_base_text_config()
    tower, tokenizer = create_text_tower(TextTowerConfig(**text), texts=corpus)
    config = tower.text_encoder.config
    assert (config.vocab_size, config.max_position_embeddings, config.num_hidden_layers, config.hidden_size,
            config.intermediate_size) == (28996, 512, 12, 768, 3072)
    assert len(tokenizer) == 28996
    n = sum(p.numel() for p in tower.parameters())
    assert 108.2e6 < n < 108.4e6   # Bio_ClinicalBERT (bert-base-cased + pooler): 108.3 M


def test_bench_pretrain_real_loader_end_to_end(capsys: pytest.CaptureFixture) -> None:
    result = benchmark(["--preset", "smoke", "--batch", "2", "--steps", "2", "--warmup", "1", "--height", "48",
                        "--width", "32", "--text-len", "16", "--threads", "1", "--data", "real", "--workers", "0"])
    assert result["e2e_step_s"] > 0 and result["e2e_img_per_s"] == pytest.approx(4 / result["e2e_step_s"])
    assert 0 < result["e2e_fraction"]
    out = capsys.readouterr().out
    assert "real loader (6 synthetic PNGs, 0 workers" in out and "% of the synthetic-input rate" in out


def test_bench_data_prints_stages_and_per_worker_rate(capsys: pytest.CaptureFixture) -> None:
    from mammoclip_kit.train.bench_data import benchmark as bench_data

    result = bench_data(["--height", "96", "--width", "64", "--png-height", "192", "--png-width", "128",
                         "--images", "2", "--workers", "0", "1", "--batch", "2", "--batches", "1"])
    ms = result["ms"]
    assert set(ms) >= {"decode", "resize", "augment (p as trained)", "  elastic alone", "normalise", "total"}
    assert ms["resize"] > 0 and ms["total"] == pytest.approx(ms["decode"] + ms["resize"] + ms["normalise"]
                                                             + ms["augment (p as trained)"])
    assert result["img_per_s_per_worker"] == pytest.approx(1000 / ms["total"])
    assert set(result["loader_img_per_s"]) == {0, 1} and min(result["loader_img_per_s"].values()) > 0
    out = capsys.readouterr().out
    assert "synthetic 8-bit PNGs of 192x128 → 96x64" in out and "per worker" in out and "1 worker(s)" in out


def test_profile_with_an_empty_data_root_fails_before_any_long_phase(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "data").mkdir()
    with pytest.raises(SystemExit):   # before the trunk cache and training (long phases at paper scale)
        main(["--config", str(SMOKE), "--profile", "paper", "--data-root", str(tmp_path / "data"), "--output-dir",
              str(tmp_path / "out"), "max_steps=1"])
    err = capsys.readouterr().err
    assert "no input tables to build from" in err and str(tmp_path / "data") in err   # the root and what it lacks
    assert not (tmp_path / "out" / "checkpoints").exists()   # nothing was trained
