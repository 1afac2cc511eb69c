"""``python -m mammoclip_kit.bench pretrain``: img/s, step time and peak memory of one pretraining step.

A step is what the trainer does per batch: encode two image batches and two text batches (MVS; one of each with
``--loss clip``), the loss, backward and an AdamW step, on ``--text-len``-token texts (the authors pad to 256; the
kit pads to the longest text of the batch, so with ``--data real`` the synthetic texts take the real length). Input:
``--data synthetic`` (random tensors already on the device: the model alone) or ``--data real`` (the training loader:
PNG decode, the paper's augmentation, collate and tokenisation in ``--workers`` processes, then the same step;
prints both rates, end to end and synthetic, and their ratio). Real data: ``--tables`` + ``--data-root`` (built
tables), otherwise PNGs written once to a temporary folder at the input size.

For the ``paper-*`` presets the text tower is Bio_ClinicalBERT when it is available locally; otherwise (or with
``--text-tower bert-base``) a randomly initialised BERT of exactly its shape (vocabulary 28,996, 512 positions,
12 layers × 768, pooler: 108.3 M parameters), which costs the same. Peak memory is ``torch.cuda.max_memory_allocated``
on CUDA and the process's peak RSS on CPU.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

__all__ = ["benchmark", "BERT_BASE", "StepSetup", "build_step", "synthetic_batches", "real_batches", "time_steps",
           "peek_text_len", "write_synthetic_pngs",
           "bert_base_text_config", "peak_memory_gb", "reset_peak_memory"]

#: Bio_ClinicalBERT's architecture (bert-base-cased: vocabulary 28,996, 512 positions, 12 × 768, 3072 FFN, pooler).
BERT_BASE: dict[str, Any] = {"kind": "small-bert", "name_or_path": None, "vocab_size": 28996, "hidden": 768,
                             "layers": 12, "heads": 12, "intermediate": 3072, "max_length": 512, "add_pooler": True}


_REPORT_WORDS = ("breast", "mass", "calcification", "scattered", "fibroglandular", "density", "no", "suspicious",
                 "findings", "left", "right", "upper", "outer", "quadrant", "benign", "stable", "asymmetry", "the",
                 "is", "there", "of", "with", "and", "in", "bi-rads", "2", "architectural", "distortion")


def bert_base_text_config() -> tuple[dict[str, Any], list[str]]:
    """The text-tower override and a corpus whose WordPiece vocabulary has exactly 28,996 entries (the stand-in's
    embedding matrix then has Bio_ClinicalBERT's 28,996 rows): the kit's breast-imaging corpus, so that report words
    are whole tokens as in a clinical vocabulary, filled up with placeholder words; the weights are random."""
    from mammoclip_kit.models.towers import DEFAULT_CORPUS

    corpus = list(DEFAULT_CORPUS) + [" ".join(_REPORT_WORDS)] * 3
    corpus += [" ".join(f"w{i + j}" for j in range(100)) for i in range(0, 30000, 100)]
    return dict(BERT_BASE), corpus


def peak_memory_gb(device: torch.device) -> float:
    """Peak memory since :func:`reset_peak_memory`: CUDA max allocated, or the process's peak RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def build_model(preset: str, text_tower: str, image_size: tuple[int, int] | None) -> tuple[torch.nn.Module, str]:
    """The preset's model, with the text tower ``preset`` | ``bert-base`` (Bio_ClinicalBERT's shape, random) |
    ``minilm`` | a hub id or folder. ``preset`` falls back to ``bert-base`` for paper presets offline."""
    from mammoclip_kit.models.factory import create_model

    extra = {"image_size": image_size} if image_size else {}
    if text_tower == "preset":
        try:
            return create_model(preset, **extra), "preset"
        except Exception as exc:  # noqa: BLE001 - offline without Bio_ClinicalBERT: same-shape stand-in
            if not preset.startswith("paper"):
                raise
            print(f"text tower of {preset} unavailable ({type(exc).__name__}); using a random BERT of "
                  "Bio_ClinicalBERT's shape")
            text_tower = "bert-base"
    if text_tower == "bert-base":
        text, corpus = bert_base_text_config()
        model = create_model(preset, texts=corpus, text=text, **extra)
        model.config.text.max_length = 256  # 512 positions as Bio_ClinicalBERT, texts truncated as the paper's
        return model, "bert-base (random, Bio_ClinicalBERT shape)"
    if text_tower == "minilm":
        return create_model(preset, text={"kind": "minilm", "name_or_path": None}, **extra), "minilm"
    return create_model(preset, text_encoder=text_tower, **extra), text_tower


@dataclass
class StepSetup:
    """A ready-to-run training step (model on the device, optimizer, loss, autocast dtype, scaler)."""

    model: torch.nn.Module
    run: torch.nn.Module
    loss_fn: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: Any
    dtype: torch.dtype | None
    device: torch.device
    channels_last: bool
    two_views: bool

    def step(self, batch: dict[str, Any]) -> float:
        """One optimizer step on ``batch`` (``image``, ``image2``, ``tokens``, ``tokens2`` on any device)."""
        from mammoclip_kit.train.loop import _to_device, autocast_context, compute_loss

        inputs = _to_device(batch, self.device, self.channels_last)
        self.optimizer.zero_grad(set_to_none=True)
        with autocast_context(self.dtype, self.device):
            feats = self.run(inputs["image"], inputs["tokens"], inputs.get("image2"), inputs.get("tokens2"))
            loss = compute_loss(self.loss_fn, feats)["loss"]
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        value = float(loss.detach())  # synchronises the device
        return value


def build_step(model: torch.nn.Module, device: torch.device, *, loss: str = "mvs", amp: str = "none",
               channels_last: bool = True, grad_checkpointing: bool = False, compile: bool = False) -> StepSetup:
    """Wrap ``model`` the way :func:`mammoclip_kit.train.loop.train` does (same module, loss, AdamW, autocast)."""
    from mammoclip_kit.losses import create_loss
    from mammoclip_kit.train.loop import ContrastiveModule

    model.to(device).train()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    model.image_encoder.set_grad_checkpointing(grad_checkpointing)
    module = ContrastiveModule(model, two_views=loss == "mvs")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    return StepSetup(model=model, run=torch.compile(module) if compile else module,
                     loss_fn=create_loss({"name": loss}),
                     optimizer=torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=1e-4),
                     scaler=torch.amp.GradScaler(device.type, enabled=dtype == torch.float16), dtype=dtype,
                     device=device, channels_last=channels_last, two_views=loss == "mvs")


