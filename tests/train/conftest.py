"""Training tests run tiny models: one intra-op thread avoids thread-pool contention on a shared 2-core machine."""

import os

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(1)
