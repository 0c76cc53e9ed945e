"""The ``convert`` pass: CP -> VM exactly (each CP term becomes a rank-1 plane times a line),
VM -> CP by parafac of the field's dense density and appearance grids. It rebuilds the grids
with new shapes, so it refuses to run after passes that constrained those tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from nerfzip.codec.tensors import cp_to_tensor
from nerfzip.compression.compressed import Compressed
from nerfzip.compression.fit.grid_terms import (
    as_matrix,
    grid_tensors,
    rebuilt_field,
    require_grid_field,
    term_groups,
)
from nerfzip.compression.fit.tensor_fit import balanced, fit_cp
from nerfzip.compression.registry import PassContext, register_pass
from nerfzip.errors import NerfzipError
from nerfzip.fields.tensorf import MAT_AXES, VEC_AXES, FactorGrids, TensoRF
from nerfzip.rendering.model import RadianceModel
from nerfzip.utils.schema import limits


def cp_terms_to_vm(groups: list[list[Tensor]], res: tuple[int, int, int]
                   ) -> tuple[list[list[Tensor]], int]:
    """CP terms [X, Y, Z(, B)] spread over the three VM modes, term c to mode c % 3 as plane
    outer(axis v, axis u) (bilinear interpolation of an outer product is the product of the
    linear interpolations, so this is exact) and line w. Modes short of a term get a zero one
    (at most two in all; fine-tuning leaves it at zero, as both its factors are)."""
    factors = groups[0]
    total = factors[0].shape[1]
    per = math.ceil(total / 3)
    out = []
    for m, ((u, v), w) in enumerate(zip(MAT_AXES, VEC_AXES)):
        idx = torch.arange(m, total, 3, device=factors[0].device)
        plane = factors[0].new_zeros(res[v] * res[u], per)
        plane[:, :idx.numel()] = (factors[v][:, None, idx] * factors[u][None, :, idx]).reshape(
            -1, idx.numel())
        line = factors[0].new_zeros(res[w], per)
        line[:, :idx.numel()] = factors[w][:, idx]
        g = [plane, line]
        if len(factors) == 4:
            basis = factors[0].new_zeros(factors[3].shape[0], per)
            basis[:, :idx.numel()] = factors[3][:, idx]
            g.append(basis)
        out.append(g)
    return out, per


def resampled(t: Tensor, size: tuple[int, int]) -> Tensor:
    """A plane / line resampled to ``size`` at the field's node positions (align_corners):
    the values the field interpolates there."""
    if tuple(t.shape[2:]) == size:
        return t.detach()
    return F.interpolate(t.detach(), size=size, mode="bilinear", align_corners=True)


def vm_dense(grids: FactorGrids, basis: Tensor | None, res: tuple[int, int, int]) -> Tensor:
    """The VM sum ``sum_m sum_c P_m,c(u, v) L_m,c(w) (B[:, mC + c])`` on a ``res`` grid of nodes
    spanning the field's box: [X, Y, Z] (density pre-activation) or [X, Y, Z, K] (appearance
    features). One matrix product per mode: planes [rv*ru, C] times lines (⊙ basis) [C, rw*K]."""
    per = grids.lines[0].shape[1]
    out: Tensor | None = None
    for m, ((u, v), w) in enumerate(zip(MAT_AXES, VEC_AXES)):
        plane = resampled(grids.planes[m], (res[v], res[u]))[0].reshape(per, -1)
        line = resampled(grids.lines[m], (res[w], 1))[0, :, :, 0]
        right = line[:, :, None] if basis is None else \
            line[:, :, None] * basis.detach()[:, m * per:(m + 1) * per].T[:, None, :]
        part = (plane.T @ right.reshape(per, -1)).reshape(res[v], res[u], res[w], -1)
        part = part.permute(*[(v, u, w).index(axis) for axis in range(3)], 3)
        out = part if out is None else out + part
    assert out is not None
    return out[..., 0] if basis is None else out


def sample_resolution(res: tuple[int, int, int], channels: int, cap: int
                      ) -> tuple[int, int, int]:
    """``res`` scaled down evenly until the grid (times ``channels``) holds at most ``cap``."""
    s = min(1.0, (cap / (math.prod(res) * channels)) ** (1.0 / 3.0))
    return tuple(max(2, min(n, int(n * s))) for n in res)  # type: ignore[return-value]


def fit_dense_cp(dense: Tensor, rank: int, iters: int) -> tuple[list[Tensor], float]:
    """parafac of a dense grid (float32 when large) and its relative error."""
    dense = dense.detach().cpu()  # tensorly's numpy backend: fit on the CPU
    dtype = np.float32 if dense.numel() > 1 << 20 else np.float64
    factors = fit_cp(dense, rank, None, iters, dtype)
    err = float((cp_to_tensor(factors) - dense).norm() / dense.norm().clamp(min=1e-30))
    return factors, err


def upsampled_line(u: Tensor, n: int) -> Tensor:
    """A CP factor [m, R] sampled at m nodes, linearly interpolated to n nodes -> [1, R, n, 1]."""
    line = u.T[None, :, :, None].contiguous()
    return resampled(line, (n, 1)).contiguous()


def vm_to_cp(field: TensoRF, density: int, appearance: int, iters: int, cap: int
             ) -> tuple[dict[str, Tensor], dict[str, Any]]:
    res = tuple(field.config.resolution)
    out: dict[str, Tensor] = {}
    report: dict[str, Any] = {}
    quantities = (("density", field.density_grids, None, density),
                  ("appearance", field.app_grids, field.basis.weight, appearance))
    for key, grids, basis, rank in quantities:
        k = 1 if basis is None else basis.shape[0]
        sub = sample_resolution(res, k, cap)  # type: ignore[arg-type]
        factors, err = fit_dense_cp(vm_dense(grids, basis, sub), rank, iters)
        # Lines at the scale of the VM lines, the basis at the scale of the VM basis.
        line_norm = float(torch.stack([as_matrix(t).norm(dim=0).mean() for t in grids.lines])
                          .mean()) + 1e-12
        targets = [line_norm] * 3 + ([float(basis.detach().norm(dim=0).mean()) + 1e-12]
                                     if basis is not None else [])
        factors = balanced(factors, targets)
        prefix = "density_grids" if basis is None else "app_grids"
        for a in range(3):
            out[f"{prefix}.lines.{a}"] = upsampled_line(factors[a], res[a])
        if basis is not None:
            out["basis.weight"] = factors[3].contiguous()
        report[f"{key}_rel_error"] = err
        report[f"{key}_sampled_at"] = list(sub)
    return out, report


@dataclass
class Config:
    """Conversion between TensoRF decompositions."""

    to: str = field(default="cp", metadata=limits(choices=("vm", "cp")))
    """Target decomposition: vm (from CP, exact) or cp (from VM, by parafac)."""
    density: int = field(default=0, metadata=limits(0))
    """to=cp: density terms (0: 3x the VM's per-mode count)."""
    appearance: int = field(default=0, metadata=limits(0))
    """to=cp: appearance terms (0: 3x the VM's per-mode count)."""
    iters: int = field(default=50, metadata=limits(1))
    """to=cp: parafac iterations."""
    max_elements: int = field(default=1 << 23, metadata=limits(8))
    """to=cp: the dense grids are sampled down to at most this many values."""


@register_pass("convert", Config)
def convert(model: RadianceModel | Compressed, cfg: Config, ctx: PassContext
            ) -> tuple[Compressed, dict[str, Any]]:
    """A TensoRF converted to the other decomposition (VM <-> CP).

    - ``to=vm`` (from CP): exact. Term c goes to VM mode c % 3 as a rank-1 plane times a line
      (``cp_terms_to_vm``), ceil(C / 3) components per mode; shrink it afterwards with
      ``reduce_rank``.
    - ``to=cp`` (from VM): parafac (tensorly) of the field's dense density grid (the
      pre-activation sum) with ``density`` terms (default: the VM's 3 x per-mode count) and of
      its dense appearance features [X, Y, Z, app_dim] with ``appearance`` terms, whose
      app_dim factor is the new basis. The grids are sampled at the field's own resolution,
      scaled down evenly where one would exceed ``max_elements`` values (default 2^23: 32 MB
      as float32, parafac's Khatri-Rao products then peak at ~2^23 / app_dim x rank floats,
      about 250 MB for 192 terms); the CP lines are then interpolated back to the field's
      resolution. Lossy: fine-tune after (on lego, VM 242 x 399 x 280 is sampled at
      163 x 270 x 189 for density and 54 x 90 x 63 for appearance).
    """
    to, density, appearance, iters, max_elements = (cfg.to, cfg.density, cfg.appearance,
                                                    cfg.iters, cfg.max_elements)
    c = Compressed.of(model)
    tensorf = require_grid_field(c, "convert")
    fc = tensorf.config
    if fc.decomposition == to:
        raise NerfzipError(f"convert: the field is already tensorf-{to}")
    if to == "vm" and (density or appearance):
        raise NerfzipError("convert(to=vm) is exact and sets the component counts itself "
                           "(ceil(C / 3) per mode); shrink it afterwards with reduce_rank")
    before = tensorf.num_parameters()
    res = tuple(fc.resolution)
    if to == "vm":
        dens, d = cp_terms_to_vm(term_groups(tensorf.density_grids, None), res)  # type: ignore
        app, a = cp_terms_to_vm(term_groups(tensorf.app_grids, tensorf.basis.weight),
                                res)  # type: ignore[arg-type]
        tensors = {**grid_tensors("density_grids", "vm", dens, res),
                   **grid_tensors("app_grids", "vm", app, res),
                   "basis.weight": torch.cat([g[-1] for g in app], dim=1)}
        report: dict[str, Any] = {"density_rel_error": 0.0, "appearance_rel_error": 0.0}
    else:
        d = density or 3 * fc.density_components
        a = appearance or 3 * fc.appearance_components
        tensors, report = vm_to_cp(tensorf, d, a, iters, max_elements)
    c.model.field = rebuilt_field(tensorf, {"decomposition": to, "density_components": d,
                                          "appearance_components": a}, tensors)
    report = {"to": to, "density_components": d, "appearance_components": a, **report,
              "parameters_before": before, "parameters_after": c.model.field.num_parameters()}
    c.record("convert", {"to": to, "density": density, "appearance": appearance,
                         "iters": iters, "max_elements": max_elements}, report)
    return c, report
