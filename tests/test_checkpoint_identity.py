"""artifacts.checkpoint_identity: what results and predictions record about the checkpoint that produced them."""

import hashlib
import json

from mammoclip_kit.artifacts import checkpoint_identity, describe_checkpoint


def test_kit_folder_released_file_and_missing_path(tmp_path):
    folder = tmp_path / "mammoclip"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights v1")
    (folder / "config.json").write_text(json.dumps({"weights_sha256": "ab" * 32}))
    assert checkpoint_identity(folder) == {"checkpoint": str(folder), "name": "mammoclip", "kind": "kit folder",
                                           "sha256": "ab" * 6}
    (folder / "config.json").write_text(json.dumps({"format": "mammoclip-kit"}))  # older kit: no recorded hash
    assert checkpoint_identity(folder)["sha256"] == hashlib.sha256(b"weights v1").hexdigest()[:12]
    tar = tmp_path / "b5-model-best-epoch-7.tar"
    tar.write_bytes(b"released")
    identity = checkpoint_identity(tar)
    assert identity["kind"] == "released file" and identity["name"] == "b5-model-best-epoch-7"
    assert identity["sha256"] == hashlib.sha256(b"released").hexdigest()[:12]
    assert describe_checkpoint(identity) == f"b5-model-best-epoch-7 (released file, sha256 {identity['sha256']})"
    assert checkpoint_identity(tmp_path / "gone")["kind"] == "missing"
    assert describe_checkpoint(None) == "no checkpoint recorded"
