"""One budget allocator for every pass that chooses per-unit settings under a size budget
(``lagrangian``: bits per tensor for ``quant``, codebook size per grid for ``vq``, rank per
layer for ``low_rank``), and the units the tensor-wise passes hand it (``units``: each
setting's real section bytes and importance-weighted, render-calibrated error)."""

from nerfzip.compression.allocate.lagrangian import Allocation, Option, Unit, allocate

__all__ = ["Allocation", "Option", "Unit", "allocate"]
