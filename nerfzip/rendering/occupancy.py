"""A binary occupancy grid over the field's box, for empty-space skipping.

As in instant-ngp and nerfacc, each cell keeps a running estimate of the density inside it
(``max(decay * old, new)`` from a jittered sample per cell) and is occupied when a sample of
length ``step`` through that density would be visible: ``1 - exp(-sigma * step) > threshold``
(or, while the field is young, when it is above the mean density).
The occupied set is dilated by one cell so that thin surfaces between samples are not lost.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class OccupancyGrid(nn.Module):
    """``resolution^3`` cells over ``aabb``; ``occupied`` is what renderers consult."""

    def __init__(self, aabb: Tensor, resolution: int = 128):
        super().__init__()
        self.resolution = resolution
        self.register_buffer("aabb", aabb.detach().clone().float().reshape(2, 3))
        self.register_buffer("density", torch.zeros(resolution, resolution, resolution))
        self.register_buffer("occupied", torch.ones(resolution, resolution, resolution,
                                                    dtype=torch.bool))

    def cell_index(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Flat cell index [N] of points x [N, 3] and whether each lies inside the box."""
        lo, hi = self.aabb[0], self.aabb[1]
        u = (x - lo) / (hi - lo)
        inside = ((u >= 0) & (u < 1)).all(dim=-1)
        r = self.resolution
        ijk = (u * r).long().clamp(0, r - 1)
        return (ijk[:, 0] * r + ijk[:, 1]) * r + ijk[:, 2], inside

    def query(self, x: Tensor) -> Tensor:
        """True where points x [N, 3] fall in an occupied cell (False outside the box)."""
        idx, inside = self.cell_index(x)
        return self.occupied.view(-1)[idx] & inside

    def cell_centers(self, jitter: Tensor | None = None) -> Tensor:
        """Centres of all cells (optionally moved by ``jitter`` in cell units), [R^3, 3]."""
        r = self.resolution
        ar = torch.arange(r, device=self.aabb.device, dtype=torch.float32)
        g = torch.stack(torch.meshgrid(ar, ar, ar, indexing="ij"), dim=-1).view(-1, 3)
        g = g + (0.5 if jitter is None else jitter)
        lo, hi = self.aabb[0], self.aabb[1]
        return lo + g / r * (hi - lo)

    @torch.no_grad()
    def update(self, density_fn: Callable[[Tensor], Tensor], step: float, threshold: float = 1e-3,
               decay: float = 0.95, generator: torch.Generator | None = None,
               chunk: int = 1 << 18, young: bool = False) -> float:
        """Refresh the running density from one jittered sample per cell; returns the
        occupied fraction."""
        n = self.resolution ** 3
        jitter = torch.rand(n, 3, generator=generator).to(self.aabb.device)
        pts = self.cell_centers(jitter)
        fresh = torch.cat([density_fn(pts[i:i + chunk]) for i in range(0, n, chunk)])
        flat = self.density.view(-1)
        flat.copy_(torch.maximum(flat * decay, fresh))
        self.recompute(step, threshold, young)
        return float(self.occupied.float().mean())

    def recompute(self, step: float, threshold: float, young: bool = False) -> None:
        """Occupied = visible alpha at ``step``, dilated by one cell.

        For a ``young`` field the density threshold is capped at the mean density (as nerfacc
        does), so a field whose densities are all still small is not declared empty everywhere.
        """
        sigma_thresh = self.sigma_threshold(step, threshold)
        if young:
            sigma_thresh = torch.minimum(sigma_thresh, self.density.mean())
        occ = (self.density > sigma_thresh).float()[None, None]
        self.occupied.copy_(F.max_pool3d(occ, 3, stride=1, padding=1)[0, 0] > 0)

    def visible(self, step: float, threshold: float) -> Tensor:
        """Cells (undilated) whose density gives a sample of length ``step`` at least
        ``threshold`` opacity."""
        return self.density > self.sigma_threshold(step, threshold)

    def sigma_threshold(self, step: float, threshold: float) -> Tensor:
        """The density whose sample of length ``step`` has opacity ``threshold``."""
        return (-torch.log1p(-torch.tensor(threshold)) / step).to(self.density)

    def cell_size(self) -> Tensor:
        """Edge lengths of one cell, [3]."""
        return (self.aabb[1] - self.aabb[0]) / self.resolution

    def occupied_aabb(self, outlier_fraction: float = 0.0, margin: int = 0,
                      cells: Tensor | None = None) -> Tensor:
        """A box [2, 3] around the occupied cells (or the given ``cells`` mask; the full box
        if none).

        ``outlier_fraction`` ignores that share of occupied cells at each end of each axis, so
        that a few floaters near the walls do not keep the box from shrinking; ``margin`` cells
        are added on every side.
        """
        idx = (self.occupied if cells is None else cells).nonzero().float()
        if idx.numel() == 0:
            return self.aabb.clone()
        q_lo = torch.quantile(idx[:: max(1, idx.shape[0] // 100_000)], outlier_fraction, dim=0)
        q_hi = torch.quantile(idx[:: max(1, idx.shape[0] // 100_000)], 1 - outlier_fraction,
                              dim=0)
        r = self.resolution
        first = (q_lo.floor() - margin).clamp(0, r - 1)
        last = (q_hi.floor() + margin).clamp(0, r - 1)
        lo, cell = self.aabb[0], self.cell_size()
        return torch.stack([lo + first * cell, lo + (last + 1) * cell])
