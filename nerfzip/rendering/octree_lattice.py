"""Rays in an octree's lattice: the geometry the PyTorch reference (``octree``) and the numba
kernel (``octree_kernel``) share, so that both cut a ray into the same leaf segments.

A depth-``D`` octree over the box ``[lo, hi]`` is the lattice of ``2^D`` cells per axis; a ray
``o + t d`` is ``g0 + t dg`` there with ``g0 = (o - lo) 2^D / (hi - lo)`` and
``dg = d 2^D / (hi - lo)``. A segment's cell is looked up ``LOOKUP_EPS`` cells past its start,
so that a point on a face falls in the cell the ray enters.
"""

from __future__ import annotations

import torch
from torch import Tensor

from nerfzip.data.cameras import RayBundle
from nerfzip.rendering.samplers import ray_aabb

LOOKUP_EPS = 1e-5
"""Where a segment's leaf is looked up: this far (in cells) past the segment's start."""
PARALLEL_EPS = 1e-12
"""A lattice direction component below this is parallel to the faces of its axis: the ray
never leaves a cell through them."""


def ray_range(rays: RayBundle, aabb: Tensor) -> tuple[Tensor, Tensor]:
    """Each ray's [t_enter, t_exit] inside the box and [near, far] (float64 [R])."""
    o, d = rays.origins.double(), rays.directions.double()
    t0, t1 = ray_aabb(o, d, aabb.double())
    return torch.maximum(t0, rays.near.double()), torch.minimum(t1, rays.far.double())


def grid_rays(rays: RayBundle, aabb: Tensor, depth: int) -> tuple[Tensor, Tensor]:
    """Ray origins and directions in lattice units, where a leaf is the unit cube: [R, 3]
    float64 each."""
    lo, hi = aabb[0].double(), aabb[1].double()
    scale = (1 << depth) / (hi - lo)
    return (rays.origins.double() - lo) * scale, rays.directions.double() * scale


def lattice_scale(aabb: Tensor, depth: int) -> tuple[Tensor, Tensor]:
    """The box's lower corner and the lattice cells per field unit along each axis (float64
    [3] each): what the kernel maps rays with, as ``grid_rays`` does."""
    lo, hi = aabb[0].double(), aabb[1].double()
    return lo, (1 << depth) / (hi - lo)
