"""Mammo-CLIP Kit: a Jupyter-first teaching and reproduction kit for Mammo-CLIP (Ghosh et al., MICCAI 2024).

The public API is imported lazily so that ``import mammoclip_kit`` stays fast in notebooks and CLIs.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "setup_notebook": "mammoclip_kit.context",
    "RunContext": "mammoclip_kit.context",
    "PARAMETERS": "mammoclip_kit.context",
    "pick_device": "mammoclip_kit.env",
    "seed_everything": "mammoclip_kit.env",
    "create_model": "mammoclip_kit.models.factory",
    "from_pretrained": "mammoclip_kit.models.clip",
    "load_reference_checkpoint": "mammoclip_kit.models.reference",
    "load_model": "mammoclip_kit.models.loader",
    "embed_images": "mammoclip_kit.inference",
    "embed_texts": "mammoclip_kit.inference",
    "zero_shot": "mammoclip_kit.inference",
    "retrieval_metrics": "mammoclip_kit.eval.metrics",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mammoclip_kit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
