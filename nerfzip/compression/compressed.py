"""What a compressed model carries between passes: the model, and the constraints each pass put
on its tensors (which entries are pruned, which grid a tensor is quantized to, which codebook
its feature vectors come from).

Constraints do three jobs: ``project`` re-imposes them on a field (fine-tuning calls it after
every optimiser step, and quantization goes through a straight-through estimator; a Tucker / CP
constraint re-fits its factors), they tell
the .nrz encoder how each tensor is best stored (``save_options``), and they are what the
tests check stays fixed during fine-tuning.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from nerfzip.codec.nrz import SaveOptions
from nerfzip.codec.tensors import (
    TensorSpec,
    cp_to_tensor,
    dequantize,
    fake_quantize,
    quant_grid,
    quantize,
    tucker_to_tensor,
)
from nerfzip.compression.fit.tensor_fit import fit_cp, fit_tucker
from nerfzip.errors import NerfzipError
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


@dataclass
class Factorized:
    """The tensor is a Tucker product (``method="tucker"``: a core times a factor on every mode
    m with ``ranks[m] > 0``) or a sum of ``ranks[0]`` rank-1 terms (``"cp"``), its core and
    factors rounded to ``bits``-bit grids when ``bits`` > 0 (what a later ``quant`` asks for:
    the file stores the factors, not the tensor).

    ``parts`` (core and factors, or CP factors) is the current fit, which the .nrz encoder
    stores. ``project`` re-fits a tensor that differs from their product (tensorly, warm-started
    from ``parts``) and returns the product, so projecting twice changes nothing; fine-tuning
    trains ``parts`` themselves through ``product`` (see ``finetune``).
    """

    method: str
    ranks: tuple[int, ...]
    bits: int = 0
    parts: list[Tensor] = field(default_factory=list)
    grids: list[tuple[Tensor, Tensor]] = field(default_factory=list)
    """The quantization grid of each part (per part, fixed while fine-tuning, as QuantGrid's)."""
    iters: int = 2
    """HOOI / ALS sweeps of a warm re-fit (a first fit: 5 HOOI / 30 ALS sweeps; on lego-sized
    planes HOOI gains ~1 % over the HOSVD it starts from, at ~0.5 s a sweep)."""

    @property
    def modes(self) -> list[int]:
        return [m for m, r in enumerate(self.ranks) if r > 0]

    def fit(self, x: Tensor) -> list[Tensor]:
        init = self.parts or None
        if self.method == "tucker":
            return fit_tucker(x, self.ranks, init, self.iters if init else 5)
        return fit_cp(x, self.ranks[0], init, self.iters if init else 30)

    def rebuild(self, parts: list[Tensor]) -> Tensor:
        """The tensor of ``parts`` (differentiable; the decoder's very function)."""
        if self.method == "tucker":
            return tucker_to_tensor(parts[0], parts[1:], self.modes)
        return cp_to_tensor(parts)

    def rounded(self, parts: list[Tensor]) -> list[Tensor]:
        """``parts`` on their grids (straight-through gradient), or as they are without bits."""
        if not self.bits:
            return list(parts)
        return [straight_through(p, fake_quantize(p, self.bits, None, g).to(p.dtype))
                for p, g in zip(parts, self.grids)]

    def set_parts(self, parts: list[Tensor], new_grids: bool = True) -> None:
        if self.bits and (new_grids or not self.grids):
            self.grids = [quant_grid(p, self.bits, None) for p in parts]
        self.parts = [p.detach().contiguous() for p in self.rounded(parts)]

    def product(self, parts: list[Tensor]) -> Tensor:
        """The tensor of trainable ``parts``, rounded as the file will store them."""
        return self.rebuild(self.rounded(parts))

    def project(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            if not (self.parts and torch.equal(x, self.rebuild(self.parts).to(x))):
                self.set_parts([p.to(x.device) for p in self.fit(x.detach().float())])
            elif self.bits and not self.grids:  # rounding asked for since the last fit
                self.set_parts(self.parts)
            y = self.rebuild(self.parts).to(x.dtype)
        return straight_through(x, y)

    def spec(self, coders: tuple[str, ...]) -> TensorSpec:
        """The encoder's spec: these parts, each exact or on its quantization grid."""
        def part_spec(i: int) -> TensorSpec:
            if not self.bits:
                return TensorSpec(coders=coders)
            return TensorSpec(mode="quant", bits=self.bits, grid=self.grids[i], coders=coders)

        return TensorSpec(mode=self.method, coders=coders, modes=tuple(self.modes),
                          parts=tuple((p, part_spec(i)) for i, p in enumerate(self.parts)))


Constraint = Mask | QuantGrid | Half | Codebook | Factorized


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
        factorized = next((c for c in self.constraints.get(name, [])
                           if isinstance(c, Factorized)), None)
        if factorized is not None and isinstance(constraint, rounding):
            # The file stores the factors, not the tensor: they are what gets rounded (half
            # precision as 16-bit grids).
            bits = constraint.bits if isinstance(constraint, QuantGrid) else 16
            constraint = replace(factorized, bits=bits, grids=[])
        elif factorized is not None and not isinstance(constraint, Factorized):
            raise NerfzipError(f"{name} is factorised (tensor_decompose): pruning or vector-"
                               "quantizing it would store it dense again; use one or the other "
                               "on a tensor")
        kept = [c for c in self.constraints.get(name, [])
                if isinstance(c, Mask) or not (type(c) is type(constraint) or (
                    isinstance(c, rounding) and isinstance(constraint, rounding)))]
        self.constraints[name] = kept + [constraint]

    def tensors(self) -> dict[str, Tensor]:
        """The field's learned parameters by name (live: writing to them changes the field).
        Buffers are left out: the only one, the field's box, is geometry that no pass may
        round (``quant(4, min_elements=1)`` would otherwise move a cropped box's corners)."""
        return dict(self.model.field.named_parameters())

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
            if len(cons) == 1 and isinstance(cons[0], Factorized):
                specs[name] = cons[0].spec(base.coders)
                continue
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
    """``x`` with its constraints applied in order (factorisation, codebook, then quantization,
    then masks: a pruned entry is zero whatever grid it would round to)."""
    order = {Factorized: -1, Codebook: 0, QuantGrid: 1, Half: 1, Mask: 2}
    for c in sorted(constraints, key=lambda c: order[type(c)]):
        x = c.project(x)
    return x
