"""What a compressed model carries between passes: the model, and the constraints each pass put
on its tensors (which entries are pruned, which grid a tensor is quantized to, which codebook
its feature vectors come from).

Constraints do three jobs: ``project`` re-imposes them on a field (fine-tuning calls it after
every optimiser step, and quantization goes through a straight-through estimator), they tell
the .nrz encoder how each tensor is best stored (``save_options``), and they are what the
tests check stays fixed during fine-tuning.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from nerfzip.codec.nrz import SaveOptions
from nerfzip.codec.tensors import TensorSpec, dequantize, quantize
from nerfzip.rendering.model import RadianceModel


def straight_through(x: Tensor, rounded: Tensor) -> Tensor:
    """``rounded``'s values with ``x``'s gradient. Written ``rounded + (x - x)`` rather than
    ``x + (rounded - x)``: the latter can be one ulp off the grid, the former is exact."""
    return rounded.detach() + (x - x.detach())


@dataclass
class Mask:
    """Entries where ``keep`` is False are exactly zero."""

    keep: Tensor

    def project(self, x: Tensor) -> Tensor:
        return x * self.keep.to(x.dtype)


@dataclass
class QuantGrid:
    """Values lie on ``lo + q * scale`` (per channel along ``axis``), q in [0, 2^bits)."""

    bits: int
    axis: int | None
    lo: Tensor
    scale: Tensor

    def project(self, x: Tensor) -> Tensor:
        """Nearest grid values, with a straight-through gradient (identity backward)."""
        q = dequantize(quantize(x, self.bits, self.axis, self.lo, self.scale), self.axis,
                       self.lo, self.scale).to(x.dtype)
        return straight_through(x, q)


@dataclass
class Half:
    """Values are float16 numbers (straight-through gradient)."""

    def project(self, x: Tensor) -> Tensor:
        return straight_through(x, x.half().to(x.dtype))


@dataclass
class Codebook:
    """Feature vectors along ``axis`` come from ``codebook`` [K, D] via fixed ``indices`` (one
    per vector, -1 where the vector is kept exact); fine-tuning trains the codebook entries,
    never the assignment."""

    axis: int
    indices: Tensor
    codebook: Tensor

    def vectors(self, x: Tensor) -> Tensor:
        return x.movedim(self.axis, -1).reshape(-1, x.shape[self.axis])

    def project(self, x: Tensor) -> Tensor:
        rows = self.vectors(x)
        vq = self.indices >= 0
        rows = torch.where(vq[:, None], self.codebook[self.indices.clamp(min=0)], rows)
        moved = list(x.shape)
        moved.append(moved.pop(self.axis))
        return rows.reshape(moved).movedim(-1, self.axis)


Constraint = Mask | QuantGrid | Half | Codebook


@dataclass
class Compressed:
    """A model under compression: the model, per-tensor constraints and the pass history."""

    model: RadianceModel
    constraints: dict[str, list[Constraint]] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def of(cls, model: RadianceModel | Compressed) -> Compressed:
        """A deep copy to work on (passes never mutate their input)."""
        if isinstance(model, Compressed):
            return copy.deepcopy(model)
        return cls(copy.deepcopy(model), {}, list(model.meta.get("pipeline", [])))

    def add(self, name: str, constraint: Constraint) -> None:
        # A new quantization grid (or half) or codebook replaces an older one; masks add up.
        rounding = (QuantGrid, Half)
        kept = [c for c in self.constraints.get(name, [])
                if isinstance(c, Mask) or not (type(c) is type(constraint) or (
                    isinstance(c, rounding) and isinstance(constraint, rounding)))]
        self.constraints[name] = kept + [constraint]

    def tensors(self) -> dict[str, Tensor]:
        """The field's parameters by name (live: writing to them changes the field)."""
        own = dict(self.model.field.named_parameters())
        own.update(dict(self.model.field.named_buffers()))
        return own

    @torch.no_grad()
    def project(self) -> None:
        """Re-impose every constraint on the field's tensors (in place)."""
        tensors = self.tensors()
        for name, cons in self.constraints.items():
            x = tensors[name]
            x.copy_(constrained(x, cons))

    def record(self, step: str, args: dict[str, Any], report: dict[str, Any]) -> None:
        self.history.append({"step": step, "args": args, "report": report})
        self.model.meta["pipeline"] = list(self.history)

    def save_options(self, base: SaveOptions | None = None) -> SaveOptions:
        """Encoder options whose per-tensor specs follow the constraints: quantized tensors
        are stored as their grid's symbols, codebook tensors as codebook + indices, masked
        tensors sparsely, everything else as ``base`` says (lossless by default)."""
        base = base or SaveOptions()
        specs = dict(base.specs)
        for name, cons in self.constraints.items():
            spec = TensorSpec(coders=base.coders)
            for c in cons:
                if isinstance(c, Half):
                    spec = TensorSpec(mode="half", coders=base.coders,
                                      vector_axis=spec.vector_axis)
                elif isinstance(c, QuantGrid):
                    spec = TensorSpec(mode="quant", bits=c.bits, axis=c.axis,
                                      grid=(c.lo, c.scale), coders=base.coders,
                                      vector_axis=spec.vector_axis)
                elif isinstance(c, Codebook):
                    spec = TensorSpec(mode=spec.mode, bits=spec.bits, axis=spec.axis,
                                      grid=spec.grid, vector_axis=c.axis, coders=base.coders)
            specs[name] = spec
        return SaveOptions(mode=base.mode, bits=base.bits, per_channel=base.per_channel,
                           min_lossy_elements=base.min_lossy_elements, coders=base.coders,
                           specs=specs)


def constrained(x: Tensor, constraints: list[Constraint]) -> Tensor:
    """``x`` with its constraints applied in order (codebook, then quantization, then masks:
    a pruned entry is zero whatever grid it would round to)."""
    order = {Codebook: 0, QuantGrid: 1, Half: 1, Mask: 2}
    for c in sorted(constraints, key=lambda c: order[type(c)]):
        x = c.project(x)
    return x
