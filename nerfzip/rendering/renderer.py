"""Render rays and whole views of a field: sampling, field queries, compositing.

Two samplers:

- ``occupancy``: equal steps through occupied cells of an ``OccupancyGrid`` (empty space is never
  queried); density first, colour only where a sample's weight is visible; at inference the
  march goes in segments and drops rays whose transmittance fell below a threshold (early ray
  termination).
- ``hierarchical``: NeRF's coarse + fine sampling (stratified coarse samples, then inverse-CDF
  samples of the coarse weights), for MLP NeRFs such as the imported nerf-pytorch models.
- ``octree``: exact traversal of an octree field's leaves (``rendering.octree``; a numba kernel
  at inference on the CPU).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from nerfzip.data.cameras import RayBundle
from nerfzip.fields.base import Field
from nerfzip.fields.octree import Octree
from nerfzip.rendering.occupancy import OccupancyGrid
from nerfzip.rendering.octree import render_octree
from nerfzip.rendering.samplers import clip_rays, march, pack_valid, sample_pdf, stratified, window
from nerfzip.rendering.volrend import composite, render_weights, transmittance
from nerfzip.utils.schema import limits

SHADE_BATCH = 16384
"""Colour queries per call at inference: larger batches fall out of the CPU's caches (a
TensoRF decoder runs about 30 % slower per point at 65k points than at 16k)."""


def setting(default: Any, lo: float | None = None, hi: float | None = None, **kw: Any) -> Any:
    """A dataclass field with a default and the ``limits`` a file's value must respect."""
    return dataclasses.field(default=default, metadata=limits(lo, hi, **kw))


@dataclass
class RenderConfig:
    """How rays are sampled and composited (ranges checked when read from a file)."""

    sampler: str = setting("occupancy", choices=("occupancy", "hierarchical", "octree"))
    """"occupancy" (grid-guided marching), "hierarchical" (NeRF coarse + fine) or "octree"
    (leaf traversal of an octree field)."""
    step_size: float = setting(0.01, 0.0, lo_open=True)
    """Occupancy sampler: distance between samples, in field units."""
    max_samples: int = setting(2048, 1, 1 << 16)
    """Occupancy sampler: most steps per ray; longer rays take proportionally longer steps."""
    weight_threshold: float = setting(1e-4, 0.0, 1.0)
    """Colour is evaluated only for samples whose compositing weight exceeds this."""
    stop_transmittance: float = setting(1e-4, 0.0, 1.0)
    """Inference: a ray stops once its transmittance falls below this."""
    segment: int = setting(32, 1, 1 << 16)
    """Inference: steps marched per ray between early-termination checks."""
    n_coarse: int = setting(64, 2, 1 << 12)
    """Hierarchical sampler: stratified coarse samples per ray."""
    n_fine: int = setting(64, 0, 1 << 12)
    """Hierarchical sampler: importance samples per ray (added to the coarse ones)."""
    last_delta: float = setting(1e10, 0.0, 1e10, lo_open=True)
    """Hierarchical sampler: length of the last interval (NeRF: effectively infinite)."""
    chunk: int = setting(8192, 1, 1 << 20)
    """Rays rendered at once for a full image."""


