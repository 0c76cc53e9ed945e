"""Baking any field into an octree (``fields.octree``): find the leaves that matter, sample the
source's density and view-dependent colour into them.

1. **Geometry.** The source's density is sampled at the cell centres of the lattice one level
   above the leaves (skipping cells its occupancy grid marks empty); a cell of the level above
   that is kept when any of its 8 samples is opaque enough over one leaf (opacity
   ``1 - exp(-sigma * leaf)`` above ``alpha_threshold``), then grown by one cell. Each kept cell
   is split into its 64 leaves; a leaf exists where any of its ``samples`` stratified samples
   is opaque enough, and its density is their mean (a box filter: what a leaf integrates along
   any ray through it).
2. **Visibility.** Training rays are traced through these leaves; a leaf whose largest
   compositing weight on any ray stays below ``min_weight`` (hidden inside an object, behind
   another, or reached by no training ray) is dropped (PlenOctrees' weight-based pruning).
3. **Appearance.** Each remaining leaf's colour is sampled at ``directions`` directions spread
   evenly over the sphere (a Fibonacci lattice) at random points of the leaf and projected onto
   the spherical harmonics up to ``sh_degree`` in logit space (the basis is orthonormal, so the
   projection is a quadrature: ``k = 4 pi / M sum_i logit(c_i) Y(d_i)``); feature leaves are
   fitted with their decoder by regression instead.

Everything is in the source's field space, so world-space (Blender), NDC (LLFF) and box
(nerfstudio) scenes bake alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from nerfzip.data.scene import Scene
from nerfzip.errors import NerfzipError
from nerfzip.fields.base import Field
from nerfzip.fields.octree import MAX_DEPTH, Octree, OctreeConfig, depth_for, sh_count
from nerfzip.fields.sh import spherical_harmonics
from nerfzip.rendering.model import RadianceModel
from nerfzip.rendering.octree import leaf_weights
from nerfzip.rendering.renderer import RenderConfig
from nerfzip.utils.progress import progress_bar
from nerfzip.utils.schema import limits

QUERY_CHUNK = 1 << 16
"""Source field queries per call."""
OCTREE_CHUNK = 1 << 18
"""Rays an octree model renders per call (a 400x400 view in one): each call starts the threads
and waits for the slowest, and the kernel needs only about 200 bytes of working memory per
ray."""
MIN_SIGMA = 1e-2
"""Smallest density a baked leaf starts with: a leaf at exactly 0 would sit on the ReLU's flat
side, where fine-tuning gives it no gradient."""


@dataclass
class BakeConfig:
    """How a field is baked into an octree."""

    depth: int = field(default=0, metadata=limits(0, MAX_DEPTH))
    """Levels below the root (leaves: a 2^depth lattice); 0 chooses from the source: its
    finest grid rounded up to a power of two, within [6, 9] (9 for fields without a grid)."""
    appearance: str = field(default="sh", metadata=limits(choices=("sh", "mlp")))
    """Leaf colour: "sh" (spherical harmonics) or "mlp" (features + a tiny shared decoder)."""
    sh_degree: int = field(default=2, metadata=limits(0, 3))
    """sh: highest band (0-3): 1, 4, 9 or 16 coefficients per colour channel."""
    features: int = field(default=8, metadata=limits(1, 64))
    """mlp: values per leaf."""
    hidden: int = field(default=16, metadata=limits(1, 256))
    """mlp: width of the decoder's hidden layer."""
    samples: int = field(default=27, metadata=limits(1, 512))
    """Density samples per leaf, stratified (rounded to a cube: 8, 27, 64 ...): the leaf
    exists where any is opaque, its density is their mean."""
    directions: int = field(default=32, metadata=limits(1, 1024))
    """Colour samples per leaf (directions over the sphere)."""
    alpha_threshold: float = field(default=0.002, metadata=limits(0.0, 1.0))
    """Geometry: a leaf exists where its opacity over one leaf edge exceeds this."""
    min_weight: float = field(default=0.005, metadata=limits(0.0, 1.0))
    """Visibility: leaves whose largest weight on any traced training ray is below this are
    dropped (0 keeps every leaf; needs the scene's training views)."""
    n_rays: int = field(default=1 << 20, metadata=limits(0))
    """Training rays traced for visibility (0: no visibility pruning)."""
    fit_steps: int = field(default=1000, metadata=limits(0))
    """mlp: regression steps fitting features and decoder to the sampled colours."""
    seed: int = field(default=0, metadata=limits(0))
    """Seed of every random draw."""


