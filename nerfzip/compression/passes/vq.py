"""The ``vq`` pass: vector quantization of grid features (the VQRF / VQ-TensoRF idea).

Each entry of a feature grid (a plane texel of TensoRF VM, a line entry of CP, a hash-table
entry) holds one feature vector along the grid's feature axis (``Field.feature_grids``). The
vectors are clustered by importance-weighted k-means (importance: accumulated rendering weight,
``importance.py``); every vector is replaced by its cluster's centre except the most important
``keep`` fraction, which stay exact. Pruned (all-zero) vectors are left alone. The assignment
is then fixed; ``finetune`` trains the codebook entries. In the file, a vector-quantized grid is
stored as its codebook plus entropy-coded indices.

k-means is written here in torch (20 lines) rather than taken from scikit-learn: it needs
per-sample weights, runs on the field's device, and is the only clustering nerfzip needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from nerfzip.compression.allocate.units import candidates, choose
from nerfzip.compression.analysis.importance import (
    grid_importance,
    occupancy_importance,
    require_grids,
)
from nerfzip.compression.compressed import Compressed
from nerfzip.compression.constraints import Codebook, constrained
from nerfzip.compression.registry import PassContext, register_pass
from nerfzip.errors import NerfzipError
from nerfzip.rendering.model import RadianceModel
from nerfzip.utils.schema import limits


def nearest(x: Tensor, centres: Tensor, chunk: int = 16384) -> Tensor:
    """Index of the nearest centre [N] for each row of ``x`` [N, D]."""
    c2 = (centres * centres).sum(1)
    out = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    for i in range(0, x.shape[0], chunk):
        d = c2[None, :] - 2.0 * x[i:i + chunk] @ centres.t()
        out[i:i + chunk] = d.argmin(dim=1)
    return out


SEED_SAMPLE = 32
"""k-means++ seeds from at most this many points per centre (at least 131072), drawn by
weight: seeding makes one pass over its points per centre, which over the 10^6 leaves of a
baked octree and 4096 centres took many minutes; Lloyd's iterations then use every point."""


def kmeans_pp(x: Tensor, p: Tensor, k: int, generator: torch.Generator | None) -> Tensor:
    """Weighted k-means++ seeding: each new centre drawn with probability ~ weight x squared
    distance to the nearest centre so far (one pass over the data per centre), over a
    weighted sample of the points when they are many (``SEED_SAMPLE``)."""
    m = max(SEED_SAMPLE * k, 1 << 17)
    if x.shape[0] > m:
        pick = torch.multinomial(p.cpu(), m, generator=generator).to(x.device)
        x, p = x[pick], torch.ones(m, device=x.device)  # drawn by weight: now equal
    first = torch.multinomial(p.cpu(), 1, generator=generator).item()
    centres = [x[first]]
    d2 = ((x - x[first]) ** 2).sum(1)
    for _ in range(k - 1):
        score = (p * d2).cpu()
        if float(score.sum()) <= 0:  # fewer distinct points than centres
            score = p.cpu()
        i = torch.multinomial(score, 1, generator=generator).item()
        centres.append(x[i])
        d2 = torch.minimum(d2, ((x - x[i]) ** 2).sum(1))
    return torch.stack(centres).clone()


