"""Fixtures of the evaluation tests: a released-layout checkpoint (EfficientNet-B2, seeded weights, tiny BERT)."""

from __future__ import annotations

import pytest

from mammoclip_kit.models.factory import create_model
from mammoclip_kit.models.reference import write_reference_checkpoint
from mammoclip_kit.models.towers import DEFAULT_CORPUS, build_small_bert


@pytest.fixture(scope="session")
def released_b2(tmp_path_factory):
    """(model, tar path, text-encoder folder): a paper-b2 model with seeded weights, written in the released format."""
    bert = build_small_bert(DEFAULT_CORPUS, tmp_path_factory.mktemp("bert"), vocab_size=300, hidden=32, layers=1,
                            heads=2, max_length=64)
    model = create_model("paper-b2", text_encoder=str(bert), seed=5).eval()
    path = write_reference_checkpoint(model, tmp_path_factory.mktemp("released") / "b2-model-best-epoch-10.tar",
                                      arch="b2")
    return model, path, bert