def choose_depth(source: Field, cfg: BakeConfig) -> int:
    """``cfg.depth``, or the source's finest grid rounded up to a power of two in [6, 9]."""
    if cfg.depth:
        return cfg.depth
    shape = source.grid_shape()
    return 9 if shape is None else min(9, max(6, depth_for(max(shape) - 1)))


def fibonacci_sphere(n: int) -> Tensor:
    """``n`` unit directions spread evenly over the sphere (the Fibonacci lattice) [n, 3]."""
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1.0 - 2.0 * i / n
    phi = math.pi * (3.0 - math.sqrt(5.0)) * i
    r = torch.sqrt((1.0 - z * z).clamp(min=0.0))
    return torch.stack((r * torch.cos(phi), r * torch.sin(phi), z), -1).float()


def cell_points(aabb: Tensor, depth: int, cells: Tensor, offsets: Tensor) -> Tensor:
    """Points [N, 3] at ``offsets`` [N, 3] (in [0, 1], within the cell) of lattice ``cells``
    [N, 3] of a 2^depth lattice over ``aabb``."""
    lo, hi = aabb[0], aabb[1]
    return lo + (cells.float() + offsets) * ((hi - lo) / (1 << depth))


@torch.no_grad()
def query(fn: Any, *args: Tensor) -> Tensor:
    """``fn(*args)`` over chunks of ``QUERY_CHUNK`` rows."""
    n = args[0].shape[0]
    parts = [fn(*(a[i:i + QUERY_CHUNK] for a in args)) for i in range(0, n, QUERY_CHUNK)]
    return torch.cat(parts) if parts else fn(*(a[:0] for a in args))


@torch.no_grad()
def coarse_cells(model: RadianceModel, depth: int, alpha_threshold: float, quiet: bool
                 ) -> Tensor:
    """Cells [N, 3] of the 2^(depth - 2) lattice that may hold leaves (step 1)."""
    src = model.field
    device = src.aabb.device
    half = 1 << (depth - 1)
    step = float((src.aabb[1] - src.aabb[0]).min()) / (1 << depth)
    occupied = torch.zeros(half, half, half, dtype=torch.bool, device=device)
    bar = progress_bar(half, desc="bake: geometry", quiet=quiet)
    ar = torch.arange(half, device=device)
    for i in range(half):  # one slab of the lattice at a time
        yz = torch.stack(torch.meshgrid(ar, ar, indexing="ij"), -1).view(-1, 2)
        cells = torch.cat((torch.full_like(yz[:, :1], i), yz), -1)
        pts = cell_points(src.aabb, depth - 1, cells, torch.full((1, 3), 0.5, device=device))
        keep = torch.ones(pts.shape[0], dtype=torch.bool, device=device)
        if model.occupancy is not None:
            keep = model.occupancy.query(pts)
        sigma = torch.zeros(pts.shape[0], device=device)
        if bool(keep.any()):
            sigma[keep] = query(src.density, pts[keep]).float()
        occupied[i] = (1.0 - torch.exp(-sigma * step) > alpha_threshold).view(half, half)
        bar.update(1)
    bar.close()
    coarse = torch.nn.functional.max_pool3d(occupied[None, None].float(), 2)
    grown = torch.nn.functional.max_pool3d(coarse, 3, stride=1, padding=1)[0, 0] > 0
    return grown.nonzero()


def stratified(n_cells: int, per_axis: int, gen: torch.Generator, device: torch.device
               ) -> Tensor:
    """Offsets [n_cells, per_axis^3, 3] in [0, 1]: one random point in each of the
    ``per_axis^3`` sub-cells of every cell (stratified: a thin sheet through a cell is found
    far more reliably than by as many independent random points)."""
    k = per_axis
    sub = torch.stack(torch.meshgrid(*(torch.arange(k),) * 3, indexing="ij"), -1).view(-1, 3)
    jitter = torch.rand(n_cells, k ** 3, 3, generator=gen)
    return ((sub + jitter) / k).to(device)


