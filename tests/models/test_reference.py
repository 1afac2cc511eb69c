"""Released-checkpoint loading: coverage, parity with a direct load, offline, safety, config hygiene."""

from __future__ import annotations

import os
import socket
import sys
from collections import OrderedDict

import pytest
import torch

from mammoclip_kit.models.factory import create_model
from mammoclip_kit.models.reference import (
    UnsafeCheckpointError,
    load_reference_checkpoint,
    read_reference_file,
    write_reference_checkpoint,
)

TEXTS = ["no mass", "an irregular spiculated mass in the left breast"]
DATA = os.path.join(os.path.dirname(__file__), "data")


def _images(seed: int = 0) -> torch.Tensor:
    # small inputs keep the B2 forward cheap; the static pads (from 260) are exercised all the same
    return torch.randn(2, 3, 96, 64, generator=torch.Generator().manual_seed(seed))


def test_b2_file_loads_with_full_coverage_and_same_embeddings(b2_reference, tiny_bert):
    direct, path = b2_reference
    model, report = load_reference_checkpoint(path, text_encoder=tiny_bert)
    assert report.arch == "b2" and report.coverage == 100.0 and report.file_coverage == 100.0
    assert report.missing == [] and report.unexpected == []
    assert report.skipped == ["text_encoder.text_encoder.embeddings.position_ids"]  # an old-transformers buffer
    assert report.epoch == 10
    assert len(report.loaded) == len(direct.state_dict())
    with torch.inference_mode():
        assert torch.equal(model.encode_image(_images()), direct.encode_image(_images()))
        assert torch.equal(model.encode_text(TEXTS), direct.encode_text(TEXTS))
    assert not model.training


def test_b5_layout_has_full_coverage(tmp_path, tiny_bert):
    direct = create_model("paper-b5", text_encoder=str(tiny_bert), seed=1)
    path = write_reference_checkpoint(direct, tmp_path / "b5-model-best-epoch-7.tar", arch="b5")
    model, report = load_reference_checkpoint(path, text_encoder=tiny_bert)
    assert report.arch == "b5" and report.coverage == 100.0 and report.unexpected == []
    image_keys = [k for k in report.loaded if k.startswith("image_encoder.")]
    assert len(image_keys) == 852
    assert model.image_projection.projection.weight.shape == (512, 2048)
    assert torch.equal(model.state_dict()["image_encoder._blocks.38._bn2.running_var"],
                       direct.state_dict()["image_encoder._blocks.38._bn2.running_var"])