def kmeans(x: Tensor, weights: Tensor, k: int, iters: int = 10,
           generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Weighted k-means (Lloyd): centres [k, D] and assignment [N]."""
    n = x.shape[0]
    k = min(k, n)
    p = weights.clamp(min=0) + 1e-12
    centres = kmeans_pp(x, p, k, generator)
    assign = nearest(x, centres)
    for _ in range(iters):
        mass = torch.zeros(k, device=x.device).index_add_(0, assign, p)
        sums = torch.zeros_like(centres).index_add_(0, assign, x * p[:, None])
        empty = mass <= 1e-12
        centres = torch.where(empty[:, None], centres, sums / mass.clamp(min=1e-12)[:, None])
        if bool(empty.any()):  # re-seed empty clusters at the worst-served heavy points
            err = ((x - centres[assign]) ** 2).sum(1) * p
            centres[empty] = x[torch.topk(err, int(empty.sum())).indices]
        assign = nearest(x, centres)
    return centres, assign


@dataclass
class Config:
    """Vector quantization."""

    codebook_size: int = field(default=4096, metadata=limits(2))
    """Codebook entries per tensor; with a budget, the most any grid gets."""
    keep: float = field(default=0.005, metadata=limits(0.0, 1.0))
    """Share of the most important vectors kept exact (below 1)."""
    n_rays: int = field(default=1 << 20, metadata=limits(1))
    """Training rays the importance is accumulated over (with a scene)."""
    iters: int = field(default=10, metadata=limits(0))
    """k-means (Lloyd) iterations."""
    include: str = ""
    """Only tensors whose name contains this text."""
    seed: int = 0
    """Seed of the k-means++ seeding."""
    budget: int | None = field(default=None, metadata=limits(1))
    """Instead of one size: codebook sizes per grid (codebook_size halved down to min_size)
    chosen by the allocator so that the grids' file sections hold at most this many bytes."""
    min_size: int = field(default=64, metadata=limits(2))
    """With a budget: the smallest codebook a grid gets."""
    calibrate: int = field(default=4096, metadata=limits(0))
    """With a budget and a scene: training rays rendered to scale each grid's weighted error
    to rendered squared error (0: the importance-weighted error alone)."""

    def __post_init__(self) -> None:
        if self.budget is not None and self.min_size > self.codebook_size:
            raise NerfzipError(f"min_size ({self.min_size}) is above codebook_size "
                               f"({self.codebook_size})")


def codebook(x: Tensor, axis: int, w: Tensor, keep: float, size: int, iters: int,
             gen: torch.Generator) -> tuple[Codebook, dict[str, Any]] | None:
    """The codebook constraint of grid ``x`` (feature ``axis``, importance ``w`` per entry)
    with at most ``size`` entries, the most important ``keep`` of its live vectors exact, and
    its statistics; None when it has under 4 live vectors."""
    rows = x.movedim(axis, -1).reshape(-1, x.shape[axis])
    w = w.reshape(-1)
    live_idx = (rows.abs().amax(dim=1) > 0).nonzero()[:, 0]
    if live_idx.numel() < 4:
        return None
    n_exact = int(keep * live_idx.numel())
    order = torch.argsort(w[live_idx], descending=True)
    exact = live_idx[order[:n_exact]]
    vq_idx = live_idx[order[n_exact:]]
    k = min(size, max(2, vq_idx.numel() // 4))
    centres, assign = kmeans(rows[vq_idx], w[vq_idx], k, iters, gen)
    indices = torch.full((rows.shape[0],), -1, dtype=torch.long, device=rows.device)
    indices[vq_idx] = assign
    err = ((rows[vq_idx] - centres[assign]) ** 2).sum(1)
    return Codebook(axis, indices, centres), {
        "vectors": int(rows.shape[0]), "live": int(live_idx.numel()),
        "exact": int(exact.numel()), "codebook": int(k),
        "weighted_mse": float((err * w[vq_idx]).sum() / w[vq_idx].sum().clamp(min=1e-12))}


def budget_sizes(c: Compressed, cfg: Config, ctx: PassContext, names: list[str],
                 scores: dict[str, Tensor], gen: torch.Generator
                 ) -> tuple[dict[str, Codebook], dict[str, Any]]:
    """Per grid, the codebook the allocator chooses under ``cfg.budget`` bytes (the grids'
    sections as this pass leaves them), and what the allocation measured."""
    grids = c.model.field.feature_grids()
    sizes = []
    size = cfg.codebook_size
    while size >= cfg.min_size:
        sizes.append(size)
        size //= 2
    coders = c.save_options().coders
    table = {}
    for name in names:
        def make(x: Tensor, k: int, name: str = name) -> Codebook:
            made = codebook(x, grids[name].axis, scores[name], cfg.keep, k, cfg.iters, gen)
            assert made is not None  # names hold only grids with live vectors
            return made[0]
        table[name] = candidates(c, name, sorted(sizes), make,
                                 scores[name].expand_as(c.tensors()[name]), coders)
    chosen, report = choose(c, table, cfg.budget, ctx.scene, cfg.calibrate)
    report["size_per_tensor"] = report.pop("setting_per_tensor")
    report["uniform_size"] = report.pop("uniform_setting")
    return {n: cand.constraint for n, cand in chosen.items()}, report


@register_pass("vq", Config, api="vector_quantize")
def vector_quantize(model: RadianceModel | Compressed, cfg: Config, ctx: PassContext
                    ) -> tuple[Compressed, dict[str, Any]]:
    """Importance-weighted k-means codebooks for the field's feature grids (TensoRF VM planes,
    CP lines, hash tables: ``Field.feature_grids``), one size for all or sizes per grid under
    a byte budget."""
    codebook_size, keep, n_rays, iters, include, scene = (
        cfg.codebook_size, cfg.keep, cfg.n_rays, cfg.iters, cfg.include, ctx.scene)
    c = Compressed.of(model)
    grids = require_grids(c.model, "vq")
    if codebook_size < 2 or not 0.0 <= keep < 1.0:
        raise NerfzipError(f"vq: codebook size must be >= 2 and keep in [0, 1) (got "
                           f"{codebook_size}, {keep})")
    scores = grid_importance(c.model, scene, n_rays) if scene is not None else \
        occupancy_importance(c.model)
    gen = torch.Generator().manual_seed(cfg.seed)
    tensors = c.tensors()
    report: dict[str, Any] = {"codebook_size": codebook_size, "keep": keep, "tensors": {},
                              "importance": "rays" if scene is not None else "occupancy"}
    current = {name: constrained(tensors[name].detach(), c.constraints.get(name, []))
               for name in scores if grids[name].vector_quantize and include in name}
    names = [n for n, x in current.items() if int(
        (x.movedim(grids[n].axis, -1).reshape(-1, x.shape[grids[n].axis]).abs().amax(1) > 0)
        .sum()) >= 4]
    if not names:
        raise NerfzipError("vq: no feature grid to quantize (all pruned, or none matched)")
    chosen, allocation = budget_sizes(c, cfg, ctx, names, scores, gen) \
        if cfg.budget is not None else ({}, {})
    for name in names:
        made = codebook(current[name], grids[name].axis, scores[name], keep,
                        codebook_size, iters, gen) if name not in chosen else None
        con = chosen[name] if made is None else made[0]
        c.add(name, con)
        report["tensors"][name] = made[1] if made is not None else {
            "codebook": int(con.codebook.shape[0])}
    report |= allocation
    c.project()
    args = {"codebook_size": codebook_size, "keep": keep, "iters": iters, "include": include}
    if cfg.budget is not None:  # recorded only when used: older records stay as they were
        args |= {"budget": cfg.budget, "min_size": cfg.min_size, "calibrate": cfg.calibrate}
    c.record("vq", args, report)
    return c, report
