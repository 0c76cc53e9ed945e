"""One budget allocator for every pass that chooses per-unit precision under a size budget
(``lagrangian``: bits per tensor for ``quant``, rank per layer for ``low_rank``), and the units
each pass hands it (``quant``: a tensor's bit depths with their real section bytes and
importance-weighted errors)."""

from nerfzip.compression.allocate.lagrangian import Allocation, Option, Unit, allocate

__all__ = ["Allocation", "Option", "Unit", "allocate"]
