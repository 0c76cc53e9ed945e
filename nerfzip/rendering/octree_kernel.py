"""The fast CPU path of ``rendering.octree``: a numba kernel, parallel over rays, that walks each
ray through the octree's cells (descending from the root at each step, skipping an empty node
of any level whole), integrates each leaf exactly over its segment, shades it as soon as its
weight is visible and stops the ray at ``stop_transmittance`` (early termination).

Each step restarts the walk from the deepest node the new cell shares with the previous one
(found from the highest bit in which their lattice coordinates differ), so moving to a
neighbouring leaf costs a level or two, not ``depth``.

It computes what the PyTorch reference (``octree.trace`` + ``octree.composite_segments``)
computes, step for step in the same order; ``tests/test_octree.py`` holds the two to 1e-4.
Spherical-harmonic leaves are shaded inside the kernel; feature leaves (``appearance="mlp"``)
are collected by the kernel as (ray, leaf, weight) and decoded by their MLP in PyTorch.
"""

from __future__ import annotations

import math
import weakref
from typing import Any

import numpy as np
import torch
from torch import Tensor

from nerfzip.data.cameras import RayBundle
from nerfzip.fields.octree import POPCOUNT, Octree, sh_count
from nerfzip.fields.sh import spherical_harmonics
from nerfzip.rendering.octree import LOOKUP_EPS, grid_rays, ray_range

try:
    import numba
    from numba import njit, prange
except ImportError:  # the reference renders everything without it
    numba = None


PARALLEL_CHUNK = 64
"""Rays a thread takes at a time: rays that miss the scene finish at once and rays through it
take long, so small chunks handed out dynamically balance the threads (numba's default splits
the rays into one static block per thread)."""


def available() -> bool:
    """Whether numba is installed (``pip install numba``; a dependency of nerfzip)."""
    return numba is not None


