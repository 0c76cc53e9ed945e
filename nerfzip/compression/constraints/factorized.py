"""Tensor decomposition's constraint: the tensor is a Tucker or CP product of stored factors,
which fine-tuning trains and a later ``quant`` / ``half`` rounds (the file stores the factors,
not the tensor)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from nerfzip.codec.tensors import (
    TensorSpec,
    cp_to_tensor,
    fake_quantize,
    quant_grid,
    tucker_to_tensor,
)
from nerfzip.compression.constraints.base import Constraint, straight_through
from nerfzip.compression.fit.tensor_fit import fit_cp, fit_tucker
from nerfzip.errors import NerfzipError


@dataclass
class Factorized(Constraint):
    """The tensor is a Tucker product (``method="tucker"``: a core times a factor on every mode
    m with ``ranks[m] > 0``) or a sum of ``ranks[0]`` rank-1 terms (``"cp"``), its core and
    factors rounded to ``bits``-bit grids when ``bits`` > 0 (what a later ``quant`` asks for:
    the file stores the factors, not the tensor).

    ``parts`` (core and factors, or CP factors) is the current fit, which the .nrz encoder
    stores. ``project`` re-fits a tensor that differs from their product (tensorly, warm-started
    from ``parts``) and returns the product, so projecting twice changes nothing; fine-tuning
    trains ``parts`` themselves through ``product`` (``latent`` / ``from_latent``).
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

    order = -1  # first: the other constraints would act on the product
    slot = "factorized"

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

    # --- merging: rounding goes to the factors; nothing else may join --------------------
    def absorb(self, new: Constraint, name: str) -> Constraint:
        if new.slot == self.slot:
            return new
        if new.factor_bits is not None:
            return replace(self, bits=new.factor_bits, grids=[])
        raise NerfzipError(f"{name} is factorised (tensor_decompose): pruning or vector-"
                           "quantizing it would store it dense again; use one or the other "
                           "on a tensor")

    # --- fine-tuning: trained through the core and factors -------------------------------
    def latent(self) -> list[Tensor]:
        return list(self.parts)

    def from_latent(self, latent: list[Tensor]) -> Tensor:
        return self.product(latent)

    def trained(self, trained: list[Tensor], latent: list[Tensor] | None) -> Factorized:
        """Keeps the trained factors, on their fixed grids."""
        if latent is not None:
            self.set_parts(latent, new_grids=False)
        return self

    def storage(self, spec: TensorSpec) -> TensorSpec:
        """The encoder's spec: these parts, each exact or on its quantization grid."""
        coders = spec.coders

        def part_spec(i: int) -> TensorSpec:
            if not self.bits:
                return TensorSpec(coders=coders)
            return TensorSpec(mode="quant", bits=self.bits, grid=self.grids[i], coders=coders)

        return TensorSpec(mode=self.method, coders=coders, modes=tuple(self.modes),
                          parts=tuple((p, part_spec(i)) for i, p in enumerate(self.parts)))
