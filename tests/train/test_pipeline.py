"""The smoke model preset trains end to end from tables; ensure_pretrained loads, resumes or retrains."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from tiny_model import make_pairs

from mammoclip_kit.context import RunContext
from mammoclip_kit.data.records import write_table
from mammoclip_kit.models.clip import from_pretrained
from mammoclip_kit.train import ensure_pretrained, pretrain_config
from mammoclip_kit.train.config import PretrainConfig
from mammoclip_kit.train.monitor import similarity_matrix
from mammoclip_kit.train.pipeline import heldout_pairs, read_log, run_pretraining

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "pretrain" / "smoke.yaml"


def _tables(root: Path, n: int = 16) -> Path:
    rows = make_pairs(root, n=n)
    tables = root / "tables"
    write_table(rows.drop(columns=["mass"]), tables / "reports_pretrain.csv")
    vindr = rows[["patient_id", "laterality", "views", "CC", "MLO"]].assign(
        split=["test" if i < 4 else "training" for i in range(n)],
        CC_findings=[["Mass"] if m else ["No Finding"] for m in rows["mass"]],
        MLO_findings=[["Mass"] if m else ["No Finding"] for m in rows["mass"]])
    write_table(vindr, tables / "vindr_pretrain.csv")
    images = pd.DataFrame({"image_id": [f"i{i}" for i in range(n)], "split": vindr["split"],
                           "png_path": [c[0] for c in rows["CC"]], "Mass": rows["mass"]})
    write_table(images, tables / "vindr_images.csv")
    return tables


def test_smoke_preset_trains_end_to_end_and_loss_decreases(tmp_path: Path) -> None:
    tables = _tables(tmp_path)
    cfg = PretrainConfig(model="smoke", image_size=[48, 32], sources=["reports", "vindr"], epochs=5, batch_size=4,
                         lr=2e-3, warmup_epochs=0.5, augment=False, tensorboard=False, seed=0)
    result = run_pretraining(cfg, tables, tmp_path, tmp_path / "ckpt", progress=False)
    losses = result.train_losses
    assert result.steps == 30 and not result.interrupted   # (12 reports + 12 vindr training rows) / 4 × 5 epochs
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.3
    metrics = json.loads((tmp_path / "ckpt" / "metrics.json").read_text())
    assert metrics["best"]["zs_n_images"] == 4 and 0.0 <= metrics["best"]["zs_mass_auc"] <= 1.0
    log, val = read_log(tmp_path / "ckpt")
    assert len(log) == 30 and set(val["epoch"]) == set(range(1, 6))
    model = from_pretrained(tmp_path / "ckpt")   # the best-by-validation-loss model in the kit format
    images, texts = heldout_pairs(tables, tmp_path, n=2)
    assert len(set(texts)) == 2
    sim = similarity_matrix(model, images, texts, torch.device("cpu"))
    assert sim.shape == (2, 2) and abs(sim).max() <= 1.0 + 1e-5


def test_ensure_pretrained_loads_resumes_and_retrains(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _tables(tmp_path / "out", n=12)
    settings = {"pretrain": {"config": str(SMOKE), "overrides": {"image_size": [48, 32], "epochs": 1,
                                                                  "max_steps": None, "tensorboard": False}}}
    params = {"max_steps": None, "batch_size": None, "num_workers": None, "text_encoder": None, "retrain": False}
    (tmp_path / "user_data").mkdir()  # a user data root without datasets: the tables already built are used
    ctx = RunContext(profile="smoke", data_root=tmp_path / "user_data", output_dir=tmp_path / "out",
                     device=torch.device("cpu"), seed=0, settings=settings, params=params, is_cohort=False)
    assert pretrain_config(ctx, "clip").loss == "clip"
    folder = ensure_pretrained(ctx, "clip", progress=False)
    assert folder == ctx.checkpoint_dir("clip") and (folder / "model.safetensors").is_file()
    from mammoclip_kit.data.preprocess import read_preprocessing_record

    # the PNG preprocessing the model was trained on is recorded, so predict converts DICOMs the same way
    assert read_preprocessing_record(folder)["mode"] == "voi"
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    ensure_pretrained(ctx, "clip", progress=False)
    assert "loading" in capsys.readouterr().out
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    ctx.params["batch_size"] = 2   # another parameter: retrained
    ensure_pretrained(ctx, "clip", progress=False)
    assert json.loads((folder / "pretrain_params.json").read_text())["params"]["config"]["batch_size"] == 2
    assert (folder / "model.safetensors").stat().st_mtime_ns != stamp
    record = json.loads((folder / "pretrain_params.json").read_text())
    (folder / "pretrain_params.json").write_text(json.dumps({**record, "complete": False}))  # as if interrupted
    assert (folder / "train" / "last.pt").is_file()
    capsys.readouterr()
    ensure_pretrained(ctx, "clip", progress=False)   # same parameters, unfinished: resumed from train/last.pt
    assert "resuming" in capsys.readouterr().out
    assert json.loads((folder / "pretrain_params.json").read_text())["complete"] is True
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    ctx.params["retrain"] = True   # same parameters, retrain: trained again from scratch
    ensure_pretrained(ctx, "clip", progress=False)
    assert "training" in capsys.readouterr().out and (folder / "model.safetensors").stat().st_mtime_ns != stamp


def test_pretrain_config_order_profile_parameters_keywords(tmp_path: Path) -> None:
    settings = {"pretrain": {"config": str(SMOKE), "overrides": {"epochs": 3, "batch_size": 6},
                             "variant_overrides": {"clip": {"epochs": 5}}}}
    params = {"max_steps": None, "batch_size": None, "num_workers": None, "text_encoder": None}
    ctx = RunContext(profile="smoke", data_root=tmp_path, output_dir=tmp_path, device=torch.device("cpu"), seed=3,
                     settings=settings, params=params, is_cohort=False)
    cfg = pretrain_config(ctx, "mammoclip")
    assert (cfg.epochs, cfg.batch_size, cfg.max_steps, cfg.seed, cfg.loss) == (3, 6, 4, 3, "mvs")  # max_steps: YAML
    assert pretrain_config(ctx, "clip").epochs == 5
    params.update(batch_size=2, max_steps=7)
    cfg = pretrain_config(ctx, "clip")
    assert (cfg.batch_size, cfg.max_steps, cfg.loss) == (2, 7, "clip")
    assert pretrain_config(ctx, "clip", batch_size=3).batch_size == 3
    settings["pretrain"]["varaints"] = ["clip"]
    with pytest.raises(ValueError, match=r"pretrain section: unknown setting\(s\) \['varaints'\]"):
        pretrain_config(ctx)
    settings["pretrain"] = {"variants": ["clip", "siglip"]}
    with pytest.raises(ValueError, match="unknown variant"):
        pretrain_config(ctx)


def test_imagenet_start_with_a_frozen_cached_trunk(tmp_path: Path) -> None:
    """image_init: imagenet + freeze_blocks + cache_trunk: the trunk keeps its ImageNet weights, is run once per image
    (its maps shared between training and validation sets and reused by a second run), and the rest trains."""
    from mammoclip_kit.models.imagenet import load_imagenet_tower
    from mammoclip_kit.models.towers import TimmImageTower
    from mammoclip_kit.train import trunk_cache

    tables = _tables(tmp_path)
    cfg = PretrainConfig(model="smoke", image_size=[64, 32], sources=["reports"], epochs=2, batch_size=4, lr=1e-3,
                         image_init="imagenet", freeze_blocks=2, cache_trunk=True, tensorboard=False, seed=0,
                         monitor_every_epochs=0)
    trunk_cache._MEMO.clear()
    result = run_pretraining(cfg, tables, tmp_path, tmp_path / "ckpt", progress=False)
    assert result.steps == 6 and not result.interrupted   # 12 training breasts / 4 × 2 epochs
    assert len(trunk_cache._MEMO) == 32                     # 16 breasts × 2 views, each computed once
    model = from_pretrained(tmp_path / "ckpt")
    imagenet = load_imagenet_tower(TimmImageTower("tf_efficientnet_lite0"))
    trained, start = model.image_encoder.model, imagenet.model
    torch.testing.assert_close(trained.conv_stem.weight, start.conv_stem.weight)      # frozen: still ImageNet
    torch.testing.assert_close(trained.blocks[1][0].conv_pw.weight, start.blocks[1][0].conv_pw.weight)
    assert not torch.allclose(trained.blocks[4][0].conv_pw.weight, start.blocks[4][0].conv_pw.weight)  # trained
    memo = dict(trunk_cache._MEMO)
    run_pretraining(cfg, tables, tmp_path, tmp_path / "ckpt2", progress=False)
    assert trunk_cache._MEMO.keys() == memo.keys()          # the second run reused every map


def test_cache_trunk_needs_frozen_stages() -> None:
    with pytest.raises(ValueError, match="cache_trunk needs freeze_blocks"):
        PretrainConfig.from_dict({"cache_trunk": True})