if numba is not None:
    @njit(cache=True, inline="always")
    def _step(r, t, g0, dg, inv, eps_t, t_exit, masks, first, popc, depth, path,
              prev):  # noqa: ANN001
        """One cell of ray ``r`` at ``t``: (leaf or -1, the t where the cell is left).

        ``path[l]`` holds the node of level l above the previous cell (the first ``prev[3]``
        levels are valid) and ``prev[:3]`` that cell: the walk restarts from the deepest node
        the two cells share instead of the root (a ray mostly moves to a neighbouring cell)."""
        n = 1 << depth
        tl = t + eps_t
        ix = min(max(int(math.floor(g0[r, 0] + tl * dg[r, 0])), 0), n - 1)
        iy = min(max(int(math.floor(g0[r, 1] + tl * dg[r, 1])), 0), n - 1)
        iz = min(max(int(math.floor(g0[r, 2] + tl * dg[r, 2])), 0), n - 1)
        diff = (ix ^ prev[0]) | (iy ^ prev[1]) | (iz ^ prev[2])
        shared = depth
        while diff:
            diff >>= 1
            shared -= 1
        start = min(shared, prev[3] - 1)
        node = path[start]
        level = depth
        valid = depth + 1
        for l in range(start, depth):
            bit = depth - 1 - l
            slot = ((ix >> bit) & 1) | (((iy >> bit) & 1) << 1) | (((iz >> bit) & 1) << 2)
            m = np.int64(masks[node])
            if not (m >> slot) & 1:
                level = l + 1  # an empty child of this node: a cube of 2^(depth - l - 1)
                valid = l + 1
                break
            node = first[node] + popc[m & ((1 << slot) - 1)]
            path[l + 1] = node
        prev[0] = ix
        prev[1] = iy
        prev[2] = iz
        prev[3] = valid
        leaf = node if valid == depth + 1 else -1  # (an empty last level has level depth)
        size = 1 << (depth - level)
        t_out = np.inf
        for a, i in ((0, ix), (1, iy), (2, iz)):
            lo = (i // size) * size
            bound = lo + size if dg[r, a] > 0 else lo
            ta = (bound - g0[r, a]) * inv[r, a]
            t_out = min(t_out, ta)
        t_out = min(max(t_out, tl), t_exit)
        return leaf, t_out

    @njit(cache=True, inline="always")
    def _walk_state(scratch, r):  # noqa: ANN001
        """A fresh walk for ray ``r``: its row of ``scratch`` (rays x (depth + 5), made by the
        caller: numba would hoist an allocation here out of the parallel loop, and threads
        would share it) as the path, with the root as its only valid node, and the previous
        cell."""
        row = scratch[r]
        depth = row.shape[0] - 5
        path = row[:depth + 1]
        prev = row[depth + 1:]
        path[0] = 0
        prev[0] = prev[1] = prev[2] = 0
        prev[3] = 1
        return path, prev

    @njit(parallel=True, cache=True)
    def _render_sh(g0, dg, inv, eps_t, norm, t_enter, t_exit, masks, first, popc, depth,
                   sigma, coeffs, basis, background, stop, threshold, rgb, acc,
                   steps, cells, scratch):  # noqa: ANN001
        k = basis.shape[1]
        for r in prange(g0.shape[0]):
            t = t_enter[r]
            te = t_exit[r]
            trans = 1.0
            c0 = c1 = c2 = 0.0
            count = 0
            visited = 0
            path, prev = _walk_state(scratch, r)
            while t < te and trans > stop:
                leaf, t_out = _step(r, t, g0, dg, inv, eps_t[r], te, masks, first, popc,
                                    depth, path, prev)
                visited += 1
                if leaf >= 0:
                    count += 1
                    s = sigma[leaf]
                    if s > 0.0:
                        decay = math.exp(-s * (t_out - t) * norm[r])
                        w = trans * (1.0 - decay)
                        if w > threshold:
                            x0 = x1 = x2 = 0.0
                            for j in range(k):
                                b = basis[r, j]
                                x0 += coeffs[leaf, j] * b
                                x1 += coeffs[leaf, k + j] * b
                                x2 += coeffs[leaf, 2 * k + j] * b
                            c0 += w / (1.0 + math.exp(-x0))
                            c1 += w / (1.0 + math.exp(-x1))
                            c2 += w / (1.0 + math.exp(-x2))
                        trans *= decay
                t = t_out
            rgb[r, 0] = c0 + trans * background[0]
            rgb[r, 1] = c1 + trans * background[1]
            rgb[r, 2] = c2 + trans * background[2]
            acc[r] = 1.0 - trans
            steps[r] = count
            cells[r] = visited

    @njit(parallel=True, cache=True)
    def _visible(g0, dg, inv, eps_t, norm, t_enter, t_exit, masks, first, popc, depth, sigma,
                 stop, threshold, offsets, out_leaf, out_weight, acc, count_only, scratch
                 ):  # noqa: ANN001
        for r in prange(g0.shape[0]):
            t = t_enter[r]
            te = t_exit[r]
            trans = 1.0
            found = 0
            path, prev = _walk_state(scratch, r)
            while t < te and trans > stop:
                leaf, t_out = _step(r, t, g0, dg, inv, eps_t[r], te, masks, first, popc,
                                    depth, path, prev)
                if leaf >= 0:
                    s = sigma[leaf]
                    if s > 0.0:
                        decay = math.exp(-s * (t_out - t) * norm[r])
                        w = trans * (1.0 - decay)
                        if w > threshold:
                            if not count_only:
                                out_leaf[offsets[r] + found] = leaf
                                out_weight[offsets[r] + found] = w
                            found += 1
                        trans *= decay
                t = t_out
            acc[r] = 1.0 - trans
            if count_only:
                offsets[r] = found


    @njit(parallel=True, cache=True)
    def _segments(g0, dg, inv, eps_t, norm, t_enter, t_exit, masks, first, popc, depth, sigma,
                  stop, offsets, out_leaf, out_length, count_only, scratch):  # noqa: ANN001
        for r in prange(g0.shape[0]):
            t = t_enter[r]
            te = t_exit[r]
            trans = 1.0
            found = 0
            path, prev = _walk_state(scratch, r)
            while t < te and trans > stop:
                leaf, t_out = _step(r, t, g0, dg, inv, eps_t[r], te, masks, first, popc,
                                    depth, path, prev)
                if leaf >= 0:
                    length = (t_out - t) * norm[r]
                    if not count_only:
                        out_leaf[offsets[r] + found] = leaf
                        out_length[offsets[r] + found] = length
                    found += 1
                    trans *= math.exp(-sigma[leaf] * length)
                t = t_out
            if count_only:
                offsets[r] = found

    @njit(cache=True)
    def _leaf_weights(g0, dg, inv, eps_t, norm, t_enter, t_exit, masks, first, popc, depth,
                      sigma, stop, out, take_max, scratch):  # noqa: ANN001
        # Serial: rays write to shared leaves; one core does ~10^7 cells a second.
        for r in range(g0.shape[0]):
            t = t_enter[r]
            te = t_exit[r]
            trans = 1.0
            path, prev = _walk_state(scratch, r)
            while t < te and trans > stop:
                leaf, t_out = _step(r, t, g0, dg, inv, eps_t[r], te, masks, first, popc,
                                    depth, path, prev)
                if leaf >= 0:
                    s = sigma[leaf]
                    if s > 0.0:
                        decay = math.exp(-s * (t_out - t) * norm[r])
                        w = trans * (1.0 - decay)
                        if not take_max:
                            out[leaf] += w
                        elif w > out[leaf]:
                            out[leaf] = w
                        trans *= decay
                t = t_out


_ARRAYS: weakref.WeakKeyDictionary[Octree, tuple[Any, dict[str, np.ndarray]]] = \
    weakref.WeakKeyDictionary()


def leaf_arrays(field: Octree) -> dict[str, np.ndarray]:
    """The field's structure and leaf values as the kernel reads them (leaf-major colour
    coefficients), cached until a tensor changes."""
    tensors = [field.masks, field.sigma] + ([field.sh] if field.config.appearance == "sh"
                                            else [])
    key = tuple((t.data_ptr(), t._version) for t in tensors)
    cached = _ARRAYS.get(field)
    if cached is not None and cached[0] == key:
        return cached[1]
    s = field.structure()
    arrays = {"masks": s.masks.cpu().numpy(), "first": s.first.cpu().numpy(),
              "sigma": torch.relu(field.sigma.detach()).float().cpu().numpy()}
    if field.config.appearance == "sh":
        # Leaf-major float32: a leaf's coefficients in one or two cache lines (the kernel
        # computes in float64 from these exact values, as the reference does in float32).
        arrays["coeffs"] = field.sh.detach().T.float().contiguous().cpu().numpy()
    _ARRAYS[field] = (key, arrays)
    return arrays


def scratch(rays: int, field: Octree) -> np.ndarray:
    """Per-ray working memory of the walk (its path of nodes and previous cell)."""
    return np.zeros((rays, field.config.depth + 5), dtype=np.int64)


def ray_arrays(field: Octree, rays: RayBundle) -> dict[str, np.ndarray]:
    """Rays in lattice units, as the reference computes them (float64)."""
    depth = field.config.depth
    g0, dg = grid_rays(rays, field.aabb, depth)
    t_enter, t_exit = ray_range(rays, field.aabb)
    safe = torch.where(dg.abs() < 1e-12, torch.full_like(dg, 1e-12), dg)
    eps_t = LOOKUP_EPS / dg.abs().amax(dim=-1).clamp(min=1e-12)
    norm = rays.directions.double().norm(dim=-1)
    return {k: v.contiguous().numpy() for k, v in
            (("g0", g0), ("dg", dg), ("inv", 1.0 / safe), ("eps_t", eps_t), ("norm", norm),
             ("t_enter", t_enter), ("t_exit", t_exit))}


@torch.no_grad()
def render(field: Octree, rays: RayBundle, background: Tensor, stop_transmittance: float,
           weight_threshold: float) -> dict[str, Tensor]:
    """``octree.render_octree`` at inference on the CPU, by the numba kernel."""
    if numba is None:
        raise RuntimeError("the octree kernel needs numba (pip install numba)")
    r = len(rays)
    ra = ray_arrays(field, rays)
    la = leaf_arrays(field)
    geo = (ra["g0"], ra["dg"], ra["inv"], ra["eps_t"], ra["norm"], ra["t_enter"],
           ra["t_exit"], la["masks"], la["first"], POPCOUNT.numpy(), field.config.depth,
           la["sigma"])
    bg = background.double().cpu().numpy()
    acc = np.zeros(r)
    if field.config.appearance == "sh":
        k = sh_count(field.config.sh_degree)
        basis = spherical_harmonics(rays.viewdirs.double())[:, :k].contiguous().numpy()
        rgb = np.zeros((r, 3))
        steps = np.zeros(r, dtype=np.int64)
        cells = np.zeros(r, dtype=np.int64)
        with numba.parallel_chunksize(PARALLEL_CHUNK):
            _render_sh(*geo, la["coeffs"], basis, bg, stop_transmittance, weight_threshold, rgb,
                       acc, steps, cells, scratch(r, field))
        return {"rgb": torch.from_numpy(rgb).float(), "acc": torch.from_numpy(acc).float(),
                "num_samples": torch.tensor(float(steps.sum())),
                "cells_visited": torch.tensor(float(cells.sum()))}
    counts = np.zeros(r, dtype=np.int64)
    empty_i, empty_w = np.zeros(0, dtype=np.int64), np.zeros(0)
    with numba.parallel_chunksize(PARALLEL_CHUNK):
        _visible(*geo, stop_transmittance, weight_threshold, counts, empty_i, empty_w, acc, True,
                 scratch(r, field))
    offsets = np.cumsum(counts) - counts
    leaf = np.zeros(int(counts.sum()), dtype=np.int64)
    weight = np.zeros(leaf.shape[0])
    with numba.parallel_chunksize(PARALLEL_CHUNK):
        _visible(*geo, stop_transmittance, weight_threshold, offsets, leaf, weight, acc, False,
                 scratch(r, field))
    ray_of = torch.repeat_interleave(torch.arange(r), torch.from_numpy(counts))
    leaf_t = torch.from_numpy(leaf)
    colours = field.leaf_color(leaf_t, rays.viewdirs[ray_of])
    rgb = torch.zeros(r, 3)
    rgb.index_add_(0, ray_of, torch.from_numpy(weight).float()[:, None] * colours)
    acc_t = torch.from_numpy(acc).float()
    rgb = rgb + (1.0 - acc_t)[:, None] * background.cpu()
    return {"rgb": rgb, "acc": acc_t, "num_samples": torch.tensor(float(leaf.shape[0]))}


@torch.no_grad()
def leaf_weights(field: Octree, rays: RayBundle, stop_transmittance: float, reduce: str
                 ) -> Tensor:
    """``octree.leaf_weights`` by the numba kernel."""
    if numba is None:
        raise RuntimeError("the octree kernel needs numba (pip install numba)")
    ra = ray_arrays(field, rays.to("cpu"))
    la = leaf_arrays(field)
    out = np.zeros(field.config.leaves)
    _leaf_weights(ra["g0"], ra["dg"], ra["inv"], ra["eps_t"], ra["norm"], ra["t_enter"],
                  ra["t_exit"], la["masks"], la["first"], POPCOUNT.numpy(), field.config.depth,
                  la["sigma"], stop_transmittance, out, reduce == "max",
                  scratch(len(rays), field))
    return torch.from_numpy(out)


@torch.no_grad()
def trace(field: Octree, rays: RayBundle, stop_transmittance: float
          ) -> tuple[Tensor, Tensor]:
    """``octree.trace`` by the numba kernel: the leaf segments of every ray as padded
    ``leaf`` [R, S] (-1 past the last) and ``length`` [R, S] (what fine-tuning composites
    differentiably)."""
    if numba is None:
        raise RuntimeError("the octree kernel needs numba (pip install numba)")
    r = len(rays)
    ra = ray_arrays(field, rays.to("cpu"))
    la = leaf_arrays(field)
    geo = (ra["g0"], ra["dg"], ra["inv"], ra["eps_t"], ra["norm"], ra["t_enter"],
           ra["t_exit"], la["masks"], la["first"], POPCOUNT.numpy(), field.config.depth,
           la["sigma"], stop_transmittance)
    counts = np.zeros(r, dtype=np.int64)
    work = scratch(r, field)
    with numba.parallel_chunksize(PARALLEL_CHUNK):
        _segments(*geo, counts, np.zeros(0, dtype=np.int64), np.zeros(0), True, work)
    offsets = np.cumsum(counts) - counts
    leaf = np.zeros(int(counts.sum()), dtype=np.int64)
    length = np.zeros(leaf.shape[0])
    with numba.parallel_chunksize(PARALLEL_CHUNK):
        _segments(*geo, offsets, leaf, length, False, work)
    s = int(counts.max()) if r else 0
    ray = np.repeat(np.arange(r), counts)
    pos = np.arange(leaf.shape[0]) - np.repeat(offsets, counts)
    leaf_out = np.full((r, s), -1, dtype=np.int64)
    len_out = np.zeros((r, s), dtype=np.float32)
    leaf_out[ray, pos] = leaf
    len_out[ray, pos] = length
    device = rays.origins.device
    return torch.from_numpy(leaf_out).to(device), torch.from_numpy(len_out).to(device)
