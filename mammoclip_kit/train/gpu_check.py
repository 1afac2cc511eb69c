"""``make gpu-check`` / ``python -m mammoclip_kit.bench gpu-check``: is this GPU ready for paper pretraining?

One prepared run (about 10 minutes on one GPU with the defaults; paper-b5 took 345 s on an H200) that prints, for ``paper-b5`` and ``paper-b2`` at
1520 × 912 with the MVS loss:

* **bf16 + gradient checkpointing + channels_last** (the recommended settings): step time, img/s on synthetic input
  (the model alone), img/s end to end through the real training loader (PNG decode + the paper's augmentation in
  ``--workers`` processes, on PNGs written once at 1520 × 912) and its fraction of the synthetic rate, peak memory,
  and the largest batch that fits in 40 GB and in 80 GB (doubling, then bisection, each probe one real step with the
  allocator capped by ``torch.cuda.set_per_process_memory_fraction``, an out-of-memory error meaning "does not fit";
  bounded by ``--search-s`` per limit, so a bracket ``lo–hi`` may be printed instead of a number);
* **fp16 AMP without checkpointing** at the same batch: step time and peak memory, and the memory ratio
  (bf16 + checkpointing ÷ fp16 without);
* **embedding throughput** of the image tower (inference, bf16 autocast, channels_last input).

The text tower is a randomly initialised BERT of Bio_ClinicalBERT's shape unless ``--text-encoder`` names a local
folder (same cost). ``--tiny`` runs the same code path in seconds on a CPU (smoke model, 64 × 48 input, a few
steps): the test suite runs it; its numbers say nothing about a GPU.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = ["benchmark", "largest_batch", "BatchSearch", "is_oom"]


def is_oom(error: BaseException) -> bool:
    """Whether ``error`` is an out-of-memory error of the device (CUDA) or of the CPU allocator."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


@dataclass
class BatchSearch:
    """Result of :func:`largest_batch`: ``fits`` is the largest batch that ran, ``fails`` the smallest that did not
    (None: never failed up to ``cap``), ``probes`` every (batch, fitted) tried, ``exact`` whether they are adjacent."""

    fits: int
    fails: int | None
    cap: int
    probes: list[tuple[int, bool]] = field(default_factory=list)
    timed_out: bool = False

    @property
    def exact(self) -> bool:
        return self.fails is not None and self.fails == self.fits + 1

    def describe(self) -> str:
        if self.fails is None:
            return f"≥ {self.fits} (search cap)" if self.fits >= self.cap else f"≥ {self.fits} (time)"
        if self.fits == 0:
            return f"< {self.fails}"
        return str(self.fits) if self.exact else f"{self.fits}–{self.fails - 1} (time)"


