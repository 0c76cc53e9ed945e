"""Quantization: post-training uniform k-bit quantization (per tensor or per output channel,
ranges calibrated on the tensor) and half precision.

Quantized values are put on the field at once (fake quantization), and the grid stays as a
constraint: fine-tuning afterwards is quantization-aware (straight-through estimator, see
``finetune``), and the .nrz encoder stores each tensor as its grid's integer symbols, entropy
coded. Tensors under ``min_elements`` values (biases, small bases) stay in float32, as the
file would keep them.

Every grid has zero exactly on it, so entries that pruning zeroed stay exactly zero.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from nerfzip.codec.nrz import channel_axis
from nerfzip.codec.tensors import quant_grid
from nerfzip.compression.state import Compressed, Half, QuantGrid, constrained
from nerfzip.errors import NerfzipError
from nerfzip.rendering.model import RadianceModel


def calibrated_grid(x: Tensor, bits: int, axis: int | None) -> QuantGrid:
    """Min / max ranges (zero exactly on the grid, so pruned entries stay zero)."""
    lo, scale = quant_grid(x, bits, axis)
    return QuantGrid(bits, axis, lo, scale)


def quantize(model: RadianceModel | Compressed, bits: int = 8, per_channel: bool = True,
             min_elements: int = 4096, include: str = "") -> tuple[Compressed, dict]:
    """Uniform ``bits``-bit quantization of a copy of ``model``'s float tensors. ``include``
    restricts it to names containing that text (e.g. ``app_grids``)."""
    if not 1 <= bits <= 16:
        raise NerfzipError(f"quant: bits must be 1..16, got {bits}")
    c = Compressed.of(model)
    done, err = 0, 0.0
    for name, x in c.tensors().items():
        if not x.is_floating_point() or x.numel() < min_elements or include not in name:
            continue
        current = constrained(x.detach(), c.constraints.get(name, []))
        grid = calibrated_grid(current, bits, channel_axis(x) if per_channel else None)
        c.add(name, grid)
        new = constrained(current, c.constraints[name])
        err = max(err, float((new - current).abs().max()))
        done += x.numel()
    c.project()
    report = {"bits": bits, "per_channel": per_channel, "quantized_values": done,
              "max_abs_error": err}
    c.record("quant", {"bits": bits, "per_channel": per_channel, "min_elements": min_elements,
                       "include": include}, report)
    return c, report


def half(model: RadianceModel | Compressed, min_elements: int = 4096
         ) -> tuple[Compressed, dict[str, Any]]:
    """Float16 storage of a copy of ``model``'s float tensors (values rounded at once)."""
    c = Compressed.of(model)
    done = 0
    for name, x in c.tensors().items():
        if x.is_floating_point() and x.numel() >= min_elements:
            c.add(name, Half())
            done += x.numel()
    c.project()
    report = {"half_values": done}
    c.record("half", {"min_elements": min_elements}, report)
    return c, report
