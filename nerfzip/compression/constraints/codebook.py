"""Vector quantization's constraint: feature vectors come from a codebook through a fixed
assignment; fine-tuning trains the codebook entries."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from nerfzip.codec.tensors import TensorSpec
from nerfzip.compression.constraints.base import Constraint


@dataclass
class Codebook(Constraint):
    """Feature vectors along ``axis`` come from ``codebook`` [K, D] via fixed ``indices`` (one
    per vector, -1 where the vector is kept exact); fine-tuning trains the codebook entries,
    never the assignment."""

    axis: int
    indices: Tensor
    codebook: Tensor

    order = 0  # before rounding: the file rounds the codebook's vectors
    slot = "codebook"

    def vectors(self, x: Tensor) -> Tensor:
        return x.movedim(self.axis, -1).reshape(-1, x.shape[self.axis])

    def project(self, x: Tensor) -> Tensor:
        return self.project_with(x, [self.codebook])

    def project_with(self, x: Tensor, trained: list[Tensor]) -> Tensor:
        rows = self.vectors(x)
        vq = self.indices >= 0
        rows = torch.where(vq[:, None], trained[0][self.indices.clamp(min=0)], rows)
        moved = list(x.shape)
        moved.append(moved.pop(self.axis))
        return rows.reshape(moved).movedim(-1, self.axis)

    def trainable(self) -> list[Tensor]:
        return [self.codebook]

    def trained(self, trained: list[Tensor], latent: list[Tensor] | None) -> Codebook:
        return Codebook(self.axis, self.indices, trained[0].detach().clone())

    def storage(self, spec: TensorSpec) -> TensorSpec:
        """Stored as codebook + indices: the encoder looks for repeated vectors on ``axis``."""
        return replace(spec, vector_axis=self.axis)