@torch.no_grad()
def leaf_densities(src: Field, depth: int, coarse: Tensor, samples: int, alpha_threshold: float,
                   gen: torch.Generator, quiet: bool) -> tuple[Tensor, Tensor]:
    """The leaves of the ``coarse`` cells (2^(depth - 2) lattice) that hold any opaque sample
    and their mean density (at least ``MIN_SIGMA``, so that fine-tuning can still move it):
    cells [L, 3], sigma [L] (step 1). ``samples`` is rounded to a cube (stratified)."""
    device = src.aabb.device
    sub = torch.stack(torch.meshgrid(*(torch.arange(4, device=device),) * 3, indexing="ij"),
                      -1).view(-1, 3)
    step = float((src.aabb[1] - src.aabb[0]).min()) / (1 << depth)
    per_axis = max(1, round(samples ** (1 / 3)))
    n = per_axis ** 3
    cells_out, sigma_out = [], []
    per = max(1, QUERY_CHUNK // (64 * n))
    bar = progress_bar(coarse.shape[0], desc="bake: leaves", quiet=quiet)
    for i in range(0, coarse.shape[0], per):
        cells = (coarse[i:i + per, None, :] * 4 + sub).reshape(-1, 3)
        offsets = stratified(cells.shape[0], per_axis, gen, device)
        pts = cell_points(src.aabb, depth, cells[:, None, :].expand(-1, n, 3).reshape(-1, 3),
                          offsets.view(-1, 3))
        sigma = src.density(pts).float().view(-1, n)
        keep = 1.0 - torch.exp(-sigma.amax(-1) * step) > alpha_threshold
        cells_out.append(cells[keep])
        sigma_out.append(sigma[keep].mean(-1).clamp(min=MIN_SIGMA))
        bar.update(min(per, coarse.shape[0] - i))
    bar.close()
    if not cells_out:
        return (torch.zeros(0, 3, dtype=torch.int64, device=device),
                torch.zeros(0, device=device))
    return torch.cat(cells_out), torch.cat(sigma_out)


@torch.no_grad()
def visible_leaves(tree: Octree, scene: Scene, n_rays: int, min_weight: float,
                   gen: torch.Generator, stop_transmittance: float, quiet: bool) -> Tensor:
    """Which leaves of ``tree`` (its density set) reach ``min_weight`` on any of ``n_rays``
    random training rays: bool [L] (step 2)."""
    best = torch.zeros(tree.config.leaves, dtype=torch.float64)
    chunk = 1 << 16
    bar = progress_bar(n_rays, desc="bake: visibility", quiet=quiet)
    for start in range(0, n_rays, chunk):
        m = min(chunk, n_rays - start)
        rays, _ = scene.random_rays("train", m, gen)
        best = torch.maximum(best, leaf_weights(tree, rays.to(tree.aabb.device),
                                                stop_transmittance, "max").cpu())
        bar.update(m)
    bar.close()
    return best >= min_weight


@torch.no_grad()
def colour_samples(src: Field, tree: Octree, cells: Tensor, directions: int,
                   gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """The source's colour [L, M, 3] at M directions (the same Fibonacci set for every leaf,
    [M, 3]) at random points of each leaf."""
    dirs = fibonacci_sphere(directions).to(src.aabb.device)
    out = []
    per = max(1, QUERY_CHUNK // directions)
    for i in range(0, cells.shape[0], per):
        c = cells[i:i + per]
        jitter = torch.rand(c.shape[0], directions, 3, generator=gen).to(src.aabb.device)
        pts = cell_points(tree.aabb, tree.config.depth,
                          c[:, None, :].expand(-1, directions, 3).reshape(-1, 3),
                          jitter.view(-1, 3))
        d = dirs[None].expand(c.shape[0], -1, -1).reshape(-1, 3)
        out.append(src.radiance(pts, d).float().view(-1, directions, 3))
    return torch.cat(out) if out else torch.zeros(0, directions, 3), dirs


def project_sh(colours: Tensor, dirs: Tensor, degree: int) -> Tensor:
    """SH coefficients [3 K, L] whose sigmoid reproduces ``colours`` [L, M, 3] seen along
    ``dirs`` [M, 3] (quadrature of the logit over the sphere, K = (degree + 1)^2)."""
    k = sh_count(degree)
    basis = spherical_harmonics(dirs)[:, :k]  # [M, K]
    logit = torch.logit(colours.clamp(1e-3, 1.0 - 1e-3))  # [L, M, 3]
    coeffs = torch.einsum("lmc,mk->lck", logit, basis) * (4.0 * math.pi / dirs.shape[0])
    return coeffs.reshape(colours.shape[0], 3 * k).T.contiguous()


def fit_features(tree: Octree, colours: Tensor, dirs: Tensor, steps: int, seed: int) -> float:
    """Features and decoder of an ``mlp`` octree fitted to the sampled colours [L, M, 3] by
    Adam on random (leaf, direction) pairs; returns the last mean squared error."""
    gen = torch.Generator().manual_seed(seed)
    n_leaves, m = colours.shape[:2]
    opt = torch.optim.Adam([tree.features, *tree.decoder.parameters()], lr=1e-2)
    loss = torch.zeros(())
    for _ in range(steps):
        leaf = torch.randint(0, n_leaves, (8192,), generator=gen)
        j = torch.randint(0, m, (8192,), generator=gen)
        pred = tree.leaf_color(leaf.to(tree.aabb.device), dirs[j])
        loss = ((pred - colours[leaf, j].to(pred.device)) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return float(loss.detach())


def bake(model: RadianceModel, cfg: BakeConfig, scene: Scene | None = None,
         quiet: bool = True) -> tuple[RadianceModel, dict[str, Any]]:
    """The model baked into an octree model (rendered by leaf traversal) and a report."""
    src = model.field
    src.eval()
    depth = choose_depth(src, cfg)
    if depth < 2:
        raise NerfzipError("bake: depth must be at least 2")
    gen = torch.Generator().manual_seed(cfg.seed)
    coarse = coarse_cells(model, depth, cfg.alpha_threshold, quiet)
    cells, sigma = leaf_densities(src, depth, coarse, cfg.samples, cfg.alpha_threshold, gen,
                                  quiet)
    config = OctreeConfig(depth=depth, appearance=cfg.appearance, sh_degree=cfg.sh_degree,
                          features=cfg.features, hidden=cfg.hidden)
    candidates = cells.shape[0]
    tree, order = Octree.from_leaves(src.aabb, cells.cpu(), config, seed=cfg.seed)
    tree.to(src.aabb.device)
    with torch.no_grad():
        tree.sigma.copy_(sigma[order.to(sigma.device)])
    report: dict[str, Any] = {"depth": depth, "candidate_leaves": candidates}
    if cfg.min_weight > 0 and cfg.n_rays > 0 and scene is not None:
        keep = visible_leaves(tree, scene, cfg.n_rays, cfg.min_weight, gen,
                              model.render.stop_transmittance, quiet).to(cells.device)
        cells, sigma = tree.structure().leaf_cells()[keep.to(tree.masks.device)], \
            tree.sigma.detach()[keep]
        tree, order = Octree.from_leaves(src.aabb, cells.cpu(), config, seed=cfg.seed)
        tree.to(src.aabb.device)
        with torch.no_grad():
            tree.sigma.copy_(sigma[order.to(sigma.device)])
        report["visibility_rays"] = cfg.n_rays
    cells = tree.structure().leaf_cells().to(src.aabb.device)
    colours, dirs = colour_samples(src, tree, cells, cfg.directions, gen)
    with torch.no_grad():
        if cfg.appearance == "sh":
            tree.sh.copy_(project_sh(colours, dirs, cfg.sh_degree).to(tree.sh.device))
    if cfg.appearance == "mlp":
        report["fit_mse"] = fit_features(tree, colours, dirs, cfg.fit_steps, cfg.seed)
    report.update({"leaves": tree.config.leaves, "nodes": tree.config.nodes,
                   "float32_bytes": 4 * sum(p.numel() for p in tree.parameters())
                   + tree.masks.numel()})
    render = RenderConfig(sampler="octree",
                          stop_transmittance=model.render.stop_transmittance,
                          weight_threshold=model.render.weight_threshold,
                          chunk=OCTREE_CHUNK)
    meta = {k: v for k, v in model.meta.items() if k not in ("decode",)}
    return RadianceModel(tree, render, model.space, None, meta), report
