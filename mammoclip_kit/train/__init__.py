"""Contrastive pretraining: configs, datasets → model → loop, torchrun DDP, exact resume, benchmark.

Later notebooks call :func:`ensure_pretrained` (``ctx.checkpoint_dir(variant)``, trained or loaded); the CLI is
``python -m mammoclip_kit.pretrain --config configs/pretrain/classroom.yaml`` (also under torchrun).
"""

from mammoclip_kit.train.config import VARIANTS, PretrainConfig, PretrainSectionConfig, load_config
from mammoclip_kit.train.pipeline import (
           ensure_pretrained,
           pretrain_config,
           run_pretraining,
)

__all__ = ["ensure_pretrained", "pretrain_config", "run_pretraining", "PretrainConfig",
           "PretrainSectionConfig", "load_config", "VARIANTS"]
