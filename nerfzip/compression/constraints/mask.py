"""Pruning's constraint: entries outside a fixed mask are exactly zero (stored sparsely)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from nerfzip.compression.constraints.base import Constraint


@dataclass
class Mask(Constraint):
    """Entries where ``keep`` is False are exactly zero."""

    keep: Tensor

    order = 2  # last: a pruned entry is zero whatever grid or codebook it would round to
    slot = "mask"
    stacks = True  # a second pruning pass adds its zeros to the first's

    def project(self, x: Tensor) -> Tensor:
        # Multiplying by the mask also gives pruned entries no gradient when fine-tuning.
        return x * self.keep.to(x.dtype)