def test_loading_needs_no_network(b2_reference, tiny_bert, monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network disabled by the test")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    _, path = b2_reference
    model, report = load_reference_checkpoint(path, text_encoder=tiny_bert)
    assert report.coverage == 100.0
    image_only, image_report = load_reference_checkpoint(path, image_only=True)
    assert image_only.text_encoder is None and image_report.coverage == 100.0
    assert all(k.startswith("text_encoder.") for k in image_report.skipped)
    with torch.inference_mode():
        assert torch.equal(image_only.encode_image(_images(1)), model.encode_image(_images(1)))


def test_config_is_plain_and_has_no_absolute_paths(b2_reference, tiny_bert):
    _, path = b2_reference
    raw = read_reference_file(path)
    assert raw["config"]["transform"]["train"]["transform"]["affine_scale"] == [0.8, 1.2]  # was a ListConfig
    assert "omegaconf" not in sys.modules
    _, report = load_reference_checkpoint(path, image_only=True)
    assert "base.data_dir" in report.dropped_paths and "model.text_encoder.cache_dir" in report.dropped_paths

    def strings(node):
        if isinstance(node, dict):
            for value in node.values():
                yield from strings(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                yield from strings(value)
        elif isinstance(node, str):
            yield node

    assert not [s for s in strings(report.config) if s.startswith("/")]


def test_real_omegaconf_pickle_is_read_without_omegaconf():
    # tests/models/data/omegaconf_config.pt: torch.save of {"model", "config", "epoch", "train_loss"} where "config"
    # was built with OmegaConf 2.4 (resolve, then DictConfig→dict only, leaving ListConfig values, as the reference
    # trainer saves it) and train_loss is a numpy float64.
    raw = read_reference_file(os.path.join(DATA, "omegaconf_config.pt"))
    config = raw["config"]
    assert config["transform"]["train"]["transform"]["affine_scale"] == [0.8, 1.2]
    assert config["data_train"]["upmc"]["nested"] == [[1, 2], {"a": 3}]
    assert config["model"]["image_encoder"]["name"] == "tf_efficientnet_b5_ns-detect"
    assert config["base"]["image_size_h"] == 1520 and raw["epoch"] == 7 and float(raw["train_loss"]) == 1.25
    assert "omegaconf" not in sys.modules


class _Exploit:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pickled_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.tar"
    torch.save({"model": OrderedDict(logit_scale=torch.tensor(1.0)), "config": {"x": _Exploit(str(marker))}}, path)
    with pytest.raises(UnsafeCheckpointError, match="system") as error:
        load_reference_checkpoint(path, image_only=True)
    assert "evil.tar" in str(error.value) and "allow-list" in str(error.value)
    assert not marker.exists()


def test_missing_and_unexpected_keys_are_named(b2_reference, tmp_path, tiny_bert):
    direct, _ = b2_reference
    path = write_reference_checkpoint(direct, tmp_path / "b2.tar", arch="b2")
    data = read_reference_file(path)  # the config comes back plain, so the edited file needs no stand-ins
    del data["model"]["image_encoder._blocks.3._se_reduce.bias"]
    data["model"]["image_encoder._fc.weight"] = torch.zeros(1, 1408)
    edited = tmp_path / "edited.tar"
    torch.save(data, edited)
    with pytest.raises(ValueError, match=r"_blocks\.3\._se_reduce\.bias"):
        load_reference_checkpoint(edited, text_encoder=tiny_bert)
    _, report = load_reference_checkpoint(edited, text_encoder=tiny_bert, strict=False)
    assert report.missing == ["image_encoder._blocks.3._se_reduce.bias"]
    assert report.unexpected == ["image_encoder._fc.weight"]
    assert report.coverage == pytest.approx(100 * (len(report.loaded)) / (len(report.loaded) + 1))


def test_wrong_text_encoder_width_is_reported(b2_reference, tmp_path):
    from mammoclip_kit.models.towers import DEFAULT_CORPUS, build_small_bert

    _, path = b2_reference
    wider = build_small_bert(DEFAULT_CORPUS, tmp_path / "wider", vocab_size=300, hidden=48, layers=1, heads=2)
    with pytest.raises(ValueError, match="do not fit"):
        load_reference_checkpoint(path, text_encoder=wider)


def test_config_name_and_weight_shapes_must_agree(tmp_path, tiny_bert):
    model = create_model("paper-b2", text_encoder=str(tiny_bert))
    path = write_reference_checkpoint(model, tmp_path / "b2.tar", arch="b2")
    data = read_reference_file(path)
    data["config"]["model"]["image_encoder"]["name"] = "tf_efficientnet_b5_ns-detect"
    torch.save(data, tmp_path / "mislabelled.tar")
    with pytest.raises(ValueError, match="shapes of b2"):
        load_reference_checkpoint(tmp_path / "mislabelled.tar", image_only=True)


def test_legacy_format_ddp_prefix_and_shape_only_arch(b2_reference, tmp_path):
    direct, path = b2_reference
    data = read_reference_file(path)
    data["model"] = OrderedDict((f"module.{k}", v) for k, v in data["model"].items())  # saved from the DDP wrapper
    del data["config"]["model"]["image_encoder"]  # no encoder name: the variant comes from the weight shapes
    legacy = tmp_path / "legacy.tar"
    torch.save(data, legacy, _use_new_zipfile_serialization=False)
    model, report = load_reference_checkpoint(legacy, image_only=True)
    assert report.arch == "b2" and report.arch_source == "weight shapes" and report.coverage == 100.0
    with torch.inference_mode():
        assert torch.equal(model.encode_image(_images(2)), direct.encode_image(_images(2)))
