"""Half precision's constraint: values are float16 numbers."""

from __future__ import annotations

from dataclasses import dataclass, replace

from torch import Tensor

from nerfzip.codec.tensors import TensorSpec
from nerfzip.compression.constraints.base import Constraint, straight_through


@dataclass
class Half(Constraint):
    """Values are float16 numbers (straight-through gradient)."""

    order = 1
    slot = "rounding"  # replaces a quantization grid, and is replaced by one
    factor_bits = 16  # on a factorised tensor: its factors on 16-bit grids

    def project(self, x: Tensor) -> Tensor:
        return straight_through(x, x.half().to(x.dtype))

    def storage(self, spec: TensorSpec) -> TensorSpec:
        return replace(spec, mode="half")
