"""The ``half`` pass: float16 storage of the field's float tensors (values rounded at once,
kept on float16 by fine-tuning afterwards)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nerfzip.compression.compressed import Compressed
from nerfzip.compression.constraints import Half
from nerfzip.compression.registry import PassContext, register_pass
from nerfzip.rendering.model import RadianceModel
from nerfzip.utils.schema import limits


@dataclass
class Config:
    """Half precision."""

    min_elements: int = field(default=4096, metadata=limits(0))
    """Tensors with fewer values (biases, small bases) stay float32."""


@register_pass("half", Config)
def half(model: RadianceModel | Compressed, cfg: Config, ctx: PassContext
         ) -> tuple[Compressed, dict[str, Any]]:
    """Float16 storage of the float tensors."""
    c = Compressed.of(model)
    done = 0
    for name, x in c.tensors().items():
        if x.is_floating_point() and x.numel() >= cfg.min_elements:
            c.add(name, Half())
            done += x.numel()
    c.project()
    report = {"half_values": done}
    c.record("half", {"min_elements": cfg.min_elements}, report)
    return c, report
