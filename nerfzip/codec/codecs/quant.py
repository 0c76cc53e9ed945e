"""Codec 3, ``quant``: uniform ``bits``-bit quantization per tensor or per channel, stored as the
grid (offsets and scales, float32) and the integer symbols; and the quantization maths the
compression passes share, so that a quantized field and its file hold the same values.

Grid values are ``lo + q * scale`` (``dequantize``), with zero exactly on the grid.
"""

from __future__ import annotations

import torch
from torch import Tensor

from nerfzip.codec.binary import FormatError
from nerfzip.codec.codecs.symbols import symbols_node
from nerfzip.codec.node import (
    FLOAT,
    Codec,
    Node,
    TensorSpec,
    check_axis,
    check_shape,
    encode_tensor,
    expect_parts,
    register_codec,
)
from nerfzip.codec.node import decode as decode_node

MAX_BITS = 16


# --- quantization shared with the compression passes ---
def channel_view(x: Tensor, axis: int | None) -> Tensor:
    """``x`` as [C, rest] with channels along ``axis`` (C = 1 per tensor)."""
    if axis is None:
        return x.reshape(1, -1)
    return x.movedim(axis, 0).reshape(x.shape[axis], -1)


def quant_grid(x: Tensor, bits: int, axis: int | None) -> tuple[Tensor, Tensor]:
    """Min / max calibrated grid with zero exactly on it: ``lo`` and ``scale`` per channel,
    float32 [C]. Zero is exact (``lo = -(z * scale)``, so ``lo + z * scale == 0`` in float32)
    so that pruned entries stay exactly zero whatever they are quantized with."""
    v = channel_view(x.detach().to(FLOAT), axis)
    lo = torch.clamp(v.amin(dim=1), max=0.0)
    hi = torch.clamp(v.amax(dim=1), min=0.0)
    scale = (hi - lo) / float((1 << bits) - 1)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    zero = torch.round(-lo / scale).clamp(0, (1 << bits) - 1)
    return -(zero * scale), scale


def quantize(x: Tensor, bits: int, axis: int | None, lo: Tensor, scale: Tensor) -> Tensor:
    """Integer symbols in [0, 2^bits) of ``x`` on the grid ``lo + q * scale`` (shape of x)."""
    shape = [1] * x.dim()
    if axis is not None:
        shape[axis] = -1
    q = torch.round((x.detach().to(FLOAT) - lo.view(shape)) / scale.view(shape))
    return q.clamp(0, (1 << bits) - 1).to(torch.int64)


def dequantize(q: Tensor, axis: int | None, lo: Tensor, scale: Tensor) -> Tensor:
    """The grid values of symbols ``q``; the one formula every quantized value goes through."""
    shape = [1] * q.dim()
    if axis is not None:
        shape[axis] = -1
    return lo.view(shape).to(FLOAT) + q.to(FLOAT) * scale.view(shape).to(FLOAT)


def fake_quantize(x: Tensor, bits: int, axis: int | None,
                  grid: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """``x`` replaced by its nearest grid values (what ``quant`` stores and decodes to)."""
    lo, scale = grid if grid is not None else quant_grid(x, bits, axis)
    return dequantize(quantize(x, bits, axis, lo, scale), axis, lo, scale)


# --- the codec ---
def quant_node(x: Tensor, spec: TensorSpec) -> Node:
    if not 1 <= spec.bits <= MAX_BITS:
        raise ValueError(f"quantization to {spec.bits} bits (1-{MAX_BITS} supported)")
    # The grid may come from a pass that ran on a GPU; coding happens on the CPU.
    lo, scale = ((g.detach().cpu() for g in spec.grid) if spec.grid is not None
                 else quant_grid(x, spec.bits, spec.axis))
    q = quantize(x, spec.bits, spec.axis, lo, scale)
    exact = TensorSpec(coders=spec.coders, sparse=False)
    children = [encode_tensor(lo.to(FLOAT).contiguous(), exact),
                encode_tensor(scale.to(FLOAT).contiguous(), exact),
                symbols_node(q, spec.coders)]
    return Node("quant", FLOAT, tuple(x.shape), {"bits": spec.bits, "axis": spec.axis},
                children, [])


def encode(x: Tensor, spec: TensorSpec) -> list[Node]:
    # An empty tensor has no range to put a grid on (the raw codec stores it).
    return [quant_node(x, spec)] if x.numel() else []


def decode(node: Node) -> Tensor:
    expect_parts(node, 3, 0)
    bits = node.params.get("bits")
    if not isinstance(bits, int) or not 1 <= bits <= MAX_BITS:
        raise FormatError(f"bad quantization bits {bits!r}")
    axis = check_axis(node.params.get("axis"), len(node.shape))
    channels = 1 if axis is None else node.shape[axis]
    lo, scale, q = (decode_node(c) for c in node.children)
    check_shape(lo.shape, (channels,), "quantization offsets")
    check_shape(scale.shape, (channels,), "quantization scales")
    check_shape(q.shape, node.shape, "quantized symbols")
    if q.numel() and (int(q.min()) < 0 or int(q.max()) >= 1 << bits):
        raise FormatError(f"quantized symbol outside {bits} bits")
    return dequantize(q, axis, lo, scale)


def describe(node: Node) -> str:
    p = node.params
    where = "tensor" if p["axis"] is None else f"axis {p['axis']}"
    return f"quant {p['bits']}b/{where} [{node.children[2].describe()}]"


register_codec(Codec("quant", 3, encode, decode, describe, modes=("quant",)))
