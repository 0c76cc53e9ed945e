"""Nested quantization (a *ladder*): one quantized tensor stored as a coarse tensor plus residual
tensors, so that a reader holding the first k of them has the tensor at the k-th precision,
and all of them give it at the grid's full precision.

A tensor on the grid ``lo + q * scale`` (per channel, zero on the grid at symbol ``z``) has
signed symbols ``s = q - z``. Layer k rounds what the layers before it left,
``r_k = s - sum_{j<k} c_j W_j``, to a step of ``W_k`` grid steps (per channel, integers):
``c_k = floor((r_k + floor(W_k / 2)) / W_k)``, in integer arithmetic. The last step is 1, so
the layers add up to ``s`` exactly. This is embedded uniform quantization (JPEG 2000's
bit-planes, with steps of any integer ratio rather than powers of two): the coarse layer is a
uniform quantizer of step ``W_0 * scale`` with its reconstruction on zero, each refinement
quantizes the error left so far.

Each layer is stored as an ordinary ``quant`` node (codec 3): its grid is ``W_k * scale`` with
the lowest symbol at ``c_min * W_k * scale``, so it decodes to ``c_k * W_k * scale``, exactly
zero where ``c_k`` is 0 (entries that pruning zeroed stay zero in every layer). A reader adds
the layers it holds, in file order (``fold``; ``codec/progressive.py`` in place); the sum of all
of them equals the single-rate tensor up to the float32 rounding of the sums (a few ulps).

Section names: the tensor's own name for the coarse layer, ``name~k`` for refinement k.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import torch
from torch import Tensor

from nerfzip.codec.codecs.quant import MAX_BITS, channel_view, dequantize, quantize
from nerfzip.codec.node import FLOAT, TensorSpec
from nerfzip.codec.symbols import bits_for
from nerfzip.errors import NerfzipError

MARK = "~"
MAX_REFINEMENTS = 63


def layer_name(name: str, k: int) -> str:
    """The section name of layer ``k`` (0: the coarse layer) of tensor ``name``."""
    return name if k == 0 else f"{name}{MARK}{k}"


def split_name(name: str, where: str) -> tuple[str, int]:
    """(tensor name, layer) of a section name; one-line error for a malformed mark."""
    base, mark, k = name.rpartition(MARK)
    if not mark:
        return name, 0
    if not (k.isdigit() and k == str(int(k)) and 1 <= int(k) <= MAX_REFINEMENTS and base):
        raise NerfzipError(f"{where}: section {name!r}: a refinement is named "
                           f"TENSOR{MARK}K with K in 1..{MAX_REFINEMENTS}")
    return base, int(k)


def from_channel_view(v: Tensor, shape: tuple[int, ...], axis: int | None) -> Tensor:
    """Inverse of ``channel_view``: [C, rest] back to ``shape``."""
    if axis is None:
        return v.reshape(shape)
    moved = (shape[axis],) + tuple(s for i, s in enumerate(shape) if i != axis)
    return v.reshape(moved).movedim(0, axis)


def check_ladder(spec: TensorSpec, channels: int) -> list[Tensor]:
    """The spec's steps as int64 [C] columns, checked: at least two layers, every step a
    positive integer, the last all ones."""
    if spec.mode != "quant" or spec.grid is None:
        raise ValueError("a ladder needs a quantization grid")
    steps = [torch.as_tensor(w).to(torch.int64).reshape(-1).cpu() for w in spec.ladder]
    if not 2 <= len(steps) <= MAX_REFINEMENTS + 1:
        raise ValueError(f"a ladder has 2 to {MAX_REFINEMENTS + 1} layers, not {len(steps)}")
    for w in steps:
        if w.numel() != channels or bool((w < 1).any()):
            raise ValueError(f"ladder steps must be {channels} positive integers per layer")
    if bool((steps[-1] != 1).any()):
        raise ValueError("a ladder's last layer has step 1 (the grid's own)")
    if spec.ladder_layers and (len(spec.ladder_layers) != len(steps) - 1 or any(
            not 0 <= a < b for a, b in zip((0,) + spec.ladder_layers, spec.ladder_layers))):
        raise ValueError("a ladder's refinements go to increasing layers after the base")
    return steps


def signed_symbols(x: Tensor, bits: int, axis: int | None, lo: Tensor, scale: Tensor
                   ) -> Tensor:
    """``x``'s grid symbols minus the zero's, as [C, rest] (``lo``, ``scale``: [C], CPU)."""
    q = channel_view(quantize(x.detach().cpu(), bits, axis, lo, scale), axis)
    return q - torch.round(-lo / scale).to(torch.int64)[:, None]


def round_to_steps(rest: Tensor, steps: Tensor) -> Tensor:
    """``rest`` [C, N] rounded to ``steps`` [C] grid steps, in integers: the symbols ``c``."""
    w = steps[:, None]
    return torch.div(rest + w // 2, w, rounding_mode="floor")


def layer_grid(c: Tensor, steps: Tensor, scale: Tensor) -> tuple[int, Tensor, Tensor]:
    """The quant grid storing symbols ``c`` [C, N] of ``steps`` grid steps: its bits, offsets
    (the lowest symbol's value, a multiple of the step, so zero is on the grid) and steps."""
    low = c.amin(dim=1) if c.numel() else torch.zeros(c.shape[0], dtype=torch.int64)
    width = int((c - low[:, None]).max()) + 1 if c.numel() else 1
    step = steps.to(FLOAT) * scale
    return max(1, bits_for(width)), low.to(FLOAT) * step, step


def ladder_layers(x: Tensor, spec: TensorSpec) -> list[tuple[Tensor, TensorSpec]]:
    """Tensor ``x`` (on the grid ``spec.grid``) as its ladder's layers: per layer, the values
    it decodes to and the ``quant`` spec that stores exactly them."""
    assert spec.grid is not None
    lo, scale = (g.detach().cpu().to(FLOAT).reshape(-1) for g in spec.grid)
    steps = check_ladder(spec, lo.numel())
    rest = signed_symbols(x, spec.bits, spec.axis, lo, scale)
    out = []
    for w in steps:
        c = round_to_steps(rest, w)
        rest = rest - c * w[:, None]
        bits, offset, step = layer_grid(c, w, scale)
        symbols = c - c.amin(dim=1, keepdim=True) if c.numel() else c
        if bits > MAX_BITS:
            raise ValueError(f"a ladder layer needs {bits}-bit symbols (at most {MAX_BITS})")
        value = from_channel_view(dequantize(symbols, 0, offset, step), tuple(x.shape),
                                  spec.axis)
        out.append((value, replace(spec, bits=bits, grid=(offset, step), ladder=(),
                                   ladder_layers=())))
    assert not bool(rest.any())
    return out


def fold(tensors: Mapping[str, Tensor], where: str) -> dict[str, Tensor]:
    """Tensors by name with each refinement (``name~k``) added to its tensor, in the order
    given (a file's section order): the model of the layers held. One-line errors for a
    refinement without its tensor before it or of another shape or dtype."""
    out: dict[str, Tensor] = {}
    for name, x in tensors.items():
        base, k = split_name(name, where)
        if k == 0:
            out[name] = x
            continue
        if base not in out:
            raise NerfzipError(f"{where}: section {name!r} refines {base!r}, which does not "
                               "come before it")
        if x.shape != out[base].shape or x.dtype != out[base].dtype \
                or not x.is_floating_point():
            raise NerfzipError(f"{where}: section {name!r} is {str(x.dtype)[6:]} "
                               f"{list(x.shape)}, the tensor it refines is "
                               f"{str(out[base].dtype)[6:]} {list(out[base].shape)}")
        out[base] = out[base] + x
    return out
