"""The pretraining loop: AdamW, per-iteration schedule, AMP, accumulation, clipping, DDP, exact resume, logs.

:func:`train` runs one pretraining job into ``out_dir``:

* ``out_dir/model.safetensors`` + ``config.json`` — the best-by-validation-loss model (kit format, what
  :func:`mammoclip_kit.train.ensure_pretrained` returns and later notebooks load);
* ``out_dir/train/last.pt`` — the full training state (periodic and at each epoch end, written atomically);
* ``out_dir/train/log.csv`` (per optimizer step, with img/s and ETA), ``val.csv`` (per epoch), ``tb/`` (TensorBoard),
  ``progress.log`` (a line every ``progress_every_steps`` steps: loss, img/s, elapsed, ETA);
* ``out_dir/metrics.json`` — wall time, final train / validation loss, held-out zero-shot AUC and retrieval.

Resume is exact on CPU: the data order comes from ``DistributedSampler`` (seed, epoch), each sample's random choices
from its own seeded generator (see :mod:`mammoclip_kit.data.datasets`), and the checkpoint restores the model,
optimizer, scheduler, grad scaler, every RNG state and the position inside the epoch, so the resumed loss curve equals
the uninterrupted one.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from mammoclip_kit.data.datasets import PairCollate
from mammoclip_kit.inference import eval_mode
from mammoclip_kit.losses import LossConfig, create_loss
from mammoclip_kit.train.checkpoint import load_state, save_state
from mammoclip_kit.train.config import PretrainConfig
from mammoclip_kit.train.distributed import DistInfo, all_reduce_mean, barrier
from mammoclip_kit.train.schedule import create_scheduler

__all__ = ["ContrastiveModule", "TrainResult", "train", "build_optimizer", "autocast_context", "SkipSampler",
           "ProgressMeter", "check_contrastive_batch"]

LOSS_TERMS = ("loss", "i2t", "t2i", "i2i", "t2t")


class ContrastiveModule(nn.Module):
    """Wraps a MammoClip-like model so that DDP sees one ``forward``: images and tokens → normalised embeddings.

    The wrapped model needs ``encode_image(x)``, ``encode_text(tokens)`` and a ``logit_scale`` parameter holding the
    log of the scale. With ``two_views`` the second image batch and the second texts are encoded too (separately, as
    the reference does, so that batch-norm statistics are per view batch).
    """

    def __init__(self, model: nn.Module, two_views: bool = True) -> None:
        super().__init__()
        self.model = model
        self.two_views = two_views

    def forward(self, image: torch.Tensor, tokens: dict[str, torch.Tensor], image2: torch.Tensor | None = None,
                tokens2: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        out = {"image": F.normalize(self.model.encode_image(image), dim=-1),
               "text": F.normalize(self.model.encode_text(tokens), dim=-1),
               "logit_scale": self.model.logit_scale.exp()}
        if self.two_views:
            out["image2"] = F.normalize(self.model.encode_image(image2), dim=-1)
            out["text2"] = F.normalize(self.model.encode_text(tokens2), dim=-1)
        return out


def compute_loss(loss_fn: nn.Module, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Apply a :class:`ClipLoss` (image, text) or :class:`MultiViewClipLoss` (two of each) to the module output."""
    if "image2" in feats:
        return loss_fn(feats["image"], feats["image2"], feats["text"], feats["text2"], feats["logit_scale"])
    return loss_fn(feats["image"], feats["text"], feats["logit_scale"])


class SkipSampler(Sampler[int]):
    """Yield the indices of ``base`` after dropping the first ``skip`` (resume inside an epoch)."""

    def __init__(self, base: Sampler[int], skip: int = 0) -> None:
        self.base, self.skip = base, int(skip)

    def __iter__(self) -> Iterator[int]:
        for i, index in enumerate(self.base):
            if i >= self.skip:
                yield index

    def __len__(self) -> int:
        return max(0, len(self.base) - self.skip)  # type: ignore[arg-type]


