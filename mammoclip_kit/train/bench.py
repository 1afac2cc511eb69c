"""``python -m mammoclip_kit.bench pretrain``: img/s, step time and peak memory of one pretraining step.

A step is what the trainer does per batch: encode two image batches and two text batches (MVS; one of each with
``--loss clip``), the loss, backward and an AdamW step, on random images and ``--text-len``-token texts (the paper pads
to 256). For the ``paper-*`` presets the text tower is Bio_ClinicalBERT when it is available locally; otherwise (or
with ``--text-tower bert-base``) a randomly initialised BERT of the same shape (12 × 768, vocabulary 28,996), which
costs the same. Peak memory is ``torch.cuda.max_memory_allocated`` on CUDA and the process's peak RSS on CPU.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence

import torch

__all__ = ["benchmark"]

BERT_BASE = {"kind": "small-bert", "name_or_path": None, "vocab_size": 28996, "hidden": 768, "layers": 12,
             "heads": 12, "intermediate": 3072, "max_length": 256}


def _peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux


def _build(preset: str, text_tower: str, image_size: tuple[int, int] | None) -> tuple[torch.nn.Module, str]:
    from mammoclip_kit.models.factory import create_model

    extra = {"image_size": image_size} if image_size else {}
    if text_tower == "preset":
        try:
            return create_model(preset, **extra), "preset"
        except Exception as exc:  # noqa: BLE001 - offline without Bio_ClinicalBERT: same-shape stand-in
            if not preset.startswith("paper"):
                raise
            print(f"text tower of {preset} unavailable ({type(exc).__name__}); using a random BERT-base of the same shape")
            text_tower = "bert-base"
    if text_tower == "bert-base":
        corpus = [f"word{i} token{i % 97} mass calcification breast" for i in range(2000)]
        return create_model(preset, texts=corpus, text=BERT_BASE, **extra), "bert-base (random, Bio_ClinicalBERT shape)"
    if text_tower == "minilm":
        return create_model(preset, text={"kind": "minilm", "name_or_path": None}, **extra), "minilm"
    return create_model(preset, text_encoder=text_tower, **extra), text_tower


def benchmark(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Parse ``argv``, time ``--steps`` training steps after ``--warmup`` untimed ones, print and return the numbers."""
    parser = argparse.ArgumentParser(prog="python -m mammoclip_kit.bench pretrain", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="paper-b2", help="model preset (paper-b2, paper-b5, classroom, smoke)")
    parser.add_argument("--batch", type=int, default=2, help="breasts per step (MVS: 2 images and 2 texts each)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--height", type=int, default=None, help="input height (default: the preset's)")
    parser.add_argument("--width", type=int, default=None, help="input width (default: the preset's)")
    parser.add_argument("--loss", choices=["mvs", "clip"], default="mvs")
    parser.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none", help="autocast dtype")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--grad-checkpointing", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--text-tower", default="preset",
                        help="preset | bert-base (random, Bio_ClinicalBERT shape) | minilm | a hub id or folder")
    parser.add_argument("--text-len", type=int, default=256, help="tokens per text")
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(list(argv) if argv is not None else None)

    from mammoclip_kit.env import pick_device, seed_everything
    from mammoclip_kit.losses import create_loss
    from mammoclip_kit.train.loop import ContrastiveModule, autocast_context, compute_loss

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.threads:
        torch.set_num_threads(args.threads)
    seed_everything(0)
    device = pick_device(args.device)
    size = (args.height, args.width) if args.height and args.width else None
    model, text_desc = _build(args.preset, args.text_tower, size)
    height, width = size or tuple(model.config.image_size)
    model.to(device).train()
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    if args.grad_checkpointing:
        model.image_encoder.set_grad_checkpointing(True)
    module = ContrastiveModule(model, two_views=args.loss == "mvs")
    run = torch.compile(module) if args.compile else module
    loss_fn = create_loss({"name": args.loss})
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=1e-4)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    g = torch.Generator().manual_seed(0)
    images = [torch.randn(args.batch, 3, height, width, generator=g).to(device).contiguous(memory_format=fmt)
              for _ in range(2)]
    vocab = len(model.tokenizer)
    text_len = min(args.text_len, int(model.config.text.max_length))
    tokens = [{"input_ids": torch.randint(5, vocab, (args.batch, text_len), generator=g).to(device),
               "attention_mask": torch.ones(args.batch, text_len, dtype=torch.long, device=device)}
              for _ in range(2)]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        with autocast_context(dtype, device):
            feats = run(images[0], tokens[0], images[1], tokens[1])
            loss = compute_loss(loss_fn, feats)["loss"]
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return float(loss.detach())

    for _ in range(args.warmup):
        step()
    times, cpu_start = [], time.process_time()
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    cpu_per_step = (time.process_time() - cpu_start) / args.steps
    per_step = sum(times) / len(times)
    views = 2 if args.loss == "mvs" else 1
    result = {"step_s": per_step, "img_per_s": args.batch * views / per_step, "breasts_per_s": args.batch / per_step,
              "peak_mem_gb": _peak_memory_gb(device), "cpu_s_per_step": cpu_per_step}
    print(f"pretrain {args.preset} {height}x{width} batch {args.batch} ({args.loss}: {views} image(s) + {views} "
          f"text(s) of {text_len} tokens per breast) on {device}; text tower {text_desc}")
    print(f"  amp={args.amp} channels_last={args.channels_last} grad_checkpointing={args.grad_checkpointing} "
          f"compile={args.compile} threads={torch.get_num_threads()} warmup={args.warmup} steps={args.steps}")
    print(f"  {result['img_per_s']:.3f} img/s, {per_step:.3f} s/step (min {min(times):.3f}), "
          f"process CPU time {cpu_per_step:.3f} s/step, peak memory {result['peak_mem_gb']:.2f} GB ({'CUDA max allocated' if device.type == 'cuda' else 'CPU peak RSS'})")
    return result
