"""python -m mammoclip_kit.convert: the conversion is exact and --check reports it."""

from __future__ import annotations

import json

import torch

from mammoclip_kit.convert import check_parity, main
from mammoclip_kit.models.clip import from_pretrained
from mammoclip_kit.models.reference import load_reference_checkpoint


def test_conversion_round_trip_is_exact(b2_reference, tiny_bert, tmp_path, capsys):
    _, path = b2_reference
    out = tmp_path / "converted"
    assert main([str(path), str(out), "--text-encoder", str(tiny_bert), "--check", "--check-size", "64", "48"]) == 0
    printed = capsys.readouterr().out
    assert "coverage 100.0 %" in printed
    parity = {line.split()[0]: float(line.split()[1]) for line in printed.splitlines()
              if line.split() and line.split()[0].endswith("diff")}
    assert parity == {"image_max_abs_diff": 0.0, "image_features_max_abs_diff": 0.0, "text_max_abs_diff": 0.0,
                      "logit_scale_abs_diff": 0.0}
    original, _ = load_reference_checkpoint(path, text_encoder=tiny_bert)
    converted = from_pretrained(out)
    a, b = original.state_dict(), converted.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    summary = json.loads((out / "conversion.json").read_text())
    assert summary["arch"] == "b2" and summary["coverage"] == 100.0
    config = (out / "config.json").read_text()
    assert str(tmp_path) not in config and str(tiny_bert) not in config
    assert check_parity(original, converted, image_size=(64, 48))["image_max_abs_diff"] == 0.0


def test_convert_reports_a_missing_file(tmp_path, capsys):
    assert main([str(tmp_path / "absent.tar"), str(tmp_path / "out")]) == 2
    assert "absent.tar" in capsys.readouterr().err
