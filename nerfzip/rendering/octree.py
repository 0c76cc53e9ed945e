"""Rendering an octree field exactly: each ray is cut into the segments where it crosses leaves,
and each leaf's constant density and colour are integrated over its segment (PlenOctrees'
renderer), with empty nodes of any level skipped whole and early ray termination.

Along a ray the segments ``i`` of length ``delta_i`` in leaves of density ``sigma_i`` give
``alpha_i = 1 - exp(-sigma_i delta_i)`` and the compositing of ``volrend`` — exact for a
piecewise-constant field, with no step size to choose.

This module is the PyTorch reference (``trace`` + ``composite_segments``, differentiable in the
leaf values, which is what fine-tuning uses) and the dispatcher: at inference on a CPU the numba
kernel of ``octree_kernel`` renders the same segments (a test checks that both agree).
"""

from __future__ import annotations

import torch
from torch import Tensor

from nerfzip.data.cameras import RayBundle
from nerfzip.fields.octree import Octree, OctreeStructure
from nerfzip.rendering import octree_kernel
from nerfzip.rendering.octree_lattice import LOOKUP_EPS, PARALLEL_EPS, grid_rays, ray_range
from nerfzip.rendering.volrend import composite, render_weights


@torch.no_grad()
def trace(structure: OctreeStructure, aabb: Tensor, rays: RayBundle, sigma: Tensor,
          stop_transmittance: float) -> tuple[Tensor, Tensor, Tensor]:
    """The leaf segments of every ray, front to back, up to where its transmittance falls
    below ``stop_transmittance`` (``sigma`` [L]: each leaf's density, >= 0).

    Returns ``leaf`` [R, S] (int64, -1 past a ray's last segment), ``length`` [R, S] (field
    units, 0 past the last segment) and ``steps`` (cells visited, empty ones included)."""
    depth = structure.depth
    n = 1 << depth
    r = len(rays)
    device = rays.origins.device
    g0, dg = grid_rays(rays, aabb, depth)
    t, t_exit = ray_range(rays, aabb)
    norm = rays.directions.double().norm(dim=-1)
    parallel = dg.abs() < PARALLEL_EPS  # never leaves a cell through these faces
    inv = 1.0 / torch.where(parallel, torch.ones_like(dg), dg)
    eps_t = LOOKUP_EPS / dg.abs().amax(dim=-1).clamp(min=1e-12)
    trans = torch.ones(r, dtype=torch.float64, device=device)
    active = torch.nonzero(t < t_exit)[:, 0]
    rec_ray, rec_leaf, rec_len = [], [], []
    steps = 0
    while active.numel():
        ta = t[active]
        p = g0[active] + (ta + eps_t[active])[:, None] * dg[active]
        cell = p.floor().clamp(0, n - 1).long()
        leaf, level = structure.descend(cell)
        size = torch.ones_like(level) << (depth - level)
        lo = (cell // size[:, None]) * size[:, None]
        bound = torch.where(dg[active] > 0, lo + size[:, None], lo).double()
        t_axis = (bound - g0[active]) * inv[active]
        t_out = torch.where(parallel[active], torch.inf, t_axis).amin(dim=-1)
        t_out = torch.minimum(torch.maximum(t_out, ta + eps_t[active]), t_exit[active])
        length = (t_out - ta) * norm[active]
        hit = leaf >= 0
        if bool(hit.any()):
            rays_hit = active[hit]
            rec_ray.append(rays_hit)
            rec_leaf.append(leaf[hit])
            rec_len.append(length[hit])
            trans[rays_hit] *= torch.exp(-sigma[leaf[hit]].double() * length[hit])
        steps += active.numel()
        t[active] = t_out
        keep = (t_out < t_exit[active]) & (trans[active] > stop_transmittance)
        active = active[keep]
    return *pack(r, rec_ray, rec_leaf, rec_len, device), steps


def pack(r: int, rays: list[Tensor], leaves: list[Tensor], lengths: list[Tensor],
         device: torch.device) -> tuple[Tensor, Tensor]:
    """Records (ray, leaf, length) in along-the-ray order per ray -> padded [R, S] arrays."""
    if not rays:
        return (torch.full((r, 0), -1, dtype=torch.int64, device=device),
                torch.zeros(r, 0, device=device))
    ray, leaf, length = torch.cat(rays), torch.cat(leaves), torch.cat(lengths)
    order = torch.sort(ray, stable=True).indices  # stable: keeps each ray's segments in order
    ray, leaf, length = ray[order], leaf[order], length[order]
    counts = torch.bincount(ray, minlength=r)
    starts = torch.cumsum(counts, 0) - counts
    pos = torch.arange(ray.numel(), device=device) - starts[ray]
    s = int(counts.max())
    leaf_out = torch.full((r, s), -1, dtype=torch.int64, device=device)
    len_out = torch.zeros(r, s, device=device)
    leaf_out[ray, pos] = leaf
    len_out[ray, pos] = length.float()
    return leaf_out, len_out


def composite_segments(field: Octree, leaf: Tensor, length: Tensor, viewdirs: Tensor,
                       background: Tensor, weight_threshold: float, train: bool = False
                       ) -> dict[str, Tensor]:
    """Colour of rays from their leaf segments (``trace``), differentiable in the leaf values:
    colour is evaluated only where a segment's weight exceeds ``weight_threshold`` (and, in
    training, at each ray's strongest segments, so that a young leaf gets a gradient)."""
    valid = leaf >= 0
    idx = leaf.clamp(min=0)
    sigma = torch.relu(field.sigma[idx]) * valid
    weights, _ = render_weights(sigma, length)
    w = weights.detach()
    visible = (w > weight_threshold) & valid
    if train and w.shape[1]:
        visible |= (w >= 0.5 * w.amax(dim=1, keepdim=True)) & valid
    rgb_s = torch.zeros(*leaf.shape, 3, device=leaf.device, dtype=weights.dtype)
    if bool(visible.any()):
        ray_of = torch.arange(leaf.shape[0], device=leaf.device)[:, None].expand_as(leaf)
        colours = field.leaf_color(leaf[visible], viewdirs[ray_of[visible]])
        rgb_s = rgb_s.masked_scatter(visible[..., None].expand_as(rgb_s), colours)
    return {"rgb": composite(weights, rgb_s, background), "acc": weights.sum(-1),
            "num_samples": valid.sum().to(torch.float32)}


def render_octree(field: Octree, rays: RayBundle, background: Tensor, stop_transmittance: float,
                  weight_threshold: float, train: bool = False, kernel: str = "auto"
                  ) -> dict[str, Tensor]:
    """Colour of rays through an octree field. On a CPU with numba (``kernel``: "auto" uses it
    when numba is installed, "numba" insists, "torch" never) the kernel renders at inference
    and finds the segments in training (PyTorch then composites them differentiably);
    elsewhere the PyTorch reference does both."""
    on_cpu = (kernel != "torch" and field.aabb.device.type == "cpu"
              and (octree_kernel.available() or kernel == "numba"))
    if on_cpu and not train and not torch.is_grad_enabled():
        return octree_kernel.render(field, rays, background, stop_transmittance,
                                    weight_threshold)
    if on_cpu:  # training: the kernel finds the segments, PyTorch composites them
        leaf, length = octree_kernel.trace(field, rays, stop_transmittance)
    else:
        leaf, length, _ = trace(field.structure(), field.aabb, rays,
                                torch.relu(field.sigma.detach()), stop_transmittance)
    return composite_segments(field, leaf, length, rays.viewdirs, background, weight_threshold,
                              train)


@torch.no_grad()
def leaf_weights(field: Octree, rays: RayBundle, stop_transmittance: float,
                 reduce: str = "max", kernel: str = "auto") -> Tensor:
    """Each leaf's compositing weights over ``rays``, reduced: their maximum (``"max"``: what
    baking prunes invisible leaves by) or their sum (``"sum"``: VQRF's importance of the leaf).
    Float64 [L], 0 for leaves no ray reaches. The numba kernel computes it on a CPU
    (``kernel`` as ``render_octree``)."""
    if reduce not in ("max", "sum"):
        raise ValueError(f"reduce must be max or sum, not {reduce!r}")
    if (kernel != "torch" and rays.origins.device.type == "cpu"
            and (octree_kernel.available() or kernel == "numba")):
        return octree_kernel.leaf_weights(field, rays, stop_transmittance, reduce)
    sigma = torch.relu(field.sigma.detach())
    leaf, length, _ = trace(field.structure(), field.aabb, rays, sigma, stop_transmittance)
    valid = leaf >= 0
    weights, _ = render_weights(sigma.double()[leaf.clamp(min=0)] * valid, length.double())
    out = torch.zeros(field.config.leaves, dtype=torch.float64, device=leaf.device)
    return out.scatter_reduce(0, leaf[valid], weights[valid], "amax" if reduce == "max"
                              else "sum")
