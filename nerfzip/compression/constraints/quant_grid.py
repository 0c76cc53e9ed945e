"""Quantization's constraint: values on a uniform k-bit grid, per tensor or per channel."""

from __future__ import annotations

from dataclasses import dataclass, replace

from torch import Tensor

from nerfzip.codec.tensors import TensorSpec, dequantize, quantize
from nerfzip.compression.constraints.base import Constraint, straight_through


@dataclass
class QuantGrid(Constraint):
    """Values lie on ``lo + q * scale`` (per channel along ``axis``), q in [0, 2^bits)."""

    bits: int
    axis: int | None
    lo: Tensor
    scale: Tensor

    order = 1
    slot = "rounding"  # a new grid, or half precision, replaces an older one

    @property
    def factor_bits(self) -> int:  # type: ignore[override]
        return self.bits

    def project(self, x: Tensor) -> Tensor:
        """Nearest grid values, with a straight-through gradient (identity backward)."""
        q = dequantize(quantize(x, self.bits, self.axis, self.lo, self.scale), self.axis,
                       self.lo, self.scale).to(x.dtype)
        return straight_through(x, q)

    def storage(self, spec: TensorSpec) -> TensorSpec:
        """The grid's integer symbols (a codebook's vector axis, if any, is kept)."""
        return replace(spec, mode="quant", bits=self.bits, axis=self.axis,
                       grid=(self.lo, self.scale))
