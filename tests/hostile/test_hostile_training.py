"""Hostile inputs, pretraining: one run per output folder; a resume keeps its config unless asked;
a damaged training state is a one-line error and is left alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from hostile_helpers import (
    SMOKE_PRETRAIN,
    assert_clear_error,
    run_cli,
    sys_path_train,
    tree_digest,
)

# --------------------------------------------------------------------------------------------------------------------
# item 5: one pretraining run per output folder; a resume keeps its config unless asked


def test_second_pretraining_run_into_a_locked_folder_is_refused(tmp_path: Path, capsys):
    from mammoclip_kit.train.checkpoint import lock_output

    sys_path_train()
    from test_pipeline import _tables

    _tables(tmp_path, n=8)
    out = tmp_path / "checkpoints" / "clip"
    from mammoclip_kit import pretrain

    with lock_output(out):
        before = tree_digest(out)
        code, _, err = run_cli(pretrain.main, ["--config", str(SMOKE_PRETRAIN), "--variant", "clip", "--output-dir",
                                               str(tmp_path), "--out", str(out), "image_size=[48,32]", "max_steps=1",
                                               "epochs=1", "batch_size=2"], capsys)
        assert_clear_error(code, err, str(out), "another training run")
        assert tree_digest(out) == before



def test_resume_with_another_config_is_refused_unless_allowed(tmp_path: Path):
    sys_path_train()
    from tiny_model import TinyClip, make_pairs

    from mammoclip_kit.data.datasets import ImageTextDataset
    from mammoclip_kit.train.config import PretrainConfig
    from mammoclip_kit.train.loop import train

    rows = make_pairs(tmp_path, n=12)

    def data():
        return (ImageTextDataset(rows[rows.fold != 0], tmp_path, (24, 16), train=True, seed=0),
                {"reports": ImageTextDataset(rows[rows.fold == 0], tmp_path, (24, 16), train=False, seed=0)})

    base = dict(loss="mvs", epochs=2, batch_size=4, lr=3e-3, warmup_epochs=0.5, tensorboard=False, seed=0)
    out = tmp_path / "run"
    train(PretrainConfig(**base), TinyClip(), *data(), out, stop_at_step=1, progress=False)
    state = (out / "train" / "last.pt").read_bytes()
    with pytest.raises(ValueError, match=r"lr: 0\.003 → 0\.1.*--allow-config-change"):
        train(PretrainConfig(**{**base, "lr": 0.1}), TinyClip(), *data(), out, progress=False)
    assert (out / "train" / "last.pt").read_bytes() == state  # nothing was trained on top
    result = train(PretrainConfig(**{**base, "lr": 0.1}), TinyClip(), *data(), out, progress=False,
                   allow_config_change=True)
    assert result.steps > 1


def test_a_damaged_training_state_is_a_one_line_error_and_is_left_alone(tmp_path: Path):
    sys_path_train()
    from tiny_model import TinyClip, make_pairs

    from mammoclip_kit.data.datasets import ImageTextDataset
    from mammoclip_kit.errors import UserError, one_line
    from mammoclip_kit.train.config import PretrainConfig
    from mammoclip_kit.train.loop import train

    rows = make_pairs(tmp_path, n=12)
    data = (ImageTextDataset(rows[rows.fold != 0], tmp_path, (24, 16), train=True, seed=0),
            {"reports": ImageTextDataset(rows[rows.fold == 0], tmp_path, (24, 16), train=False, seed=0)})
    cfg = PretrainConfig(loss="mvs", epochs=2, batch_size=4, lr=3e-3, warmup_epochs=0.5, tensorboard=False, seed=0)
    out = tmp_path / "run"
    train(cfg, TinyClip(), *data, out, stop_at_step=1, progress=False)
    state = out / "train" / "last.pt"
    damaged = state.read_bytes()[: state.stat().st_size // 3]
    state.write_bytes(damaged)
    with pytest.raises(UserError) as caught:
        train(cfg, TinyClip(), *data, out, progress=False)
    message = one_line(caught.value)
    assert "last.pt: cannot read the training state" in message and "\n" not in message
    assert state.read_bytes() == damaged  # refused, not overwritten: the user decides