def render_rays(field: Field, rays: RayBundle, background: Tensor, cfg: RenderConfig,
                occupancy: OccupancyGrid | None = None, train: bool = False,
                generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """Colour (and opacity, sample count) of each ray: ``{"rgb": [R, 3], "acc": [R], ...}``."""
    if cfg.sampler == "hierarchical":
        return render_hierarchical(field, rays, background, cfg, train, generator)
    if cfg.sampler == "octree":
        if not isinstance(field, Octree):
            raise ValueError(f"the octree sampler cannot render a {field.family} field")
        return render_octree(field, rays, background, cfg.stop_transmittance,
                             cfg.weight_threshold, train)
    if cfg.sampler != "occupancy":
        raise ValueError(f"unknown sampler {cfg.sampler!r}")
    if train or torch.is_grad_enabled():
        return render_occupancy(field, rays, background, cfg, occupancy, train, generator)
    return render_occupancy_early_stop(field, rays, background, cfg, occupancy)


def sample_points(rays: RayBundle, t: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Positions [M, 3] of the valid samples and the ray index [M] of each."""
    ray_idx = valid.nonzero()[:, 0]
    t_valid = t[valid]
    pts = rays.origins[ray_idx] + t_valid[:, None] * rays.directions[ray_idx]
    return pts, ray_idx


def render_occupancy(field: Field, rays: RayBundle, background: Tensor, cfg: RenderConfig,
                     occupancy: OccupancyGrid | None, train: bool,
                     generator: torch.Generator | None) -> dict[str, Tensor]:
    """Occupancy-guided marching, differentiable (used in training).

    A gradient-free density pass finds where each ray's transmittance falls below
    ``cfg.stop_transmittance``; the differentiable pass then re-evaluates only the samples in
    front of that point. Samples behind it carry weights below the threshold, so the result
    differs from the full sum by less than ``stop_transmittance``, at a fraction of the cost
    of back-propagating through every sample (the dominant cost on a CPU).
    """
    r = len(rays)
    jitter = torch.rand(r, generator=generator).to(rays.origins.device) if train else None
    t, valid, delta = march(rays, field.aabb, cfg.step_size, occupancy, jitter, cfg.max_samples)
    deltas = delta[:, None].expand_as(t)
    with torch.no_grad():
        pts, _ = sample_points(rays, t, valid)
        sigma = torch.zeros_like(t)
        if pts.shape[0]:
            sigma = sigma.masked_scatter(valid, field.density(pts))
        trans = transmittance(sigma * deltas)
        t, valid = pack_valid(t, valid & (trans > cfg.stop_transmittance))
        deltas = delta[:, None].expand_as(t)
    pts, ray_idx = sample_points(rays, t, valid)
    sigma = torch.zeros_like(t)
    if pts.shape[0]:
        sigma = sigma.masked_scatter(valid, field.density(pts))
    weights, _ = render_weights(sigma, deltas)
    w = weights.detach()
    # Also each ray's strongest samples: a young field's weights are all below the threshold,
    # and without any colour query a black background would give density no gradient.
    strongest = w >= 0.5 * w.amax(dim=1, keepdim=True) if w.shape[1] else w.bool()
    visible = ((w > cfg.weight_threshold) | strongest) & valid
    rgb_s = torch.zeros(*t.shape, 3, device=t.device)
    if bool(visible.any()):
        vis_flat = visible[valid]
        colours = field.radiance(pts[vis_flat], rays.viewdirs[ray_idx[vis_flat]])
        rgb_s = rgb_s.masked_scatter(visible[..., None].expand_as(rgb_s), colours)
    rgb = composite(weights, rgb_s, background)
    return {"rgb": rgb, "acc": weights.sum(-1), "num_samples": valid.sum().to(torch.float32)}


@torch.no_grad()
def render_occupancy_early_stop(field: Field, rays: RayBundle, background: Tensor,
                                cfg: RenderConfig, occupancy: OccupancyGrid | None
                                ) -> dict[str, Tensor]:
    """Inference: the same samples as ``render_occupancy``, marched lazily in windows of
    ``cfg.segment`` steps. A ray leaves the march once its transmittance falls below
    ``cfg.stop_transmittance`` (early termination) or it runs out of range, so neither the
    field nor the occupancy grid is queried behind a surface."""
    t_enter, t_exit, step_t, n_steps = clip_rays(rays, field.aabb, cfg.step_size,
                                                 cfg.max_samples)
    delta = step_t * rays.directions.norm(dim=-1)
    device = rays.origins.device
    r = len(rays)
    trans = torch.ones(r, device=device)
    active = torch.arange(r, device=device)
    n_evals = 0
    # Colour does not change transmittance: the visible samples of all windows are shaded
    # together at the end, in one large batch.
    shade: list[tuple[Tensor, Tensor, Tensor]] = []
    last = int(n_steps.max()) if r else 0
    for start in range(0, last, cfg.segment):
        active = active[n_steps[active] > start]
        if active.numel() == 0:
            break
        size = min(cfg.segment, last - start)
        sub = rays.index(active)
        seg_t, seg_valid = window(sub, t_enter[active], t_exit[active], step_t[active], start,
                                  size, occupancy)
        pts, ray_idx = sample_points(sub, seg_t, seg_valid)
        ray_idx = active[ray_idx]
        if pts.shape[0] == 0:
            continue
        n_evals += pts.shape[0]
        sigma = torch.zeros_like(seg_t).masked_scatter(seg_valid, field.density(pts))
        w, t_after = render_weights(sigma, delta[active][:, None].expand_as(seg_t))
        w = w * trans[active][:, None]
        visible = (w > cfg.weight_threshold) & seg_valid
        vis_flat = visible[seg_valid]
        shade.append((pts[vis_flat], ray_idx[vis_flat], w[visible]))
        trans[active] = trans[active] * t_after
        active = active[trans[active] > cfg.stop_transmittance]
    rgb = torch.zeros(r, 3, device=device)
    if shade:
        pts, ray_idx, w = (torch.cat(parts) for parts in zip(*shade))
        for i in range(0, pts.shape[0], SHADE_BATCH):
            sl = slice(i, i + SHADE_BATCH)
            colours = field.radiance(pts[sl], rays.viewdirs[ray_idx[sl]])
            rgb.index_add_(0, ray_idx[sl], w[sl, None] * colours)
    acc = 1.0 - trans
    rgb = rgb + trans[:, None] * background
    return {"rgb": rgb, "acc": acc, "num_samples": torch.tensor(float(n_evals))}


@torch.no_grad()
def sample_weights(field: Field, rays: RayBundle, cfg: RenderConfig,
                   occupancy: OccupancyGrid | None) -> tuple[Tensor, Tensor]:
    """Every occupied sample's position [M, 3] and compositing weight [M] (what importance
    estimates accumulate: how much each point contributes to the rendered pixels)."""
    t, valid, delta = march(rays, field.aabb, cfg.step_size, occupancy, None, cfg.max_samples)
    pts, _ = sample_points(rays, t, valid)
    sigma = torch.zeros_like(t)
    if pts.shape[0]:
        sigma = sigma.masked_scatter(valid, field.density(pts))
    weights, _ = render_weights(sigma, delta[:, None].expand_as(t))
    return pts, weights[valid]


def render_hierarchical(field: Field, rays: RayBundle, background: Tensor, cfg: RenderConfig,
                        train: bool, generator: torch.Generator | None) -> dict[str, Tensor]:
    """NeRF's coarse + fine sampling; the coarse network comes from ``field.coarse_field()``."""
    coarse = field.coarse_field() if hasattr(field, "coarse_field") else field
    z = stratified(rays.near, rays.far, cfg.n_coarse, perturb=train, generator=generator)
    # The coarse colour only feeds the training loss: inference asks the coarse net for density.
    need_coarse_rgb = train or torch.is_grad_enabled()
    out_c = shade_samples(coarse, rays, z, background, cfg.last_delta, need_coarse_rgb)
    z_all = importance_depths(z, out_c["weights"].detach(), cfg.n_fine, not train, generator)
    out_f = shade_samples(field, rays, z_all, background, cfg.last_delta)
    out = {"rgb": out_f["rgb"], "acc": out_f["weights"].sum(-1),
           "num_samples": torch.tensor(float(z.numel() + z_all.numel()))}
    if need_coarse_rgb:
        out["rgb_coarse"] = out_c["rgb"]
    return out


def importance_depths(z: Tensor, weights: Tensor, n_fine: int, deterministic: bool,
                      generator: torch.Generator | None = None) -> Tensor:
    """NeRF's fine samples: ``n_fine`` depths drawn from the coarse ``weights`` at ``z`` [R, S],
    merged with ``z`` in order -> [R, S + n_fine]."""
    mids = 0.5 * (z[:, 1:] + z[:, :-1])
    z_fine = sample_pdf(mids, weights[:, 1:-1], n_fine, deterministic=deterministic,
                        generator=generator)
    return torch.sort(torch.cat([z, z_fine.detach()], dim=-1), dim=-1).values


def shade_samples(field: Field, rays: RayBundle, z: Tensor, background: Tensor,
                  last_delta: float, rgb: bool = True) -> dict[str, Tensor]:
    """Query a field at samples ``z`` [R, S] along rays and composite (NeRF's raw2outputs);
    with ``rgb=False`` only density is queried and only the weights are returned."""
    r, s = z.shape
    pts = (rays.origins[:, None, :] + z[..., None] * rays.directions[:, None, :]).reshape(-1, 3)
    dists = torch.cat([z[:, 1:] - z[:, :-1], torch.full_like(z[:, :1], last_delta)], dim=-1)
    dists = dists * rays.directions.norm(dim=-1, keepdim=True)
    if not rgb:
        weights, _ = render_weights(field.density(pts).view(r, s), dists)
        return {"weights": weights}
    dirs = rays.viewdirs[:, None, :].expand(r, s, 3)
    sigma, colour = field(pts, dirs.reshape(-1, 3))
    weights, _ = render_weights(sigma.view(r, s), dists)
    return {"rgb": composite(weights, colour.view(r, s, 3), background), "weights": weights}


@torch.no_grad()
def render_view_rays(field: Field, rays: RayBundle, background: Tensor, cfg: RenderConfig,
                     occupancy: OccupancyGrid | None = None) -> Tensor:
    """Render many rays in chunks of ``cfg.chunk``; returns rgb [N, 3] clamped to [0, 1]."""
    out = [render_rays(field, rays.index(slice(i, i + cfg.chunk)), background, cfg, occupancy)
           ["rgb"] for i in range(0, len(rays), cfg.chunk)]
    return torch.cat(out).clamp(0.0, 1.0)