def largest_batch(fits: Callable[[int], bool], start: int = 1, cap: int = 256, deadline_s: float = 60.0,
                  clock: Callable[[], float] = time.monotonic) -> BatchSearch:
    """The largest batch ``b ≤ cap`` with ``fits(b)``, assuming fitting is monotone: double from ``start`` until a
    failure (or ``cap``), then bisect. Stops when ``deadline_s`` has passed (the bracket so far is returned)."""
    end = clock() + deadline_s
    result = BatchSearch(fits=0, fails=None, cap=cap)

    def probe(batch: int) -> bool:
        ok = bool(fits(batch))
        result.probes.append((batch, ok))
        if ok:
            result.fits = max(result.fits, batch)
        else:
            result.fails = batch if result.fails is None else min(result.fails, batch)
        return ok

    batch = max(1, min(start, cap))
    while True:
        if not probe(batch) or batch >= cap:
            break
        if clock() > end:
            result.timed_out = True
            return result
        batch = min(2 * batch, cap)
    while result.fails is not None and result.fails - result.fits > 1:
        if clock() > end:
            result.timed_out = True
            break
        probe((result.fits + result.fails) // 2 if result.fits else max(1, result.fails // 2))
    return result


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def _fits_under(setup: Any, model: Any, size: tuple[int, int], text_len: int, limit_gb: float,
                device: torch.device) -> Callable[[int], bool]:
    """``fits(batch)``: one real step at ``batch`` with the allocator capped at ``limit_gb`` (CUDA), or one step and
    the measured peak (CPU: process peak RSS, which only grows, so a CPU search is a code-path check only)."""
    from mammoclip_kit.train.bench import peak_memory_gb, reset_peak_memory, synthetic_batches

    def fits(batch: int) -> bool:
        _free(device)
        reset_peak_memory(device)
        data = None
        try:
            data = next(synthetic_batches(model, batch, size, text_len, device))
            setup.step(data)
            return peak_memory_gb(device) <= limit_gb
        except Exception as error:  # noqa: BLE001 - only out-of-memory is an answer; anything else is re-raised
            if not is_oom(error):
                raise
            return False
        finally:
            del data
            setup.optimizer.zero_grad(set_to_none=True)
            _free(device)

    return fits


def _embed_rate(model: Any, size: tuple[int, int], batch: int, steps: int, device: torch.device,
                dtype: torch.dtype | None) -> float:
    x = torch.randn(batch, 3, *size, device=device).contiguous(memory_format=torch.channels_last)
    encoder = model.image_encoder
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            encoder(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            for _ in range(steps):
                encoder(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            return batch * steps / (time.perf_counter() - start)
    finally:
        encoder.train(was_training)


def _measure(preset: str, args: argparse.Namespace, size: tuple[int, int], device: torch.device,
             png_tables: Path, png_root: Path) -> dict[str, Any]:
    from mammoclip_kit.train.bench import (
        build_model,
        build_step,
        peak_memory_gb,
        peek_text_len,
        real_batches,
        reset_peak_memory,
        synthetic_batches,
        time_steps,
    )

    row: dict[str, Any] = {"preset": preset}
    model, text_desc = build_model(preset, args.text_encoder or "bert-base", size)
    row["text_tower"] = text_desc
    views, batch = 2, args.batch
    recommended = "bf16" if device.type != "cuda" or torch.cuda.is_bf16_supported() else "fp16"
    # 1. recommended settings: bf16 + gradient checkpointing + channels_last
    setup = build_step(model, device, amp=recommended, channels_last=True, grad_checkpointing=True)
    reset_peak_memory(device)
    # the synthetic texts get the loader's token length (texts padded to the longest, as the trainer does)
    loader = real_batches(model, png_tables, png_root, batch, size, args.workers)
    text_len, real = peek_text_len(loader)
    row["text_len"] = text_len
    timed = time_steps(setup, {"real": real, "synthetic": synthetic_batches(model, batch, size, text_len, device)},
                       args.steps, args.warmup)  # real first: no batch is prepared while the other block runs
    loader.close()  # stops the loader's workers before the memory search
    synthetic, e2e = timed["synthetic"], timed["real"]
    row.update({"amp": recommended, "batch": batch, "step_s": synthetic["step_s"],
                "img_per_s": batch * views / synthetic["step_s"], "peak_gb": peak_memory_gb(device)})
    row.update({"e2e_img_per_s": batch * views / e2e["step_s"], "e2e_fraction": synthetic["step_s"] / e2e["step_s"],
                "workers": args.workers})
    print(f"    {preset}: step {row['step_s']:.3f} s, {row['img_per_s']:.1f} img/s synthetic, "
          f"{row['e2e_img_per_s']:.1f} end to end, peak {row['peak_gb']:.1f} GB", flush=True)
    total_gb = (torch.cuda.get_device_properties(device).total_memory / 1e9 if device.type == "cuda"
                else float("inf"))
    for limit in args.limits:
        key = f"max_batch_{limit:g}gb"
        if limit > total_gb:
            row[key] = f"n/a ({total_gb:.0f} GB GPU)"
            continue
        if device.type == "cuda":
            torch.cuda.set_per_process_memory_fraction(min(1.0, limit / total_gb), device)
        # cuDNN autotuning at every new batch shape made each probe take >10 s for B5 on an H200 (2026-12-04);
        # the search asks only "does it fit", so it runs untuned
        tuned, torch.backends.cudnn.benchmark = torch.backends.cudnn.benchmark, False
        try:
            found = largest_batch(_fits_under(setup, model, size, text_len, limit, device), start=batch,
                                  cap=args.max_batch, deadline_s=args.search_s)
        finally:
            torch.backends.cudnn.benchmark = tuned
            if device.type == "cuda":
                torch.cuda.set_per_process_memory_fraction(1.0, device)
        row[key] = found.describe()
        print(f"    {preset}: largest batch under {limit:g} GB {row[key]} (probes {found.probes})", flush=True)
        row[f"{key}_probes"] = found.probes
    # 2. fp16 AMP without checkpointing at the same batch (the memory baseline)
    _free(device)
    setup = build_step(model, device, amp="fp16" if device.type == "cuda" else "none", channels_last=True,
                       grad_checkpointing=False)
    reset_peak_memory(device)
    try:
        plain = time_steps(setup, synthetic_batches(model, batch, size, text_len, device), args.steps, args.warmup)
        row.update({"fp16_step_s": plain["step_s"], "fp16_peak_gb": peak_memory_gb(device)})
        row["memory_ratio"] = row["peak_gb"] / row["fp16_peak_gb"] if device.type == "cuda" else float("nan")
    except Exception as error:  # noqa: BLE001
        if not is_oom(error):
            raise
        row.update({"fp16_step_s": float("nan"), "fp16_peak_gb": "OOM", "memory_ratio": float("nan")})
    del setup
    _free(device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(recommended) if device.type == "cuda" else None
    row["embed_img_per_s"] = _embed_rate(model, size, args.embed_batch, args.steps, device, dtype)
    del model
    _free(device)
    return row


def _format_table(rows: list[dict[str, Any]], limits: Sequence[float]) -> str:
    def num(value: Any, digits: int = 2) -> str:
        return f"{value:.{digits}f}" if isinstance(value, float) and math.isfinite(value) else str(value)

    head = ["preset", "batch", "step s", "img/s synth", "img/s e2e", "e2e/synth", "peak GB"]
    head += [f"max batch {limit:g} GB" for limit in limits]
    head += ["fp16 step s", "fp16 peak GB", "mem ratio", "embed img/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["preset"], str(r["batch"]), num(r["step_s"], 3), num(r["img_per_s"]), num(r["e2e_img_per_s"]),
                 f"{100 * r['e2e_fraction']:.0f} %", num(r["peak_gb"])]
        cells += [str(r[f"max_batch_{limit:g}gb"]) for limit in limits]
        cells += [num(r["fp16_step_s"], 3), num(r["fp16_peak_gb"]), num(r["memory_ratio"]), num(r["embed_img_per_s"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def benchmark(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse ``argv``, measure every preset, print the table (and write ``--json``), return the rows."""
    parser = argparse.ArgumentParser(prog="python -m mammoclip_kit.bench gpu-check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["paper-b5", "paper-b2"])
    parser.add_argument("--height", type=int, default=1520)
    parser.add_argument("--width", type=int, default=912)
    parser.add_argument("--batch", type=int, default=8, help="breasts per step (2 images + 2 texts each)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--workers", type=int, default=8, help="loader processes for the end-to-end rate")
    parser.add_argument("--limits", type=float, nargs="*", default=[40.0, 80.0], help="memory limits (GB)")
    parser.add_argument("--max-batch", type=int, default=256, help="largest batch the search tries")
    parser.add_argument("--search-s", type=float, default=25.0, help="time bound of each batch search (s)")
    parser.add_argument("--embed-batch", type=int, default=32)
    parser.add_argument("--text-encoder", default=None, help="local Bio_ClinicalBERT folder (default: same-shape "
                                                             "random stand-in)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--json", default=None, help="also write the rows as JSON here")
    parser.add_argument("--tiny", action="store_true",
                        help="CPU code-path check in seconds: smoke model, 64x48, batch 2, 1 step, 0 workers")
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.tiny:
        args.presets, args.height, args.width, args.batch, args.steps, args.warmup = ["smoke"], 64, 48, 2, 1, 0
        args.workers, args.max_batch, args.search_s, args.embed_batch = 0, 4, 20.0, 2
        args.text_encoder = args.text_encoder or "preset"

    from mammoclip_kit.env import pick_device, seed_everything
    from mammoclip_kit.train.bench import write_synthetic_pngs

    seed_everything(0)
    device = pick_device(args.device)
    if device.type == "cuda" and device.index is None:  # the memory-fraction cap needs an explicit index
        device = torch.device("cuda", torch.cuda.current_device())
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    size = (args.height, args.width)
    started = time.perf_counter()
    print(f"gpu-check {time.strftime('%Y-%m-%d %H:%M')} on {name}, torch {torch.__version__}; {size[0]}x{size[1]}, "
          f"MVS loss, batch {args.batch}, {args.steps} timed steps" + (" [--tiny: code path only]" if args.tiny else ""))
    rows = []
    with tempfile.TemporaryDirectory(prefix="mammoclip-gpu-check-") as tmp:
        breasts = args.batch * (args.steps + args.warmup + 1)
        tables = write_synthetic_pngs(Path(tmp), breasts, size)
        for preset in args.presets:
            t0 = time.perf_counter()
            rows.append(_measure(preset, args, size, device, tables, Path(tmp)))
            print(f"  {preset}: measured in {time.perf_counter() - t0:.0f} s", flush=True)
            if args.json:  # written after every preset: a run stopped by a time limit keeps what it measured
                Path(args.json).write_text(json.dumps({"device": name, "rows": rows}, indent=2, default=str))
            if preset != args.presets[-1]:
                print(_format_table(rows[-1:], args.limits), flush=True)
    print(_format_table(rows, args.limits))
    print(f"settings: bf16 (fp16 where bf16 is unsupported) + gradient checkpointing + channels_last; 'fp16' columns: "
          f"fp16 AMP without checkpointing, same batch; mem ratio = peak GB ÷ fp16 peak GB; end to end = real "
          f"loader, {args.workers} workers, synthetic PNGs, texts of {rows[0]['text_len'] if rows else '-'} tokens "
          f"(the synthetic input too); text tower {rows[0]['text_tower'] if rows else '-'}; "
          f"total {time.perf_counter() - started:.0f} s")
    return {"device": name, "rows": rows}
