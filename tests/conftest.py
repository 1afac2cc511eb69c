"""Test-wide settings: never touch a model hub; run torch on one intra-op thread.

Tests use tiny models, for which a second OpenMP thread only adds contention: on a shared 2-core machine it made a
tiny forward+backward about 100x slower (37 s vs 0.3 s measured). Notebook kernels are separate processes and keep
torch's default.
"""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
