"""Training loop: exact resume, loss decreases, logs/checkpoints, schedules, config overrides."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from tiny_model import TinyClip, make_pairs

from mammoclip_kit.data.datasets import ImageTextDataset
from mammoclip_kit.train.config import PretrainConfig, apply_overrides, load_config
from mammoclip_kit.train.loop import train
from mammoclip_kit.train.schedule import create_scheduler, warmup_cos2, warmup_cosine


def _data(root: Path, rows) -> tuple[ImageTextDataset, dict]:
    train_rows, val_rows = rows[rows.fold != 0], rows[rows.fold == 0]
    return (ImageTextDataset(train_rows, root, (24, 16), train=True, seed=0),
            {"reports": ImageTextDataset(val_rows, root, (24, 16), train=False, seed=0)})


def _cfg(**kw) -> PretrainConfig:
    base = dict(loss="mvs", epochs=3, batch_size=4, lr=3e-3, warmup_epochs=0.5, tensorboard=False, seed=0)
    base.update(kw)
    return PretrainConfig(**base)


def _losses(out: Path) -> list[str]:
    with open(out / "train" / "log.csv", newline="") as handle:
        return [r["loss"] for r in csv.DictReader(handle)]


def test_interrupted_and_resumed_run_reproduces_loss_curve(tmp_path: Path) -> None:
    rows = make_pairs(tmp_path)
    cfg = _cfg(save_every_steps=1)
    torch.manual_seed(0)
    full = train(cfg, TinyClip(), *_data(tmp_path, rows), tmp_path / "full", progress=False)
    assert full.steps == 6 and not full.interrupted   # 8 training breasts / batch 4 = 2 steps × 3 epochs
    torch.manual_seed(0)
    part = train(cfg, TinyClip(), *_data(tmp_path, rows), tmp_path / "resumed", stop_at_step=3, progress=False)
    assert part.interrupted and part.steps == 3
    torch.manual_seed(123)   # a fresh process: different RNG and weights, all restored from the checkpoint
    rest = train(cfg, TinyClip(), *_data(tmp_path, rows), tmp_path / "resumed", progress=False)
    assert rest.steps == 6 and len(rest.train_losses) == 3
    assert _losses(tmp_path / "resumed") == _losses(tmp_path / "full")   # exact, step by step
    assert part.train_losses + rest.train_losses == full.train_losses
    a = json.loads((tmp_path / "full" / "metrics.json").read_text())
    b = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert a["final_val_loss"] == b["final_val_loss"]


def test_clip_variant_trains_and_saves_best(tmp_path: Path) -> None:
    rows = make_pairs(tmp_path, n=20)
    torch.manual_seed(0)
    calls = []

    def monitor(model, device, channels_last):
        calls.append(model.training)
        return {"zs_mass_auc": 0.5}

    result = train(_cfg(loss="clip", epochs=8, lr=5e-3, schedule="cosine", clip_grad_norm=1.0,
                        no_decay_norm_bias=True, max_logit_scale=20.0, monitor_every_epochs=0),
                   TinyClip(dropout=0.0), *_data(tmp_path, rows), tmp_path / "clip", monitor=monitor, progress=False)
    first, last = sum(result.train_losses[:4]) / 4, sum(result.train_losses[-4:]) / 4
    assert last < first - 0.1
    assert (tmp_path / "clip" / "model.safetensors").exists()
    metrics = json.loads((tmp_path / "clip" / "metrics.json").read_text())
    assert metrics["final"]["zs_mass_auc"] == 0.5 and metrics["steps"] == 32
    assert calls and not any(calls)   # the monitor sees the model in eval mode
    with open(tmp_path / "clip" / "train" / "val.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 8


def test_accumulation_and_max_steps(tmp_path: Path) -> None:
    rows = make_pairs(tmp_path, n=20)
    torch.manual_seed(0)
    result = train(_cfg(batch_size=2, accum_steps=2, max_steps=5, epochs=10), TinyClip(),
                   *_data(tmp_path, rows), tmp_path / "acc", progress=False)
    assert result.steps == 5 and len(_losses(tmp_path / "acc")) == 5
    with pytest.raises(ValueError, match="no full step of batch_size=32"):
        train(_cfg(batch_size=32), TinyClip(), *_data(tmp_path, rows), tmp_path / "big", progress=False)


def test_schedules_hand_computed() -> None:
    assert warmup_cos2(0, 4, 12) == 0 and warmup_cos2(2, 4, 12) == 0.5
    assert warmup_cos2(4, 4, 12) == 1.0
    assert warmup_cos2(8, 4, 12) == pytest.approx(math.cos(math.pi / 4) ** 2)   # = 0.5
    assert warmup_cos2(12, 4, 12) == pytest.approx(0.0, abs=1e-12)
    assert warmup_cosine(8, 4, 12) == pytest.approx(0.5)
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = create_scheduler(opt, "warmup_cos2", 2, 6)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.0, 0.5, 1.0, math.cos(math.pi / 8) ** 2, 0.5, math.cos(3 * math.pi / 8) ** 2])
    with pytest.raises(ValueError, match="unknown schedule"):
        create_scheduler(opt, "step", 0, 3)


def test_config_presets_variants_and_overrides(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2] / "configs" / "pretrain"
    for name in ("smoke", "classroom", "paper-b2", "paper-b5"):
        cfg = load_config(root / f"{name}.yaml", variant="mammoclip_vindr")
        assert cfg.loss == "mvs" and cfg.sources == ["reports", "vindr"]
    paper = load_config(root / "paper-b5.yaml", overrides=["batch_size=12", "loss=clip"])
    assert (paper.lr, paper.weight_decay, paper.image_size, paper.batch_size) == (5e-5, 1e-4, [1520, 912], 12)
    assert paper.schedule == "warmup_cos2" and paper.loss == "clip"
    assert apply_overrides({"a": {"b": 1}}, {"a.c": 2}) == {"a": {"b": 1, "c": 2}}
    # "5e-4" is a string to YAML 1.1; on the command line it means a number, and words stay words
    assert load_config(overrides=["lr=5e-4", "text_lr=1e-5", "loss=clip"]).lr == 5e-4
    assert load_config(overrides=["text_lr=1e-5", "loss=clip"]).loss == "clip"
    with pytest.raises(ValueError, match="unknown pretrain field"):
        load_config(overrides={"learning_rate": 1})
    with pytest.raises(ValueError, match="unknown pretraining variant"):
        load_config(variant="siglip")


def test_text_lr_gives_the_text_tower_its_own_rate_and_zero_freezes_it(tmp_path: Path) -> None:
    from mammoclip_kit.train.loop import build_optimizer

    model = TinyClip()
    groups = build_optimizer(model, _cfg(lr=1e-3, text_lr=1e-5)).param_groups
    by_lr = {g["lr"]: sum(p.numel() for p in g["params"]) for g in groups}
    text_count = sum(p.numel() for p in model.text_encoder.parameters())
    assert by_lr == {1e-5: text_count, 1e-3: sum(p.numel() for p in model.parameters()) - text_count}
    with pytest.raises(ValueError, match="text_lr"):
        PretrainConfig.from_dict({"text_lr": -1.0})
    # text_lr 0: the text tower does not move, the image tower and both projections do
    rows = make_pairs(tmp_path)
    torch.manual_seed(0)
    frozen = TinyClip()
    before = {k: v.clone() for k, v in frozen.state_dict().items()}
    train(_cfg(text_lr=0.0, epochs=1), frozen, *_data(tmp_path, rows), tmp_path / "lit", progress=False)
    after = frozen.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and not any(k.startswith("text_encoder.") for k in moved)
    assert {"text_projection.weight", "image_projection.weight"} <= moved
    assert any(k.startswith("image_encoder.") for k in moved)


def test_channels_last_is_the_default_for_model_and_batches(tmp_path: Path) -> None:
    """Measured faster on CPU (docs/DESIGN.md, 'Pretraining at scale'); the paper presets also ask for it."""
    from mammoclip_kit.inference import embed_images, image_features

    assert PretrainConfig().channels_last is True
    seen = []

    class Spy(TinyClip):
        def encode_image(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x.is_contiguous(memory_format=torch.channels_last))
            return super().encode_image(x)

    rows = make_pairs(tmp_path)
    model = Spy()
    train(_cfg(epochs=1, max_steps=1, monitor_every_epochs=0), model, *_data(tmp_path, rows), tmp_path / "cl",
          progress=False)
    assert seen and all(seen)
    assert model.image_encoder[0].weight.is_contiguous(memory_format=torch.channels_last)
    import inspect

    for fn in (image_features, embed_images):
        assert inspect.signature(fn).parameters["channels_last"].default is True
