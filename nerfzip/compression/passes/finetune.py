"""The ``finetune`` pass: training between passes with every constraint kept exactly
(quantization-aware for grids, trainable codebooks and factors; ``fit/finetune.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nerfzip.compression.compressed import Compressed
from nerfzip.compression.fit.finetune import finetune as train_constrained
from nerfzip.compression.registry import PassContext, register_pass
from nerfzip.rendering.model import RadianceModel
from nerfzip.utils.schema import limits


@dataclass
class Config:
    """Fine-tuning with the constraints in force."""

    steps: int = field(default=1000, metadata=limits(0))
    """Adam steps on random training rays."""
    batch_size: int = field(default=4096, metadata=limits(1))
    """Rays per step."""
    lr_grid: float | None = field(default=None, metadata=limits(0.0))
    """Learning rate of feature grids and leaf data (none: the family's, ``Field.finetune_rates``;
    families without grids use lr_net)."""
    lr_net: float | None = field(default=None, metadata=limits(0.0))
    """Learning rate of networks (none: the family's)."""
    seed: int = 0
    """Seed of the ray sampling."""


@register_pass("finetune", Config, needs_scene=True)
def finetune(model: RadianceModel | Compressed, cfg: Config, ctx: PassContext
             ) -> tuple[Compressed, dict[str, Any]]:
    """Fine-tuning on the training views, every constraint kept exactly."""
    return train_constrained(model, cfg.steps, cfg.batch_size, cfg.lr_grid, cfg.lr_net,
                             cfg.seed, ctx.scene, ctx.quiet)