def synthetic_batches(model: torch.nn.Module, batch: int, size: tuple[int, int], text_len: int,
                      device: torch.device, seed: int = 0) -> Iterator[dict[str, Any]]:
    """The same random batch (images and token ids already on ``device``) forever: the model-only rate."""
    g = torch.Generator().manual_seed(seed)
    vocab = int(model.text_encoder.text_encoder.config.vocab_size)
    text_len = min(text_len, int(model.config.text.max_length))
    data: dict[str, Any] = {}
    for suffix in ("", "2"):
        data[f"image{suffix}"] = torch.randn(batch, 3, *size, generator=g).to(device)
        data[f"tokens{suffix}"] = {"input_ids": torch.randint(5, vocab, (batch, text_len), generator=g).to(device),
                                   "attention_mask": torch.ones(batch, text_len, dtype=torch.long, device=device)}
    while True:
        yield data


def write_synthetic_pngs(folder: Path, n: int, size: tuple[int, int], seed: int = 0, report_words: int = 60) -> Path:
    """``n`` breasts × 2 views of 8-bit PNGs at ``size`` (smooth texture in a half-ellipse, compressing like a
    preprocessed mammogram) and ``tables/reports_pretrain.csv`` pointing at them, with texts of ``report_words``
    report words; returns the tables folder."""
    import cv2
    import numpy as np
    import pandas as pd

    from mammoclip_kit.data.records import write_table

    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    mask = ((yy - h / 2) / (h / 2)) ** 2 + (xx / (0.9 * w)) ** 2 < 1
    rows = []
    for i in range(n):
        paths = {}
        for view in ("CC", "MLO"):
            noise = cv2.GaussianBlur(rng.random((h, w), dtype=np.float32), (0, 0), 4 + 4 * rng.random())
            image = np.clip((noise - noise.min()) / (np.ptp(noise) + 1e-6) * 200 + 30, 0, 255) * mask
            rel = f"png/b{i}/{view}.png"
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / rel), image.astype(np.uint8))
            paths[view] = [rel]
        texts = [" ".join(words) for words in rng.choice(_REPORT_WORDS, size=(4, report_words))]
        rows.append({"patient_id": f"b{i}", "laterality": "L", "views": ["CC", "MLO"], **paths, "fold": 1,
                     "text": texts[:2], "text_augment": texts[2:]})
    write_table(pd.DataFrame(rows), folder / "tables" / "reports_pretrain.csv")
    return folder / "tables"


