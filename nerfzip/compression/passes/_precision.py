"""``progressive(order=precision)``: quantized feature grids stored coarse first, as nested
layers of finer and finer steps (``codec/ladder.py``), any family.

Each quantized feature grid (TensoRF planes and lines, hash-grid tables) gets a ladder of
``layers`` steps: a coarse step ``W_0`` grid steps in the base layer, then steps falling
geometrically to 1 (``W_k = round(W_0 ^ ((L-1-k) / (L-1)))``), so the last layer restores the
grid's own values and the whole file decodes to what the single-rate file holds.

The coarse steps are chosen per tensor by the shared allocator (``compression.allocate``)
under a byte budget: ``base`` times the bytes the tensors take at full precision. Each tensor's
options are coarse steps of ``w`` times its channels' median grid step (the same absolute step
for every channel, so a channel with a wide range is not coarser than the rest; channels whose
own grid step is coarser keep it), rated by the bytes of their coded base section and the
importance-weighted squared error of the coarse values, scaled per tensor by a real render
(``allocate.units``). On lego's 30.1 dB TensoRF-VM, a base of 0.72 MB (about 10 % of the
file) renders at 29.0 dB with one step for all tensors; the allocator gives the density finer
steps than the appearance, which is what it measured to matter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from nerfzip.codec.ladder import layer_grid, round_to_steps, signed_symbols
from nerfzip.compression.allocate.units import Candidate, candidates, choose
from nerfzip.compression.analysis.importance import grid_importance
from nerfzip.compression.compressed import Compressed
from nerfzip.compression.constraints import Codebook, Factorized, Ladder, QuantGrid
from nerfzip.compression.constraints.learned_prior import LatentPrior
from nerfzip.compression.registry import PassContext
from nerfzip.errors import NerfzipError

COARSE = (0, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)
"""Coarse steps the allocator chooses from, in median grid steps (0: full precision)."""


def grid_of(c: Compressed, name: str) -> QuantGrid:
    """Tensor ``name``'s quantization grid; one-line error if it has none or is stored in a
    form a ladder cannot layer."""
    cons = c.constraints.get(name, [])
    for con in cons:
        if isinstance(con, (Codebook, Factorized, LatentPrior)):
            raise NerfzipError(f"progressive(order=precision): {name} is under a "
                               f"{type(con).__name__} constraint; only quantized grids "
                               "(quant) are layered by precision")
    grid = next((con for con in cons if isinstance(con, QuantGrid)), None)
    if grid is None:
        raise NerfzipError(f"progressive(order=precision): {name} is not quantized; put "
                           "quant(...) before progressive")
    return grid


def channel_steps(grid: QuantGrid, w: int) -> Tensor:
    """Per channel, the coarse step in grid steps for an absolute step of ``w`` times the
    median grid step (at least 1; ``w`` = 0: 1 everywhere)."""
    scale = grid.scale.detach().cpu().reshape(-1)
    if w == 0:
        return torch.ones(scale.numel(), dtype=torch.int64)
    limit = (1 << grid.bits) - 1
    return torch.clamp(torch.round(w * scale.median() / scale), 1, limit).to(torch.int64)


def coarse_grid(grid: QuantGrid, steps: Tensor, x: Tensor) -> QuantGrid:
    """The grid of the base layer: ``steps`` times ``grid``'s per channel, zero on it, wide
    enough for ``x``'s values (``x`` on ``grid``)."""
    scale = grid.scale.detach().cpu().reshape(-1)
    lo = grid.lo.detach().cpu().reshape(-1)
    c = round_to_steps(signed_symbols(x, grid.bits, grid.axis, lo, scale), steps)
    bits, offset, step = layer_grid(c, steps, scale)
    device = grid.scale.device
    return QuantGrid(bits, grid.axis, offset.to(device), step.to(device))


def ladder_steps(first: Tensor, layers: int) -> tuple[Tensor, ...]:
    """Per layer, the steps of a ladder from ``first`` (per channel) down to 1, geometric."""
    out = []
    for k in range(layers):
        power = (layers - 1 - k) / (layers - 1)
        out.append(torch.clamp(torch.round(first.double() ** power), min=1).to(torch.int64))
    return tuple(out)


def file_layers(sizes: dict[str, int], layers: int, split: int) -> dict[str, tuple[int, ...]]:
    """Per tensor, the file layer of each of its ``layers - 1`` refinements: refinement k of
    every tensor after refinement k-1 of all of them, a level split, tensor by tensor in
    order, into layers of at most ``split`` values each (a tensor larger alone in its own;
    ``split`` 0: one layer per level). A layer decodes in time proportional to its values."""
    plan: dict[str, list[int]] = {n: [] for n in sizes}
    layer = 0
    for _ in range(layers - 1):
        layer, held = layer + 1, 0
        for n, size in sizes.items():
            if split and held and held + size > split:
                layer, held = layer + 1, 0
            plan[n].append(layer)
            held += size
    return {n: tuple(p) for n, p in plan.items()}


def precision_layers(c: Compressed, layers: int, base: float, n_rays: int, calibrate: int,
                     split: int, ctx: PassContext) -> dict[str, Any]:
    """Put a ladder on every quantized feature grid of ``c`` (in place); the report."""
    names = [n for n in c.model.field.feature_grids()
             if any(isinstance(k, QuantGrid) for k in c.constraints.get(n, []))]
    if not names:
        raise NerfzipError("progressive(order=precision): no quantized feature grid; put "
                           "quant(...) before progressive")
    grids = {n: grid_of(c, n) for n in names}
    coders = c.save_options().coders

    def make(name: str) -> Callable[[Tensor, int], QuantGrid]:
        return lambda x, w: coarse_grid(grids[name], channel_steps(grids[name], w), x)

    ends = {n: candidates(c, n, (COARSE[0], COARSE[-1]), make(n), None, coders)
            for n in names}  # checked before the (slower) importance and renders
    full = sum(by[COARSE[0]].rate for by in ends.values())
    coarsest = sum(by[COARSE[-1]].rate for by in ends.values())
    budget = int(base * full)
    if coarsest > budget:
        raise NerfzipError(f"progressive(order=precision): base={base} ({budget:,} bytes) is "
                           f"below the coarsest base the grids allow ({coarsest:,} bytes)")
    maps = grid_importance(c.model, ctx.scene, n_rays) if ctx.scene is not None else {}
    table: dict[str, dict[int, Candidate]] = {
        n: candidates(c, n, COARSE, make(n),
                      maps[n].expand_as(c.tensors()[n]) if n in maps else None, coders)
        for n in names}
    chosen, report = choose(c, table, budget, ctx.scene, calibrate)
    plan = file_layers({n: c.tensors()[n].numel() for n in names}, layers, split)
    for n in names:
        w = report["setting_per_tensor"][n]
        c.add(n, Ladder(ladder_steps(channel_steps(grids[n], w), layers), plan[n]))
    report["coarse_step_per_tensor"] = report.pop("setting_per_tensor")
    report["uniform_coarse_step"] = report.pop("uniform_setting")
    report |= {"full_precision_bytes": full, "base_budget_bytes": budget,
               "base_bytes": sum(cand.rate for cand in chosen.values()), "layers": layers,
               "file_layers": 1 + max(max(p) for p in plan.values())}
    return report