def build_optimizer(model: nn.Module, cfg: PretrainConfig) -> torch.optim.AdamW:
    """AdamW (lr, weight decay, betas of ``cfg``); with ``no_decay_norm_bias`` 1-D parameters get no decay.

    ``cfg.text_lr`` gives the text tower (``text_encoder.*``) its own learning rate — a pretrained language model next to
    an image tower trained from scratch wants a far smaller one — and ``text_lr: 0`` freezes it (its parameters stop
    requiring gradients, so no backward pass runs through it; the text projection still trains).
    """
    text_lr = cfg.text_lr
    if text_lr == 0:
        for name, param in model.named_parameters():
            if name.startswith("text_encoder."):
                param.requires_grad_(False)
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lr = text_lr if text_lr is not None and name.startswith("text_encoder.") else cfg.lr
        no_decay = cfg.no_decay_norm_bias and (param.ndim <= 1 or name.endswith("logit_scale"))
        groups.setdefault((lr, 0.0 if no_decay else cfg.weight_decay), []).append(param)
    param_groups = [{"params": params, "lr": lr, "weight_decay": decay} for (lr, decay), params in groups.items()]
    return torch.optim.AdamW(param_groups, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def amp_dtype(cfg_amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: None (fp32) on CPU/MPS or with ``amp: none``; ``auto`` = bf16 if the GPU supports it."""
    if device.type != "cuda" or cfg_amp == "none":
        return None
    if cfg_amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[cfg_amp]


def autocast_context(dtype: torch.dtype | None, device: torch.device) -> contextlib.AbstractContextManager:
    return torch.autocast(device_type=device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def check_contrastive_batch(cfg: PretrainConfig, world_size: int) -> None:
    """Refuse a contrastive batch of one breast: with a single row every term of the CLIP and MVS losses is a 1 × 1
    softmax (the two views and two texts of the breast are each other's positives, never negatives), so the loss is
    exactly 0 and no gradient flows. ``batch_size: 1`` is fine with 2+ ranks: each rank's row is contrasted with the
    rows gathered from all ranks (``batch_size × world size`` columns)."""
    if cfg.batch_size * world_size < 2:
        raise ValueError(
            f"batch_size={cfg.batch_size} on {world_size} process: a contrastive batch of one breast has no negative "
            "(every CLIP / MVS term is a 1 × 1 softmax: loss 0, no gradient; gradient accumulation does not add "
            "negatives). Use batch_size >= 2 (grad_checkpointing: true and amp: bf16 make room on one GPU), or keep "
            "batch_size=1 and run 2+ processes with torchrun (the rows of all ranks are gathered as negatives)")


class ProgressMeter:
    """Every ``every`` optimizer steps one line ``step s/N (epoch e) loss … | img/s | elapsed | ETA``, appended to
    ``path`` (``train/progress.log``) and, with ``console``, printed. img/s and ETA are measured over the steps since
    the previous line (since the start before the first). :meth:`update` returns ``{"img_per_s", "elapsed_s",
    "eta_s"}`` for the step log."""

    def __init__(self, path: Path, total_steps: int, images_per_step: int, start_step: int, every: int = 10,
                 enabled: bool = True, console: bool = True) -> None:
        self.path, self.total, self.images_per_step = path, total_steps, images_per_step
        self.every, self.enabled, self.console = every, enabled, console
        self.started = self.last_time = time.perf_counter()
        self.start_step = self.last_step = start_step
        self.rate, self.windowed = float("nan"), False  # steps per second
        if enabled and every > 0:
            path.parent.mkdir(parents=True, exist_ok=True)

    def update(self, step: int, epoch: float, n_epochs: int, loss: float, lr: float,
               write: Any = print) -> dict[str, float]:
        """Record that optimizer step ``step`` finished; write the line when it is due."""
        now = time.perf_counter()
        if not self.windowed and step > self.start_step:
            self.rate = (step - self.start_step) / max(now - self.started, 1e-9)
        due = self.every > 0 and (step % self.every == 0 or step == self.total)
        if due and step > self.last_step:
            self.rate = (step - self.last_step) / max(now - self.last_time, 1e-9)
            self.last_step, self.last_time, self.windowed = step, now, True
        eta = (self.total - step) / self.rate if self.rate > 0 else float("nan")
        out = {"img_per_s": self.rate * self.images_per_step, "elapsed_s": now - self.started, "eta_s": eta}
        if self.enabled and due:
            line = (f"step {step}/{self.total} (epoch {epoch:.2f}/{n_epochs}) loss {loss:.4f} lr {lr:.3g} | "
                    f"{out['img_per_s']:.2f} img/s | elapsed {_hms(out['elapsed_s'])} | ETA {_hms(eta)}")
            if self.console:
                write(line)
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
        return out


def _hms(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _to_device(batch: dict[str, Any], device: torch.device, channels_last: bool) -> dict[str, Any]:
    out = {}
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for key in ("image", "image2"):
        out[key] = batch[key].to(device, non_blocking=True).contiguous(memory_format=fmt)
    for key in ("tokens", "tokens2"):
        if key in batch:
            out[key] = {k: v.to(device, non_blocking=True) for k, v in batch[key].items()}
    return out


class _Logs:
    """CSV (+ optional TensorBoard) logs that survive a resume: rows past the resumed step are dropped."""

    def __init__(self, folder: Path, resume_step: int, enabled: bool, tensorboard: bool) -> None:
        self.enabled = enabled
        self.paths = {"train": folder / "log.csv", "val": folder / "val.csv"}
        self.writer = None
        if not enabled:
            return
        folder.mkdir(parents=True, exist_ok=True)
        for path in self.paths.values():
            if path.exists():
                with open(path, newline="") as handle:
                    rows = [r for r in csv.DictReader(handle) if int(float(r["step"])) <= resume_step]
                self._rewrite(path, rows)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(str(folder / "tb"), purge_step=resume_step + 1)
            except ImportError:  # pragma: no cover - tensorboard is a declared dependency
                self.writer = None

    @staticmethod
    def _rewrite(path: Path, rows: list[dict[str, Any]]) -> None:
        keys = list(dict.fromkeys(k for r in rows for k in r))
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=keys)
            if keys:
                writer.writeheader()
                writer.writerows(rows)

    def write(self, kind: str, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        path = self.paths[kind]
        rows = []
        if path.exists() and path.stat().st_size:
            with open(path, newline="") as handle:
                reader = csv.DictReader(handle)
                header = list(reader.fieldnames or [])
            if set(row) <= set(header):
                with open(path, "a", newline="") as handle:
                    csv.DictWriter(handle, fieldnames=header).writerow(row)
                self._tb(kind, row)
                return
            with open(path, newline="") as handle:
                rows = list(csv.DictReader(handle))
        self._rewrite(path, rows + [row])
        self._tb(kind, row)

    def _tb(self, kind: str, row: dict[str, Any]) -> None:
        if self.writer is None:
            return
        for key, value in row.items():
            if key not in {"step", "epoch"} and isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(f"{kind}/{key}", value, int(row["step"]))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


@dataclass
class TrainResult:
    """What a finished (or deliberately interrupted) run reports."""

    out_dir: Path
    steps: int
    epochs: int
    interrupted: bool
    wall_time_s: float
    train_losses: list[float] = field(default_factory=list)  # per optimizer step, this session only
    metrics: dict[str, Any] = field(default_factory=dict)


@torch.no_grad()
def validate(module: nn.Module, loss_fn: nn.Module, loaders: dict[str, DataLoader], tokenize: Any,
             device: torch.device, dtype: torch.dtype | None, channels_last: bool) -> dict[str, float]:
    """Mean validation loss per source and their average ``val_loss``. A batch needs 2+ rows over all ranks (one
    row has no negative; the same batch size on every rank, as ``DistributedSampler`` pads, so all ranks agree)."""
    from mammoclip_kit.losses import distributed_info

    world = distributed_info()[1]
    out: dict[str, float] = {}
    with eval_mode(module):
        for name, loader in loaders.items():
            total, count = 0.0, 0
            for batch in loader:
                n = batch["image"].shape[0]
                if n * world < 2:
                    continue
                batch.update(_tokens(batch, tokenize, module))
                inputs = _to_device(batch, device, channels_last)
                with autocast_context(dtype, device):
                    feats = module(inputs["image"], inputs["tokens"], inputs.get("image2"), inputs.get("tokens2"))
                total += float(compute_loss(loss_fn, feats)["loss"]) * n
                count += n
            value = total / max(count, 1) if count else float("nan")
            out[f"val_loss_{name}"] = all_reduce_mean(value, device if device.type == "cuda" else None)
        losses = [v for v in out.values() if math.isfinite(v)]
        out["val_loss"] = sum(losses) / len(losses) if losses else float("nan")
        return out


def _tokens(batch: dict[str, Any], tokenize: Any, module: nn.Module) -> dict[str, Any]:
    out = {}
    if "tokens" not in batch:
        out["tokens"] = dict(tokenize(batch["text"]))
    if "tokens2" not in batch and getattr(module, "two_views", True):
        out["tokens2"] = dict(tokenize(batch["text2"]))
    return out


def _loader(dataset: Dataset, sampler: Sampler | None, cfg: PretrainConfig, drop_last: bool,
            device: torch.device, epoch: int = 0) -> DataLoader:
    # The loader's own generator: creating an iterator must not consume the global torch RNG (exact resume).
    generator = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    return DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, shuffle=False, drop_last=drop_last,
                      num_workers=cfg.num_workers, collate_fn=PairCollate(), pin_memory=device.type == "cuda",
                      persistent_workers=False, generator=generator)


def train(cfg: PretrainConfig, model: nn.Module, train_data: Dataset, val_data: dict[str, Dataset], out_dir: Path,
          *, device: torch.device | None = None, dist_info: DistInfo | None = None, monitor: Any = None,
          resume: bool = True, stop_at_step: int | None = None, progress: bool = True,
          extra_metrics: dict[str, Any] | None = None, allow_config_change: bool = False) -> TrainResult:
    """Pretrain ``model`` on ``train_data`` (see the module docstring for what lands in ``out_dir``).

    Args:
        cfg: the run's :class:`PretrainConfig` (loss, optimisation, speed and logging options).
        model: a MammoClip-like model (``encode_image``, ``encode_text``, ``tokenize``, ``logit_scale``,
            ``save_pretrained``); moved to ``device``.
        train_data / val_data: datasets yielding the samples of :mod:`mammoclip_kit.data.datasets`.
        monitor: optional callable ``monitor(model, device, channels_last) -> dict`` of held-out metrics.
        resume: continue from ``out_dir/train/last.pt`` when it exists.
        stop_at_step: save the training state after this optimizer step and return (simulates an interruption).
        extra_metrics: merged into ``metrics.json`` (e.g. the time spent building the datasets).
        allow_config_change: resume even when ``cfg`` differs from the config the saved state was trained with
            (refused by default, naming the fields; see :func:`~mammoclip_kit.train.checkpoint.check_resume_config`).
    """
    dist_info = dist_info or DistInfo(device=device or torch.device("cpu"))
    device = device or dist_info.device or torch.device("cpu")
    out_dir = Path(out_dir)
    state_path = out_dir / "train" / "last.pt"
    main = dist_info.is_main
    dtype = amp_dtype(cfg.amp, device)

    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    if cfg.grad_checkpointing:
        encoder = getattr(model, "image_encoder", None)
        if encoder is None or not hasattr(encoder, "set_grad_checkpointing"):
            raise ValueError("grad_checkpointing: the model's image_encoder has no set_grad_checkpointing()")
        encoder.set_grad_checkpointing(True)
    module = ContrastiveModule(model, two_views=cfg.loss == "mvs")
    loss_fn = create_loss(LossConfig(name=cfg.loss, local_loss=cfg.local_loss, label_smoothing=cfg.label_smoothing))
    optimizer = build_optimizer(model, cfg)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    check_contrastive_batch(cfg, dist_info.world_size)
    sampler = DistributedSampler(train_data, num_replicas=dist_info.world_size, rank=dist_info.rank, shuffle=True,
                                 seed=cfg.seed, drop_last=True)
    batches_per_epoch = len(sampler) // cfg.batch_size
    steps_per_epoch = batches_per_epoch // cfg.accum_steps
    if steps_per_epoch < 1:
        raise ValueError(f"{len(train_data)} training samples give no full step of batch_size={cfg.batch_size} × "
                         f"accum_steps={cfg.accum_steps} × {dist_info.world_size} rank(s); lower the batch size")
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total_steps = min(total_steps, int(cfg.max_steps))
    n_epochs = math.ceil(total_steps / steps_per_epoch)
    warmup = min(total_steps, round(cfg.warmup_epochs * steps_per_epoch))
    scheduler = create_scheduler(optimizer, cfg.schedule, warmup, total_steps)

    start_epoch, step, skip_batches = 0, 0, 0
    best = {"val_loss": float("inf")}
    history: dict[str, Any] = {}
    if resume and state_path.exists():
        from mammoclip_kit.train.checkpoint import check_resume_config

        counters = load_state(state_path, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                              map_location=device)
        changes = check_resume_config(counters["extra"].get("config"), _config_record(cfg), state_path,
                                      allow_config_change)
        if changes and main:
            print(f"resuming {state_path} with a changed config (--allow-config-change): {'; '.join(changes)}")
        start_epoch, step, skip_batches = counters["epoch"], counters["step"], counters["batch_in_epoch"]
        best = counters["extra"].get("best", best)
        history = counters["extra"].get("history", {})
    elif main:
        state_path.parent.mkdir(parents=True, exist_ok=True)

    run_module: nn.Module = module
    if dist_info.distributed:
        from torch.nn.parallel import DistributedDataParallel
        run_module = DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        run_module = torch.compile(run_module)

    tokenize = model.tokenize
    logs = _Logs(out_dir / "train", step, enabled=main, tensorboard=cfg.tensorboard)
    val_loaders = {name: _loader(ds, DistributedSampler(ds, dist_info.world_size, dist_info.rank, shuffle=False)
                                 if dist_info.distributed else None, cfg, False, device)
                   for name, ds in val_data.items()}
    elapsed_before = float(history.get("wall_time_s", 0.0))
    started = time.perf_counter()
    images_per_step = cfg.batch_size * cfg.accum_steps * dist_info.world_size * (2 if cfg.loss == "mvs" else 1)
    meter = ProgressMeter(out_dir / "train" / "progress.log", total_steps, images_per_step, step,
                          every=cfg.progress_every_steps, enabled=main, console=progress)
    losses: list[float] = []
    interrupted = False
    max_scale = math.log(cfg.max_logit_scale) if cfg.max_logit_scale else None

    def save(epoch: int, batch_in_epoch: int) -> None:
        if main:
            history["wall_time_s"] = elapsed_before + time.perf_counter() - started
            save_state(state_path, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler, epoch=epoch,
                       step=step, batch_in_epoch=batch_in_epoch,
                       extra={"best": best, "history": history, "config": _config_record(cfg)})
        barrier()

    module.train()
    epoch = start_epoch
    for epoch in range(start_epoch, n_epochs):
        if step >= total_steps:
            break
        sampler.set_epoch(epoch)
        if hasattr(train_data, "set_epoch"):
            train_data.set_epoch(epoch)
        skip = skip_batches if epoch == start_epoch else 0
        loader = _loader(train_data, SkipSampler(sampler, skip * cfg.batch_size), cfg, True, device, epoch)
        last_batch = steps_per_epoch * cfg.accum_steps
        bar = None
        if progress and main:
            from mammoclip_kit.env import progress_bar as tqdm
            bar = tqdm(total=last_batch, initial=skip, desc=f"epoch {epoch + 1}/{n_epochs}", leave=False)
        optimizer.zero_grad(set_to_none=True)
        running: dict[str, float] = {}
        batch_index = skip
        for batch in loader:
            if batch_index >= last_batch or step >= total_steps:
                break
            micro = batch_index % cfg.accum_steps
            final_micro = micro == cfg.accum_steps - 1
            batch.update(_tokens(batch, tokenize, module))
            inputs = _to_device(batch, device, cfg.channels_last)
            sync = contextlib.nullcontext() if final_micro or not dist_info.distributed else run_module.no_sync()
            with sync:
                with autocast_context(dtype, device):
                    feats = run_module(inputs["image"], inputs["tokens"], inputs.get("image2"), inputs.get("tokens2"))
                    terms = compute_loss(loss_fn, feats)
                scaler.scale(terms["loss"] / cfg.accum_steps).backward()
            for key, value in terms.items():
                running[key] = running.get(key, 0.0) + float(value.detach()) / cfg.accum_steps
            batch_index += 1
            if bar is not None:
                bar.update(1)
            if not final_micro:
                continue
            if cfg.clip_grad_norm:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            lr = max(group["lr"] for group in optimizer.param_groups)
            scheduler.step()
            if max_scale is not None:
                with torch.no_grad():
                    model.logit_scale.clamp_(max=max_scale)
            step += 1
            losses.append(running["loss"])
            speed = meter.update(step, epoch + batch_index / last_batch, n_epochs, running["loss"], lr,
                                 write=bar.write if bar is not None else print)
            if main and (step % max(1, cfg.log_every_steps) == 0 or step == total_steps):
                row = {"step": step, "epoch": epoch + batch_index / last_batch, "lr": lr,
                       "logit_scale": float(model.logit_scale.detach().exp())}
                row.update({k: running.get(k, float("nan")) for k in LOSS_TERMS if k in running})
                row.update(speed)
                logs.write("train", row)
            if bar is not None:
                bar.set_postfix(loss=f"{running['loss']:.3f}")
            running = {}
            if stop_at_step is not None and step >= stop_at_step:
                save(epoch, batch_index)
                interrupted = True
                break
            if cfg.save_every_steps and step % cfg.save_every_steps == 0 and batch_index < last_batch:
                save(epoch, batch_index)
        if bar is not None:
            bar.close()
        if interrupted:
            break
        _end_of_epoch(cfg, module, model, loss_fn, val_loaders, tokenize, device, dtype, monitor, logs, best,
                      history, epoch, step, n_epochs, total_steps, out_dir, main)
        save(epoch + 1, 0)
    logs.close()
    if not interrupted and main and monitor is not None and not any(k.startswith(("zs_", "retrieval_")) for k in best):
        best.update(_monitor_saved_model(model, out_dir, monitor, device, cfg.channels_last))
    wall = elapsed_before + time.perf_counter() - started
    metrics: dict[str, Any] = {}
    if not interrupted and main:
        metrics = {"wall_time_s": wall, "steps": step, "epochs": n_epochs, "steps_per_epoch": steps_per_epoch,
                   "train_samples": len(train_data), "batch_size": cfg.batch_size,
                   "world_size": dist_info.world_size, "final_train_loss": history.get("final_train_loss"),
                   "final_val_loss": history.get("final_val_loss"), "best": best, "final": history.get("final", {})}
        metrics.update(extra_metrics or {})
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True, default=_json_default))
    barrier()
    return TrainResult(out_dir=out_dir, steps=step, epochs=epoch + 1, interrupted=interrupted, wall_time_s=wall,
                       train_losses=losses, metrics=metrics)


def _monitor_saved_model(model: nn.Module, out_dir: Path, monitor: Any, device: torch.device,
                         channels_last: bool) -> dict[str, Any]:
    """Held-out metrics of the saved (best) weights, restoring the final weights afterwards."""
    from safetensors.torch import load_file

    final = {k: v.detach().clone() for k, v in model.state_dict().items()}
    saved = load_file(str(out_dir / "model.safetensors"), device=str(device))
    model.load_state_dict(saved, strict=False)
    model.eval()
    try:
        return dict(monitor(model, device, channels_last))
    finally:
        model.load_state_dict(final)
        model.train()


def _config_record(cfg: PretrainConfig) -> dict[str, Any]:
    """The config as plain JSON values (what a resume compares)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _end_of_epoch(cfg: PretrainConfig, module: ContrastiveModule, model: nn.Module, loss_fn: nn.Module,
                  val_loaders: dict[str, DataLoader], tokenize: Any, device: torch.device, dtype: torch.dtype | None,
                  monitor: Any, logs: _Logs, best: dict[str, Any], history: dict[str, Any], epoch: int, step: int,
                  n_epochs: int, total_steps: int, out_dir: Path, main: bool) -> None:
    """Validation loss, held-out metrics, best-model save and the per-epoch log row."""
    row: dict[str, Any] = {"step": step, "epoch": epoch + 1}
    row.update(validate(module, loss_fn, val_loaders, tokenize, device, dtype, cfg.channels_last))
    last = epoch + 1 == n_epochs or step >= total_steps
    improved = not math.isfinite(row["val_loss"]) or not row["val_loss"] >= best["val_loss"]
    every = cfg.monitor_every_epochs
    due = last or (improved and cfg.monitor_on_improve) or (every and (epoch + 1) % every == 0)
    if main and monitor is not None and due:
        with eval_mode(model):
            row.update(monitor(model, device, cfg.channels_last))
    train_rows = _read_rows(logs.paths["train"]) if main else []
    epoch_losses = [float(r["loss"]) for r in train_rows if epoch < float(r["epoch"]) <= epoch + 1]
    row["train_loss"] = sum(epoch_losses) / len(epoch_losses) if epoch_losses else float("nan")
    if main:
        logs.write("val", row)
        if improved:
            best.clear()
            best.update({k: v for k, v in row.items() if isinstance(v, (int, float))})
            model.save_pretrained(out_dir)
        history["final_train_loss"] = row["train_loss"]
        history["final_val_loss"] = row["val_loss"]
        history["final"] = {k: v for k, v in row.items() if isinstance(v, (int, float))}


def _read_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))