def real_batches(model: torch.nn.Module, tables: Path, root: Path, batch: int, size: tuple[int, int],
                 workers: int, loss: str = "mvs", seed: int = 0) -> Iterator[dict[str, Any]]:
    """Batches from the training loader (reports_pretrain.csv under ``tables``, image paths relative to ``root``):
    PNG decode, the paper's augmentation, normalisation and collate in ``workers`` processes, tokenised here as the
    trainer does; no image cache (every epoch reads the files). Cycles over epochs."""
    from torch.utils.data import DataLoader

    from mammoclip_kit.data.datasets import ImageTextDataset, PairCollate
    from mammoclip_kit.data.records import read_table
    from mammoclip_kit.train.loop import _tokens

    table = read_table(Path(tables) / "reports_pretrain.csv")
    dataset = ImageTextDataset(table, root, size, train=True, seed=seed, cache_images=False,
                               table="reports_pretrain.csv")
    if len(dataset) < batch:
        raise ValueError(f"{tables}/reports_pretrain.csv: {len(dataset)} rows, fewer than one batch of {batch}")
    two_views = loss == "mvs"
    epoch = 0
    while True:
        dataset.set_epoch(epoch)
        loader = DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True, num_workers=workers,
                            collate_fn=PairCollate(), pin_memory=torch.cuda.is_available(),
                            persistent_workers=False, prefetch_factor=4 if workers else None,
                            generator=torch.Generator().manual_seed(seed + epoch))
        for item in loader:
            item.update(_tokens(item, model.tokenize, SimpleNamespace(two_views=two_views)))
            yield item
        epoch += 1


def peek_text_len(batches: Iterator[dict[str, Any]]) -> tuple[int, Iterator[dict[str, Any]]]:
    """The token length of the first batch of ``batches`` (texts padded to the longest, as the trainer does) and an
    iterator that still yields that batch first."""
    import itertools

    first = next(batches)
    return int(first["tokens"]["input_ids"].shape[1]), itertools.chain([first], batches)


def time_steps(setup: StepSetup, batches: Iterator[dict[str, Any]] | dict[str, Iterator[dict[str, Any]]],
               steps: int, warmup: int) -> dict[str, Any]:
    """Run ``warmup`` untimed then ``steps`` timed steps from ``batches``; seconds per step (mean, min) including
    the wait for the next batch, and the process CPU time per step.

    ``batches`` may be a dict of named sources (e.g. ``synthetic`` and ``real``): each is run as its own block
    (warm-up, then timed steps), one after the other — not alternated, because loader workers would prepare the next
    real batch during a synthetic step and flatter the end-to-end rate. The result then has one entry per name."""
    sources = batches if isinstance(batches, dict) else {"": batches}
    out: dict[str, Any] = {}
    for name, source in sources.items():
        for _ in range(warmup):
            setup.step(next(source))
        times, cpu_start = [], time.process_time()
        for _ in range(steps):
            t = time.perf_counter()
            setup.step(next(source))  # ends with a host read of the loss: the device work is done
            times.append(time.perf_counter() - t)
        out[name] = {"step_s": sum(times) / len(times), "step_min_s": min(times),
                     "cpu_s_per_step": (time.process_time() - cpu_start) / len(times)}
    return out if isinstance(batches, dict) else out[""]


