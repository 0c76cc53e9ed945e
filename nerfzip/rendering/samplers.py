"""Where along each ray to sample: box clipping, occupancy-guided marching, stratified samples
and hierarchical (inverse-CDF) importance sampling.

Samples are returned densely as [R, S] tensors with a validity mask; the expensive field
queries then run only on valid samples.
"""

from __future__ import annotations

import torch
from torch import Tensor

from nerfzip.data.cameras import RayBundle
from nerfzip.rendering.occupancy import OccupancyGrid


def ray_aabb(origins: Tensor, directions: Tensor, aabb: Tensor) -> tuple[Tensor, Tensor]:
    """Entry and exit distances of rays through a box (slab method): [N], [N].

    Rays that miss the box get ``t_enter > t_exit``.
    """
    inv = 1.0 / torch.where(directions.abs() < 1e-9, torch.full_like(directions, 1e-9),
                            directions)
    t0 = (aabb[0] - origins) * inv
    t1 = (aabb[1] - origins) * inv
    t_enter = torch.minimum(t0, t1).amax(dim=-1)
    t_exit = torch.maximum(t0, t1).amin(dim=-1)
    return t_enter, t_exit


def clip_rays(rays: RayBundle, aabb: Tensor, step: float, max_steps: int = 2048
              ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Each ray's range inside both the box and [near, far], ``t_enter`` and ``t_exit`` [R],
    the step in units of t, ``step_t`` [R], and the number of steps that cover the range,
    ``n_steps`` [R] (at most ``max_steps``).

    The step is ``step / |d|`` (|d| differs from 1 in NDC), lengthened on rays whose range
    would need more than ``max_steps`` steps: a per-ray sample budget that keeps long rays
    through large boxes (instant-ngp captures, NDC frustums) affordable instead of cutting
    them short."""
    t_enter, t_exit = ray_aabb(rays.origins, rays.directions, aabb)
    t_enter = torch.maximum(t_enter, rays.near)
    t_exit = torch.minimum(t_exit, rays.far)
    length = (t_exit - t_enter).clamp(min=0.0)
    step_t = torch.maximum(step / rays.directions.norm(dim=-1), length / max_steps)
    n_steps = torch.ceil(length / step_t).clamp(max=max_steps)
    return t_enter, t_exit, step_t, n_steps


def window(rays: RayBundle, t_enter: Tensor, t_exit: Tensor, step_t: Tensor, start: int,
           size: int, occupancy: OccupancyGrid | None, jitter: Tensor | float = 0.5
           ) -> tuple[Tensor, Tensor]:
    """Steps ``start .. start + size`` of each ray: midpoints ``t`` [R, size] and whether each
    lies inside the ray's range and in an occupied cell, ``valid`` [R, size] (not packed)."""
    ar = torch.arange(start, start + size, device=t_enter.device, dtype=torch.float32)
    t = t_enter[:, None] + (ar[None, :] + jitter) * step_t[:, None]
    valid = t < t_exit[:, None]
    if occupancy is not None:
        valid &= occupied_along(rays, t_enter, t, step_t, occupancy)
    return t, valid


def march(rays: RayBundle, aabb: Tensor, step: float, occupancy: OccupancyGrid | None,
          jitter: Tensor | None = None, max_samples: int = 2048
          ) -> tuple[Tensor, Tensor, Tensor]:
    """Equal steps of length ``step`` (at most ``max_samples`` per ray, see ``clip_rays``)
    inside the box, kept where the grid is occupied.

    Returns ``t [R, S]`` sample midpoints, ``valid [R, S]`` and ``delta`` (each ray's sample
    length in field units, ``step_t * |d|``, [R]). Valid samples of each ray are packed to the
    front, in order, so S is the largest number of occupied samples on any ray (not the
    longest ray).
    ``jitter`` [R] in [0, 1) offsets each ray's samples (stratified training samples).
    """
    t_enter, t_exit, step_t, n_steps = clip_rays(rays, aabb, step, max_samples)
    delta = step_t * rays.directions.norm(dim=-1)
    s_max = int(n_steps.max()) if n_steps.numel() else 0
    if s_max == 0:
        empty = torch.zeros(len(rays), 0, device=rays.origins.device)
        return empty, empty.bool(), delta
    offs = 0.5 if jitter is None else jitter[:, None]
    t, valid = window(rays, t_enter, t_exit, step_t, 0, s_max, occupancy, offs)
    return *pack_valid(t, valid), delta


def occupied_along(rays: RayBundle, t_enter: Tensor, t: Tensor, step_t: Tensor,
                   occupancy: OccupancyGrid) -> Tensor:
    """Occupancy of samples ``t`` [R, S], looked up at half-cell spacing and spread to the
    samples between (a fine step needs no more lookups than the grid has detail; the grid's
    one-cell dilation covers a lookup landing beside a cell boundary)."""
    r, s = t.shape
    cell = float(occupancy.cell_size().min())
    ratio = int(cell * 0.5 / float(step_t.max() * rays.directions.norm(dim=-1).max()))
    if ratio < 2:
        pts = rays.origins[:, None, :] + t[..., None] * rays.directions[:, None, :]
        return occupancy.query(pts.view(-1, 3)).view(r, s)
    n_coarse = (s + ratio - 1) // ratio
    idx = torch.arange(n_coarse, device=t.device) * ratio + ratio // 2
    t_c = t[:, idx.clamp(max=s - 1)]
    pts = rays.origins[:, None, :] + t_c[..., None] * rays.directions[:, None, :]
    occ_c = occupancy.query(pts.view(-1, 3)).view(r, n_coarse)
    return occ_c.repeat_interleave(ratio, dim=1)[:, :s]


def pack_valid(t: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Move each row's valid entries to the front (keeping order) and trim empty columns."""
    counts = valid.sum(dim=1)
    s = int(counts.max()) if counts.numel() else 0
    r = t.shape[0]
    if s == t.shape[1]:
        return t, valid
    rank = torch.cumsum(valid, dim=1) - 1
    rows = torch.arange(r, device=t.device)[:, None].expand_as(t)
    t_out = torch.zeros(r, s, device=t.device, dtype=t.dtype)
    t_out[rows[valid], rank[valid]] = t[valid]
    v_out = torch.arange(s, device=t.device)[None, :] < counts[:, None]
    return t_out, v_out


def stratified(near: Tensor, far: Tensor, n: int, perturb: bool,
               generator: torch.Generator | None = None) -> Tensor:
    """``n`` samples per ray linear in t between near and far [R] -> [R, n] (NeRF's coarse
    samples); with ``perturb`` each lies uniformly at random in its stratum."""
    u = torch.linspace(0.0, 1.0, n, device=near.device)
    z = near[:, None] * (1.0 - u) + far[:, None] * u
    if perturb:
        mids = 0.5 * (z[:, 1:] + z[:, :-1])
        upper = torch.cat([mids, z[:, -1:]], dim=-1)
        lower = torch.cat([z[:, :1], mids], dim=-1)
        r = torch.rand(z.shape, generator=generator).to(z.device)
        z = lower + (upper - lower) * r
    return z


def sample_pdf(bins: Tensor, weights: Tensor, n: int, deterministic: bool,
               generator: torch.Generator | None = None) -> Tensor:
    """Inverse-transform sampling of the piecewise-constant pdf ``weights`` over ``bins``.

    NeRF's hierarchical sampling (Mildenhall et al. 2020, sec. 5.2): bins [R, B+1],
    weights [R, B] -> [R, n] samples.
    """
    weights = weights + 1e-5
    pdf = weights / weights.sum(-1, keepdim=True)
    cdf = torch.cumsum(pdf, -1)
    cdf = torch.cat([torch.zeros_like(cdf[..., :1]), cdf], -1)
    if deterministic:
        u = torch.linspace(0.0, 1.0, n, device=bins.device).expand(cdf.shape[0], n)
    else:
        u = torch.rand(cdf.shape[0], n, generator=generator).to(bins.device)
    u = u.contiguous()
    inds = torch.searchsorted(cdf.contiguous(), u, right=True)
    below = (inds - 1).clamp(min=0)
    above = inds.clamp(max=cdf.shape[-1] - 1)
    cdf_g0, cdf_g1 = torch.gather(cdf, -1, below), torch.gather(cdf, -1, above)
    bin_g0, bin_g1 = torch.gather(bins, -1, below), torch.gather(bins, -1, above)
    denom = cdf_g1 - cdf_g0
    denom = torch.where(denom < 1e-5, torch.ones_like(denom), denom)
    return bin_g0 + (u - cdf_g0) / denom * (bin_g1 - bin_g0)
