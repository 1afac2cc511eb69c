"""``make gpu-check``: the batch search and the whole script's code path (``--tiny`` on the CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mammoclip_kit.train.gpu_check import benchmark, is_oom, largest_batch


def _device_with(limit: int):
    tried = []

    def fits(batch: int) -> bool:
        tried.append(batch)
        if batch > limit:  # what a CUDA step past the memory cap raises; fits() turns it into "no"
            return not is_oom(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
        return True

    return fits, tried


@pytest.mark.parametrize("limit", [1, 3, 7, 8, 13, 63])
def test_largest_batch_finds_the_limit_by_doubling_then_bisection(limit: int) -> None:
    fits, tried = _device_with(limit)
    found = largest_batch(fits, start=4, cap=64)
    assert found.fits == limit and found.exact and found.describe() == str(limit)
    assert len(tried) <= 12 and len(set(tried)) == len(tried)   # log-many probes, none repeated


def test_largest_batch_reports_the_cap_and_the_time_bound() -> None:
    fits, _ = _device_with(1000)
    assert largest_batch(fits, start=8, cap=32).describe() == "≥ 32 (search cap)"
    fits, _ = _device_with(10)
    ticks = iter(range(100))
    found = largest_batch(fits, start=1, cap=64, deadline_s=2.5, clock=lambda: next(ticks))
    assert found.timed_out and found.fits <= 10 and "(time)" in found.describe()


def test_a_step_out_of_memory_means_does_not_fit_other_errors_propagate() -> None:
    from mammoclip_kit.models.factory import create_model
    from mammoclip_kit.train.gpu_check import _fits_under

    class Setup:
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)

        def step(self, batch):
            n = batch["image"].shape[0]
            if n == 5:
                raise RuntimeError("shape mismatch")
            if n > 3:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")
            return 0.0

    fits = _fits_under(Setup(), create_model("smoke"), (32, 16), 8, limit_gb=1e9, device=torch.device("cpu"))
    assert largest_batch(fits, start=1, cap=4).fits == 3
    with pytest.raises(RuntimeError, match="shape mismatch"):
        fits(5)


def test_tiny_run_prints_the_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    result = benchmark(["--tiny", "--json", str(tmp_path / "gpu.json")])
    row = result["rows"][0]
    assert row["preset"] == "smoke" and row["step_s"] > 0 and row["e2e_img_per_s"] > 0 and row["embed_img_per_s"] > 0
    assert row["max_batch_40gb"] == "≥ 4 (search cap)" and [b for b, _ in row["max_batch_40gb_probes"]] == [2, 4]
    out = capsys.readouterr().out
    assert "| smoke | 2 |" in out and "max batch 40 GB" in out and "--tiny: code path only" in out
    assert json.loads((tmp_path / "gpu.json").read_text())["rows"][0]["batch"] == 2
