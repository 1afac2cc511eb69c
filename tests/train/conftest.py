"""Training tests: offline hub settings also for processes the tests spawn (threads: tests/conftest.py)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