def benchmark(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Parse ``argv``, time ``--steps`` training steps after ``--warmup`` untimed ones, print and return the numbers."""
    parser = argparse.ArgumentParser(prog="python -m mammoclip_kit.bench pretrain", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="paper-b2", help="model preset (paper-b2, paper-b5, classroom, smoke)")
    parser.add_argument("--batch", type=int, default=2, help="breasts per step (MVS: 2 images and 2 texts each)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--height", type=int, default=None, help="input height (default: the preset's)")
    parser.add_argument("--width", type=int, default=None, help="input width (default: the preset's)")
    parser.add_argument("--loss", choices=["mvs", "clip"], default="mvs")
    parser.add_argument("--amp", choices=["auto", "none", "bf16", "fp16"], default="auto",
                        help="autocast dtype; auto = the trainer's default (bf16 on CUDA when supported, fp32 on CPU)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                        help="channels-last model and input (the trainer's default)")
    parser.add_argument("--grad-checkpointing", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--text-tower", default="preset",
                        help="preset | bert-base (random, Bio_ClinicalBERT shape) | minilm | a hub id or folder")
    parser.add_argument("--text-len", type=int, default=256,
                        help="tokens per synthetic text (--data real: the real batches' length)")
    parser.add_argument("--data", choices=["synthetic", "real"], default="synthetic",
                        help="real: also run the training loader (PNG decode + augmentation) end to end")
    parser.add_argument("--tables", default=None, help="--data real: folder with reports_pretrain.csv")
    parser.add_argument("--data-root", default=None, help="--data real: root of the tables' image paths")
    parser.add_argument("--workers", type=int, default=2, help="--data real: loader worker processes")
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(list(argv) if argv is not None else None)

    from mammoclip_kit.env import pick_device, seed_everything
    from mammoclip_kit.train.loop import amp_dtype

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.threads:
        torch.set_num_threads(args.threads)
    seed_everything(0)
    device = pick_device(args.device)
    size = (args.height, args.width) if args.height and args.width else None
    model, text_desc = build_model(args.preset, args.text_tower, size)
    height, width = size or tuple(model.config.image_size)
    dtype = amp_dtype(args.amp, device) if args.amp in ("auto", "none") else \
        {"bf16": torch.bfloat16, "fp16": torch.float16}[args.amp]
    amp = {torch.bfloat16: "bf16", torch.float16: "fp16", None: "none"}[dtype]
    setup = build_step(model, device, loss=args.loss, amp=amp, channels_last=args.channels_last,
                       grad_checkpointing=args.grad_checkpointing, compile=args.compile)
    views = 2 if args.loss == "mvs" else 1
    text_len = min(args.text_len, int(model.config.text.max_length))
    reset_peak_memory(device)
    tmp = tempfile.TemporaryDirectory(prefix="mammoclip-bench-")
    real = None
    if args.data == "real":  # the synthetic texts then get the real batches' token length: the same work
        if args.tables:
            tables, root, what = Path(args.tables), Path(args.data_root or Path(args.tables).parent), "tables"
        else:
            n = max(2 * args.batch, args.batch * (args.steps + args.warmup))
            tables, root = write_synthetic_pngs(Path(tmp.name), n, (height, width)), Path(tmp.name)
            what = f"{n} synthetic PNGs"
        loader = real_batches(model, tables, root, args.batch, (height, width), args.workers, args.loss)
        text_len, real = peek_text_len(loader)
    # the real block first: its loader starts just before it, so no batch is prepared while another block runs
    sources = {"real": real} if real is not None else {}
    sources["synthetic"] = synthetic_batches(model, args.batch, (height, width), text_len, device)
    with tmp:
        timed = time_steps(setup, sources, args.steps, args.warmup)
        if real is not None:
            loader.close()  # stop the loader's workers before the folder goes
    synthetic = timed["synthetic"]
    result = {"step_s": synthetic["step_s"], "img_per_s": args.batch * views / synthetic["step_s"],
              "breasts_per_s": args.batch / synthetic["step_s"], "peak_mem_gb": peak_memory_gb(device),
              "cpu_s_per_step": synthetic["cpu_s_per_step"]}
    print(f"pretrain {args.preset} {height}x{width} batch {args.batch} ({args.loss}: {views} image(s) + {views} "
          f"text(s) of {text_len} tokens per breast) on {device}; text tower {text_desc}")
    print(f"  amp={amp} channels_last={args.channels_last} grad_checkpointing={args.grad_checkpointing} "
          f"compile={args.compile} threads={torch.get_num_threads()} warmup={args.warmup} steps={args.steps}")
    print(f"  synthetic input: {result['img_per_s']:.3f} img/s, {synthetic['step_s']:.3f} s/step "
          f"(min {synthetic['step_min_s']:.3f}), process CPU time {synthetic['cpu_s_per_step']:.3f} s/step, "
          f"peak memory {result['peak_mem_gb']:.2f} GB "
          f"({'CUDA max allocated' if device.type == 'cuda' else 'CPU peak RSS'})")
    if args.data == "real":
        e2e = timed["real"]
        result.update({"e2e_step_s": e2e["step_s"], "e2e_img_per_s": args.batch * views / e2e["step_s"],
                       "e2e_fraction": synthetic["step_s"] / e2e["step_s"]})
        print(f"  real loader ({what}, {args.workers} workers, PNG decode + augmentation): "
              f"{result['e2e_img_per_s']:.3f} img/s, {e2e['step_s']:.3f} s/step — "
              f"{100 * result['e2e_fraction']:.0f} % of the synthetic-input rate")
    return result
