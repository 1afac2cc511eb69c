"""The pretraining CLI (interrupt + resume through the command line) and the pretrain benchmark."""

from __future__ import annotations

import json
from pathlib import Path

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
