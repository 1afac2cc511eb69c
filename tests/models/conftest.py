"""Shared fixtures of the model tests: a tiny local BERT folder and a B2 checkpoint in the released format."""

from __future__ import annotations

import pytest

from mammoclip_kit.models.factory import create_model
from mammoclip_kit.models.reference import write_reference_checkpoint
from mammoclip_kit.models.towers import DEFAULT_CORPUS, build_small_bert


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    """A randomly initialised 1-layer BERT (hidden 32) with a vocabulary trained on the built-in corpus."""
    return build_small_bert(DEFAULT_CORPUS, tmp_path_factory.mktemp("tiny_bert"), vocab_size=300, hidden=32,
                            layers=1, heads=2, max_length=64)


@pytest.fixture(scope="session")
def b2_reference(tmp_path_factory, tiny_bert):
    """(model, path): a paper-b2 model with the tiny BERT and random weights, written in the released format."""
    model = create_model("paper-b2", text_encoder=str(tiny_bert), seed=7).eval()
    path = write_reference_checkpoint(model, tmp_path_factory.mktemp("released") / "b2-model-best-epoch-10.tar",
                                      arch="b2")
    return model, path
