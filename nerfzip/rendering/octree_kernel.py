"""The fast CPU path of ``rendering.octree``: a numba kernel, parallel over rays, that walks each
ray through the octree's cells (skipping an empty node of any level whole), integrates each
leaf exactly over its segment, shades it as soon as its weight is visible and stops the ray at
``stop_transmittance`` (early termination).

Each step restarts the walk from the deepest node the new cell shares with the previous one
(found from the highest bit in which their lattice coordinates differ), so moving to a
neighbouring leaf costs a level or two, not ``depth``. The kernel takes the rays as they are
(float32 origins, directions, view directions, near, far) and does all per-ray set-up itself
(box entry and exit, lattice mapping, the view direction's spherical harmonics): in PyTorch that
set-up cost more than the walk.

One walk (``_walk``) serves four uses, chosen by ``mode``: shading spherical-harmonic leaves
(``SHADE``), collecting the visible (ray, leaf, weight) of feature leaves, whose colour PyTorch
decodes with their MLP (``VISIBLE``), collecting every leaf segment for differentiable
compositing in fine-tuning (``SEGMENTS``), and accumulating each leaf's weights (``WEIGHT_SUM``,
``WEIGHT_MAX``; serial: rays write to shared leaves).

It computes what the PyTorch reference (``octree.trace`` + ``octree.composite_segments``)
computes, step for step in the same order; ``tests/test_octree.py`` holds the two to 1e-4.
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
from nerfzip.fields.sh import SH_C0, SH_C1, SH_C2, SH_C3
from nerfzip.rendering.octree_lattice import LOOKUP_EPS, PARALLEL_EPS, lattice_scale

try:
    import numba
    from numba import njit, prange
except ImportError:  # the reference renders everything without it
    numba = None


PARALLEL_CHUNK = 64
"""Rays a thread takes at a time: rays that miss the scene finish at once and rays through it
take long, so small chunks handed out dynamically balance the threads (numba's default splits
the rays into one static block per thread)."""

SHADE, VISIBLE, SEGMENTS, WEIGHT_SUM, WEIGHT_MAX = 0, 1, 2, 3, 4
"""What a walk does with the leaves it crosses (see the module docstring)."""


def available() -> bool:
    """Whether numba is installed (``pip install numba``; a dependency of nerfzip)."""
    return numba is not None


if numba is not None:
    @njit(cache=True, inline="always")
    def _exit(g, dg, inv, i, size):  # noqa: ANN001
        """Where the ray leaves, along one axis, the cube of ``size`` cells holding cell ``i``
        (``inf`` when it runs parallel to that axis's faces)."""
        if abs(dg) < PARALLEL_EPS:
            return np.inf
        lo = (i // size) * size
        bound = lo + size if dg > 0 else lo
        return (bound - g) * inv

    @njit(cache=True, inline="always")
    def _step(t, ray, eps_t, t_exit, masks, first, popc, depth, path, prev):  # noqa: ANN001
        """One cell of the ray at ``t``: (leaf or -1, the t where the cell is left).

        ``ray`` holds the ray in lattice units (``g0``, ``dg``, ``1 / dg``); ``path[l]`` the
        node of level l above the previous cell (the first ``prev[3]`` levels are valid) and
        ``prev[:3]`` that cell: the walk restarts from the deepest node the two cells share
        instead of the root (a ray mostly moves to a neighbouring cell)."""
        n = 1 << depth
        tl = t + eps_t
        ix = min(max(int(math.floor(ray[0] + tl * ray[3])), 0), n - 1)
        iy = min(max(int(math.floor(ray[1] + tl * ray[4])), 0), n - 1)
        iz = min(max(int(math.floor(ray[2] + tl * ray[5])), 0), n - 1)
        diff = (ix ^ prev[0]) | (iy ^ prev[1]) | (iz ^ prev[2])
        shared = depth
        while diff:
            diff >>= 1
            shared -= 1
        node = path[min(shared, prev[3] - 1)]
        level = depth
        valid = depth + 1
        for lv in range(min(shared, prev[3] - 1), depth):
            bit = depth - 1 - lv
            slot = ((ix >> bit) & 1) | (((iy >> bit) & 1) << 1) | (((iz >> bit) & 1) << 2)
            m = np.int64(masks[node])
            if not (m >> slot) & 1:
                level = lv + 1  # an empty child of this node: a cube of 2^(depth - lv - 1)
                valid = lv + 1
                break
            node = first[node] + popc[m & ((1 << slot) - 1)]
            path[lv + 1] = node
        prev[0] = ix
        prev[1] = iy
        prev[2] = iz
        prev[3] = valid
        leaf = node if valid == depth + 1 else -1  # (an empty last level has level depth)
        size = 1 << (depth - level)
        t_out = min(_exit(ray[0], ray[3], ray[6], ix, size),
                    _exit(ray[1], ray[4], ray[7], iy, size),
                    _exit(ray[2], ray[5], ray[8], iz, size))
        return leaf, min(max(t_out, tl), t_exit)

    @njit(cache=True, inline="always")
    def _setup(r, origins, directions, near, far, box, scale, ray):  # noqa: ANN001
        """Ray ``r`` in lattice units into ``ray`` (``g0``, ``dg``, ``1 / dg``); returns its
        [t_enter, t_exit] inside the box ``box`` [2, 3] and [near, far], the lookup offset in
        t and |d| (as ``octree_lattice.grid_rays`` / ``ray_range`` and ``samplers.ray_aabb``
        compute them)."""
        t_enter = -np.inf
        t_exit = np.inf
        big = 0.0
        norm2 = 0.0
        for a in range(3):
            o = np.float64(origins[r, a])
            d = np.float64(directions[r, a])
            norm2 += d * d
            inv = 1.0 / (d if abs(d) >= 1e-9 else 1e-9)
            t0 = (box[0, a] - o) * inv
            t1 = (box[1, a] - o) * inv
            t_enter = max(t_enter, min(t0, t1))
            t_exit = min(t_exit, max(t0, t1))
            dg = d * scale[a]
            ray[a] = (o - box[0, a]) * scale[a]
            ray[3 + a] = dg
            ray[6 + a] = 1.0 / dg if abs(dg) >= PARALLEL_EPS else 0.0
            big = max(big, abs(dg))
        t_enter = max(t_enter, np.float64(near[r]))
        t_exit = min(t_exit, np.float64(far[r]))
        return t_enter, t_exit, LOOKUP_EPS / max(big, 1e-12), math.sqrt(norm2)

    @njit(cache=True, inline="always")
    def _sh_basis(x, y, z, k, out):  # noqa: ANN001
        """The first ``k`` real SH of the unit direction (x, y, z) into ``out``
        (``fields.sh.spherical_harmonics``, term for term)."""
        out[0] = SH_C0
        if k > 1:
            out[1] = -SH_C1 * y
            out[2] = SH_C1 * z
            out[3] = -SH_C1 * x
        if k > 4:
            xx, yy, zz = x * x, y * y, z * z
            out[4] = SH_C2[0] * x * y
            out[5] = -SH_C2[0] * y * z
            out[6] = SH_C2[1] * (3.0 * zz - 1.0)
            out[7] = -SH_C2[0] * x * z
            out[8] = SH_C2[2] * (xx - yy)
            if k > 9:
                out[9] = -SH_C3[0] * y * (3.0 * xx - yy)
                out[10] = SH_C3[1] * x * y * z
                out[11] = -SH_C3[2] * y * (5.0 * zz - 1.0)
                out[12] = SH_C3[3] * z * (5.0 * zz - 3.0)
                out[13] = -SH_C3[2] * x * (5.0 * zz - 1.0)
                out[14] = SH_C3[4] * z * (xx - yy)
                out[15] = -SH_C3[0] * x * (xx - 3.0 * yy)

    @njit(cache=True, inline="always")
    def _walk(r, mode, origins, directions, viewdirs, near, far, box, scale, masks, first, popc,
              depth, sigma, stop, threshold, coeffs, palette, k, background, rgb, acc, segments,
              cells, offsets, rec_leaf, rec_value, totals, ints, floats):  # noqa: ANN001
        """Walk ray ``r`` front to back and do ``mode`` with its leaves.

        In: the rays as given (origins, directions, viewdirs, near, far); the tree (box,
        lattice scale, masks, first child, popcounts, depth, sigma, stop_transmittance,
        weight_threshold); SH shading (coefficients [L, 3k] leaf-major, or [P, 3k] and each
        leaf's row ``palette`` [L]; k; background).
        Out: per ray (rgb, acc, segments, cells), per record (offsets per ray, leaf, value;
        empty record arrays: count them only), per leaf (``totals``).
        Work: ``ints`` [R, depth + 5] and ``floats`` [R, 9 + k] per ray, made by the caller
        (numba would hoist an allocation here out of the parallel loop and threads would
        share it). Arguments are flat (numba's parallel loops lost writes to arrays passed
        in tuples) and fewer than 31 (beyond, Python packs a call's arguments in a tuple)."""
        path = ints[r, :depth + 1]
        prev = ints[r, depth + 1:]
        path[0] = 0
        prev[0] = prev[1] = prev[2] = 0
        prev[3] = 1
        ray = floats[r, :9]
        basis = floats[r, 9:]
        t, te, eps_t, norm = _setup(r, origins, directions, near, far, box, scale, ray)
        if mode == SHADE:
            _sh_basis(np.float64(viewdirs[r, 0]), np.float64(viewdirs[r, 1]),
                      np.float64(viewdirs[r, 2]), k, basis)
        count_only = rec_leaf.shape[0] == 0
        trans = 1.0
        c0 = c1 = c2 = 0.0
        found = 0
        visited = 0
        while t < te and trans > stop:
            leaf, t_out = _step(t, ray, eps_t, te, masks, first, popc, depth, path, prev)
            visited += 1
            if leaf >= 0:
                length = (t_out - t) * norm
                s = np.float64(sigma[leaf])
                decay = math.exp(-s * length) if s > 0.0 else 1.0
                w = trans * (1.0 - decay)
                if mode == SEGMENTS:
                    if not count_only:
                        rec_leaf[offsets[r] + found] = leaf
                        rec_value[offsets[r] + found] = length
                    found += 1
                elif mode == SHADE:
                    found += 1
                    if w > threshold:
                        row = palette[leaf] if palette.shape[0] else leaf
                        x0 = x1 = x2 = 0.0
                        for j in range(k):
                            b = basis[j]
                            x0 += coeffs[row, j] * b
                            x1 += coeffs[row, k + j] * b
                            x2 += coeffs[row, 2 * k + j] * b
                        c0 += w / (1.0 + math.exp(-x0))
                        c1 += w / (1.0 + math.exp(-x1))
                        c2 += w / (1.0 + math.exp(-x2))
                elif mode == VISIBLE:
                    if s > 0.0 and w > threshold:
                        if not count_only:
                            rec_leaf[offsets[r] + found] = leaf
                            rec_value[offsets[r] + found] = w
                        found += 1
                elif s > 0.0:
                    if mode == WEIGHT_SUM:
                        totals[leaf] += w
                    elif w > totals[leaf]:
                        totals[leaf] = w
                trans *= decay
            t = t_out
        if mode == SHADE:
            rgb[r, 0] = c0 + trans * background[0]
            rgb[r, 1] = c1 + trans * background[1]
            rgb[r, 2] = c2 + trans * background[2]
        acc[r] = 1.0 - trans
        segments[r] = found
        cells[r] = visited

    @njit(parallel=True, cache=True)
    def _walk_parallel(mode, origins, directions, viewdirs, near, far, box, scale, masks, first,
                       popc, depth, sigma, stop, threshold, coeffs, palette, k, background, rgb,
                       acc, segments, cells, offsets, rec_leaf, rec_value, totals, ints,
                       floats):  # noqa: ANN001
        for r in prange(origins.shape[0]):
            _walk(r, mode, origins, directions, viewdirs, near, far, box, scale, masks, first,
                  popc, depth, sigma, stop, threshold, coeffs, palette, k, background, rgb, acc,
                  segments, cells, offsets, rec_leaf, rec_value, totals, ints, floats)

    @njit(cache=True)
    def _walk_serial(mode, origins, directions, viewdirs, near, far, box, scale, masks, first,
                     popc, depth, sigma, stop, threshold, coeffs, palette, k, background, rgb, acc,
                     segments, cells, offsets, rec_leaf, rec_value, totals, ints,
                     floats):  # noqa: ANN001
        for r in range(origins.shape[0]):
            _walk(r, mode, origins, directions, viewdirs, near, far, box, scale, masks, first,
                  popc, depth, sigma, stop, threshold, coeffs, palette, k, background, rgb, acc,
                  segments, cells, offsets, rec_leaf, rec_value, totals, ints, floats)


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
    lo, scale = lattice_scale(field.aabb.cpu(), field.config.depth)
    # int32 child pointers (nodes < 2^30): the walk reads one per level, half the cache lines
    arrays = {"masks": s.masks.cpu().numpy(), "first": s.first.cpu().int().numpy(),
              "sigma": torch.relu(field.sigma.detach()).float().cpu().numpy(),
              "box": torch.stack([lo, lo + (1 << field.config.depth) / scale]).numpy(),
              "scale": scale.numpy(), "popcount": POPCOUNT.numpy()}
    if field.config.appearance == "sh":
        # Leaf-major float32: a leaf's coefficients in one or two cache lines (the kernel
        # computes in float64 from these exact values, as the reference does in float32).
        coeffs = field.sh.detach().T.float().contiguous().cpu().numpy()
        arrays["coeffs"], arrays["palette"] = palette(coeffs)
    _ARRAYS[field] = (key, arrays)
    return arrays


def palette(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``rows`` [L, C] as a table of its distinct rows and each row's index in it, when the
    rows take at most half as many values (vector-quantized leaves: the table is the
    codebook plus the leaves kept exact); else ``rows`` and no index.

    Shading is bound by fetching each visible leaf's coefficients from memory; a codebook of
    a few thousand rows stays in cache, where the leaves' own rows (over 100 MB on lego) do
    not. Rows are grouped by a hash of their bits and the table is checked to reproduce
    ``rows`` exactly, so that a collision can only cost speed, never change an image."""
    none = (rows, np.zeros(0, dtype=np.int32))
    if rows.shape[0] < 2:
        return none
    bits = np.ascontiguousarray(rows, dtype=np.float32).view(np.uint32).astype(np.uint64)
    hashed = np.zeros(rows.shape[0], dtype=np.uint64)
    for j in range(rows.shape[1]):  # FNV-style: equal rows hash equal, bit for bit
        hashed = (hashed ^ bits[:, j]) * np.uint64(0x100000001B3)
    _, first, index = np.unique(hashed, return_index=True, return_inverse=True)
    if 2 * first.shape[0] > rows.shape[0]:
        return none
    table = np.ascontiguousarray(rows[first])
    index = index.astype(np.int32).reshape(-1)
    if not np.array_equal(table[index], rows):
        return none
    return table, index


def _ray_arrays(rays: RayBundle) -> tuple[np.ndarray, ...]:
    """The rays as the kernel reads them: float32 arrays, shared with the tensors when they
    already are contiguous float32 on the CPU."""
    return tuple(t.detach().to("cpu", torch.float32).contiguous().numpy() for t in
                 (rays.origins, rays.directions, rays.viewdirs, rays.near, rays.far))


def _run(field: Octree, rays: RayBundle, mode: int, stop_transmittance: float,
         weight_threshold: float = 0.0, background: Tensor | None = None,
         records: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
         totals: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Run the kernel's walk over ``rays`` in ``mode``; returns its per-ray outputs."""
    r = len(rays)
    la = leaf_arrays(field)
    depth = field.config.depth
    tree = (la["box"], la["scale"], la["masks"], la["first"], la["popcount"], depth,
            la["sigma"], float(stop_transmittance), float(weight_threshold))
    k = sh_count(field.config.sh_degree) if mode == SHADE else 0
    coeffs = la["coeffs"] if mode == SHADE else np.zeros((1, 3), dtype=np.float32)
    palette = la["palette"] if mode == SHADE else np.zeros(0, dtype=np.int32)
    bg = (np.zeros(3) if background is None
          else background.detach().double().cpu().numpy())
    per_ray = {"rgb": np.zeros((r if mode == SHADE else 0, 3), dtype=np.float32),
               "acc": np.zeros(r, dtype=np.float32),
               "segments": np.zeros(r, dtype=np.int64), "cells": np.zeros(r, dtype=np.int64)}
    offsets, rec_leaf, rec_value = records if records is not None else (
        np.zeros(r, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0))
    out = (per_ray["rgb"], per_ray["acc"], per_ray["segments"], per_ray["cells"], offsets,
           rec_leaf, rec_value, totals if totals is not None else np.zeros(0))
    work = (np.empty((r, depth + 5), dtype=np.int64), np.empty((r, 9 + k)))
    args = (mode, *_ray_arrays(rays), *tree, coeffs, palette, k, bg, *out, *work)
    if mode in (WEIGHT_SUM, WEIGHT_MAX):
        _walk_serial(*args)
    else:
        with numba.parallel_chunksize(PARALLEL_CHUNK):
            _walk_parallel(*args)
    return per_ray


def _records(field: Octree, rays: RayBundle, mode: int, stop_transmittance: float,
             weight_threshold: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                     np.ndarray]:
    """The (leaf, value) records of every ray in ``mode`` (VISIBLE: weights, SEGMENTS:
    lengths), front to back per ray, by two walks: one counts, one fills. Returns the
    records per ray, leaf, value and the second walk's opacity per ray."""
    counts = _run(field, rays, mode, stop_transmittance, weight_threshold)["segments"]
    offsets = np.cumsum(counts) - counts
    leaf = np.zeros(int(counts.sum()), dtype=np.int64)
    value = np.zeros(leaf.shape[0])
    acc = _run(field, rays, mode, stop_transmittance, weight_threshold,
                records=(offsets, leaf, value))["acc"]
    return counts, leaf, value, acc


def _need_numba() -> None:
    if numba is None:
        raise RuntimeError("the octree kernel needs numba (pip install numba)")


@torch.no_grad()
def render(field: Octree, rays: RayBundle, background: Tensor, stop_transmittance: float,
           weight_threshold: float) -> dict[str, Tensor]:
    """``octree.render_octree`` at inference on the CPU, by the numba kernel."""
    _need_numba()
    if field.config.appearance == "sh":
        out = _run(field, rays, SHADE, stop_transmittance, weight_threshold, background)
        return {"rgb": torch.from_numpy(out["rgb"]), "acc": torch.from_numpy(out["acc"]),
                "num_samples": torch.tensor(float(out["segments"].sum())),
                "cells_visited": torch.tensor(float(out["cells"].sum()))}
    counts, leaf, weight, acc = _records(field, rays, VISIBLE, stop_transmittance,
                                         weight_threshold)
    r = len(rays)
    ray_of = torch.repeat_interleave(torch.arange(r), torch.from_numpy(counts))
    colours = field.leaf_color(torch.from_numpy(leaf), rays.viewdirs.cpu()[ray_of])
    rgb = torch.zeros(r, 3)
    rgb.index_add_(0, ray_of, torch.from_numpy(weight).float()[:, None] * colours)
    acc_t = torch.from_numpy(acc)
    rgb = rgb + (1.0 - acc_t)[:, None] * background.cpu()
    return {"rgb": rgb, "acc": acc_t, "num_samples": torch.tensor(float(leaf.shape[0]))}


@torch.no_grad()
def leaf_weights(field: Octree, rays: RayBundle, stop_transmittance: float, reduce: str
                 ) -> Tensor:
    """``octree.leaf_weights`` by the numba kernel."""
    _need_numba()
    totals = np.zeros(field.config.leaves)
    _run(field, rays, WEIGHT_MAX if reduce == "max" else WEIGHT_SUM, stop_transmittance,
         totals=totals)
    return torch.from_numpy(totals)


@torch.no_grad()
def trace(field: Octree, rays: RayBundle, stop_transmittance: float
          ) -> tuple[Tensor, Tensor]:
    """``octree.trace`` by the numba kernel: the leaf segments of every ray as padded
    ``leaf`` [R, S] (-1 past the last) and ``length`` [R, S] (what fine-tuning composites
    differentiably)."""
    _need_numba()
    counts, leaf, length, _ = _records(field, rays, SEGMENTS, stop_transmittance)
    r = len(rays)
    offsets = np.cumsum(counts) - counts
    s = int(counts.max()) if r else 0
    ray = np.repeat(np.arange(r), counts)
    pos = np.arange(leaf.shape[0]) - np.repeat(offsets, counts)
    leaf_out = np.full((r, s), -1, dtype=np.int64)
    len_out = np.zeros((r, s), dtype=np.float32)
    leaf_out[ray, pos] = leaf
    len_out[ray, pos] = length
    device = rays.origins.device
    return torch.from_numpy(leaf_out).to(device), torch.from_numpy(len_out).to(device)
