"""A precision ladder's constraint: store a quantized tensor as nested layers, coarse first
(``codec/ladder.py``); the values stay what the grid makes them."""

from __future__ import annotations

from dataclasses import dataclass, replace

from torch import Tensor

from nerfzip.codec.tensors import TensorSpec
from nerfzip.compression.constraints.base import Constraint
from nerfzip.errors import NerfzipError


@dataclass
class Ladder(Constraint):
    """The tensor's grid symbols are written as layers of steps ``steps[k]`` grid steps per
    channel (int64 [C] each, the last all ones)."""

    steps: tuple[Tensor, ...]
    layers: tuple[int, ...] = ()
    """The file layer of each refinement (empty: refinement k in layer k)."""

    order = 3
    slot = "ladder"

    def project(self, x: Tensor) -> Tensor:
        return x  # a storage layout: the grid constraint before it fixes the values

    def absorb(self, new: Constraint, name: str) -> Constraint:
        raise NerfzipError(f"{name}: progressive(order=precision) must be the last pass that "
                           f"constrains a tensor ({type(new).__name__} after it)")

    def storage(self, spec: TensorSpec) -> TensorSpec:
        if spec.mode != "quant" or spec.grid is None:
            raise NerfzipError("progressive(order=precision) layers quantized tensors only")
        return replace(spec, ladder=self.steps, ladder_layers=self.layers)
