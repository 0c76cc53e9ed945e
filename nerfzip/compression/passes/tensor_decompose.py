"""Tensor decompositions of a field (tensorly): the ``tensor_decompose`` family of passes.

- ``tensor_decompose``: every tensor with three or more modes longer than 1 (a TensoRF VM
  feature-plane stack ``planes.{m}`` [1, C, H, W], or any dense feature grid) is held to a
  Tucker product, over its spatial modes (Tucker-2, the channel mode stays whole) or over all
  of them, or to a CP sum, by a ``Factorized`` constraint: the field keeps its shapes,
  fine-tuning runs through a re-fit, and the .nrz file stores core and factors. Matrices are
  left alone: the Tucker decomposition of a matrix is its truncated SVD, which ``low_rank``
  already does for linear layers (and ``reduce_rank`` for the lines of a TensoRF).
- ``reduce_rank``: a VM / CP field with fewer components, the best approximation of each
  quantity's factor product that fewer components can hold: a real, smaller field.
- ``convert``: CP -> VM exactly (each CP term becomes a rank-1 plane times a line), VM -> CP by
  parafac of the field's dense density and appearance grids.

Every pass works on a copy of its input and records itself; ``reduce_rank`` and ``convert``
change the grids' shapes, so they refuse to run after passes that constrained those tensors.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from nerfzip.codec.tensors import cp_to_tensor
from nerfzip.compression.analysis.importance import require_tensorf
from nerfzip.compression.compressed import Compressed, Factorized
from nerfzip.compression.fit.tensor_fit import balanced, cp_distance, fit_cp, reduce_cp
from nerfzip.errors import NerfzipError
from nerfzip.fields.base import build_field
from nerfzip.fields.tensorf import MAT_AXES, VEC_AXES, FactorGrids, TensoRF
from nerfzip.rendering.model import RadianceModel

METHODS = ("tucker", "cp")


# --- tensor_decompose ---------------------------------------------------------------------
def long_modes(x: Tensor) -> list[int]:
    return [m for m, n in enumerate(x.shape) if n > 1]


def tucker_size(shape: tuple[int, ...], ranks: list[int]) -> int:
    """Values stored by a Tucker product: the core plus one [n_m, r_m] factor per ranked mode."""
    core = math.prod(r or n for n, r in zip(shape, ranks))
    return core + sum(n * r for n, r in zip(shape, ranks))


def tucker_ranks(shape: tuple[int, ...], modes: list[int], ratio: float, rank: int) -> list[int]:
    """Per-mode ranks (0: no factor): ``rank`` on every mode of ``modes``, or the same share
    of each mode's size, the largest whose product stores at most ``ratio`` of the values."""
    def at(share: float) -> list[int]:
        return [max(1, min(n, round(share * n))) if m in modes else 0
                for m, n in enumerate(shape)]

    if rank:
        return [min(rank, n) if m in modes else 0 for m, n in enumerate(shape)]
    lo, hi = 0.0, 1.0
    for _ in range(40):  # bisection: the stored size grows with the share
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if tucker_size(shape, at(mid)) <= ratio * math.prod(shape) \
            else (lo, mid)
    return at(lo)


def cp_rank(shape: tuple[int, ...], ratio: float, rank: int) -> int:
    """``rank``, or the one whose factors store about ``ratio`` of the values."""
    long = [n for n in shape if n > 1]
    return rank or max(1, int(ratio * math.prod(shape) / sum(long)))


def plan(name: str, x: Tensor, method: str, ratio: float, rank: int, full: bool
         ) -> Factorized | None:
    """The constraint for tensor ``name``, or None when its factors would not be smaller."""
    long = long_modes(x)
    shape = tuple(x.shape)
    if method == "tucker":
        ranks = tucker_ranks(shape, long if full else long[1:], ratio, rank)
        stored = tucker_size(shape, ranks)
        f = Factorized("tucker", tuple(ranks))
    else:
        r = cp_rank(shape, ratio, rank)
        limit = math.prod(shape) // max(shape)
        if r > limit:
            raise NerfzipError(f"tensor_decompose: CP rank {r} of {name} {list(shape)} exceeds "
                               f"the {limit} any tensor of that shape needs")
        stored = r * sum(shape)
        f = Factorized("cp", (r,))
    return f if stored < x.numel() else None


def no_target_error(c: Compressed, include: str, matched: dict[str, Tensor]) -> NerfzipError:
    matrices = sorted(n for n, x in matched.items() if len(long_modes(x)) == 2)
    hint = (f"; the {len(matrices)} matching matrices ({matrices[0]}, ...) are left to "
            "low_rank (linear layers) and reduce_rank (TensoRF lines): a matrix's Tucker "
            "decomposition is its truncated SVD" if matrices else "")
    return NerfzipError(f"tensor_decompose: no tensor of {c.model.field.family} with three or "
                        f"more modes longer than 1 matches include={include!r} (the feature-"
                        f"plane stacks of a TensoRF VM field are){hint}")


def tensor_decompose(model: RadianceModel | Compressed, method: str = "tucker",
                     ratio: float = 0.5, rank: int = 0, full: bool = False,
                     include: str = "grids") -> tuple[Compressed, dict[str, Any]]:
    """Hold every tensor of 3+ modes whose name contains ``include`` to a Tucker product
    (``method="tucker"``: factors on the spatial modes, and on the channel mode too when
    ``full``) or a CP sum (``"cp"``) whose core and factors store about ``ratio`` of the tensor's
    values (or of ``rank`` per mode / in total). Tucker fits are the truncated HOSVD refined by
    HOOI (the optimum at that multilinear rank, to the precision of the iteration); CP fits are
    ALS. The file stores core and factors; a later ``quant`` quantizes them instead of the
    tensor. The channel mode is the first mode longer than 1.
    """
    if method not in METHODS:
        raise NerfzipError(f"tensor_decompose: method must be tucker or cp, got {method!r}")
    if rank < 0 or (not rank and not 0.0 < ratio < 1.0):
        raise NerfzipError(f"tensor_decompose: give a ratio in (0, 1) or a rank >= 1 (got "
                           f"ratio={ratio}, rank={rank})")
    c = Compressed.of(model)
    matched = {n: x for n, x in c.tensors().items() if include in n and x.is_floating_point()}
    targets = {n: x for n, x in matched.items() if len(long_modes(x)) >= 3}
    if not targets:
        raise no_target_error(c, include, matched)
    for name in targets:
        kinds = [type(k).__name__ for k in c.constraints.get(name, [])
                 if not isinstance(k, Factorized)]
        if kinds:
            raise NerfzipError(f"tensor_decompose: {name} is already constrained "
                               f"({', '.join(kinds)}): decompose before prune / quant / vq")
    before = {n: x.detach().clone() for n, x in targets.items()}
    tensors: dict[str, Any] = {}
    for name, x in targets.items():
        f = plan(name, x, method, ratio, rank, full)
        if f is not None:
            c.add(name, f)
    c.project()
    for name, x in before.items():
        f = next((k for k in c.constraints.get(name, []) if isinstance(k, Factorized)), None)
        if f is None:
            continue
        y = c.tensors()[name].detach()
        tensors[name] = {"shape": list(x.shape), "ranks": list(f.ranks),
                         "values": x.numel(), "factor_values": sum(p.numel() for p in f.parts),
                         "rel_error": float((y - x).norm() / x.norm().clamp(min=1e-30))}
    if not tensors:
        raise NerfzipError("tensor_decompose: no tensor would get smaller at this ratio / rank")
    report = {"method": method, "tensors": tensors,
              "values_before": sum(t["values"] for t in tensors.values()),
              "values_after": sum(t["factor_values"] for t in tensors.values()),
              "max_rel_error": max(t["rel_error"] for t in tensors.values())}
    c.record("tensor_decompose", {"method": method, "ratio": ratio, "rank": rank, "full": full,
                                  "include": include},
             {k: v for k, v in report.items() if k != "tensors"})
    return c, report


# --- field factors as CP terms ------------------------------------------------------------
def require_grid_field(c: Compressed, what: str) -> TensoRF:
    """The TensoRF field of ``c``, refusing constraints on its grids or basis (these passes
    rebuild them with new shapes) and a factorised basis."""
    field = require_tensorf(c.model, what)
    for name, cons in c.constraints.items():
        if cons and (name.startswith(("density_grids.", "app_grids.", "basis."))):
            kinds = ", ".join(type(k).__name__ for k in cons)
            raise NerfzipError(f"{what}: {name} is already constrained ({kinds}); {what} "
                               "rebuilds the grids with new shapes: run it before prune / "
                               "quant / vq / tensor_decompose")
    if "basis" in field.low_rank:
        raise NerfzipError(f"{what}: the appearance basis is factorised by low_rank; run "
                           f"{what} first")
    return field


def as_matrix(t: Tensor) -> Tensor:
    """A plane [1, C, H, W] or line [1, C, L, 1] as a factor matrix [H*W or L, C]."""
    return t.detach()[0].reshape(t.shape[1], -1).T


def term_groups(grids: FactorGrids, basis: Tensor | None) -> list[list[Tensor]]:
    """Each quantity as sums of rank-1 terms, one factor matrix [n, C] per term mode: per VM
    mode m [plane_m, line_m] (+ the basis columns of mode m, [K, C]); CP [X, Y, Z] (+ basis).
    The appearance feature of mode m is sum_c P_c(u, v) L_c(w) B[:, c]: a 3-way CP."""
    per = grids.lines[0].shape[1]
    if grids.decomposition == "vm":
        groups = [[as_matrix(grids.planes[m]), as_matrix(grids.lines[m])] for m in range(3)]
    else:
        groups = [[as_matrix(line) for line in grids.lines]]
    if basis is not None:
        for m, g in enumerate(groups):
            g.append(basis.detach()[:, m * per:(m + 1) * per])
    return groups


def grid_tensors(prefix: str, decomposition: str, groups: list[list[Tensor]],
                 res: tuple[int, ...]) -> dict[str, Tensor]:
    """The field tensors of ``groups`` at resolution ``res`` (inverse of ``term_groups``, basis
    excluded)."""
    out = {}
    if decomposition == "vm":
        for m, g in enumerate(groups):
            u, v = MAT_AXES[m]
            out[f"{prefix}.planes.{m}"] = g[0].T.reshape(1, -1, res[v], res[u]).contiguous()
            out[f"{prefix}.lines.{m}"] = g[1].T.reshape(1, -1, g[1].shape[0], 1).contiguous()
    else:
        for a in range(3):
            u = groups[0][a]
            out[f"{prefix}.lines.{a}"] = u.T.reshape(1, -1, u.shape[0], 1).contiguous()
    return out


def rebuilt_field(field: TensoRF, overrides: dict[str, Any], tensors: dict[str, Tensor]
                  ) -> TensoRF:
    """A new field of ``field``'s kind with config ``overrides`` and these tensors replacing
    its own (the decoder and buffers are copied)."""
    config = field.config_dict()
    config["config"] = {**config["config"], **overrides}
    config["family"] = f"tensorf-{config['config']['decomposition']}"
    own = {k: v for k, v in field.named_tensors().items()
           if not k.startswith(("density_grids.", "app_grids.", "basis."))}
    new = build_field(config, {**own, **{k: v.to(field.aabb.device) for k, v in
                                         tensors.items()}})
    return new.to(field.aabb.device)  # type: ignore[return-value]


# --- reduce_rank --------------------------------------------------------------------------
def reduce_groups(groups: list[list[Tensor]], rank: int, iters: int
                  ) -> tuple[list[list[Tensor]], float]:
    """Each group cut to ``rank`` terms (``reduce_cp``), scaled like the old factors; and the
    relative error of the groups' products, sqrt(sum ||T - T'||^2 / sum ||T||^2)."""
    if rank >= groups[0][0].shape[1]:  # nothing to cut: the same tensors, exactly
        return [[u.float().contiguous() for u in g] for g in groups], 0.0
    out, err2, norm2 = [], 0.0, 0.0
    for g in groups:
        g = [u.detach().cpu() for u in g]  # the fit runs on the CPU (tensorly, numpy backend)
        new = reduce_cp(g, rank, iters)
        new = balanced(new, [float(u.norm(dim=0).mean()) + 1e-12 for u in g])
        d, n = cp_distance(g, new)
        err2, norm2 = err2 + d * d, norm2 + n * n
        out.append([u.float().contiguous() for u in new])
    return out, math.sqrt(err2 / norm2) if norm2 > 0 else 0.0


def reduce_rank(model: RadianceModel | Compressed, density: int = 0, appearance: int = 0,
                iters: int = 100) -> tuple[Compressed, dict[str, Any]]:
    """A copy of ``model`` whose TensoRF keeps ``density`` / ``appearance`` components (per mode
    for VM, in total for CP, as in the field's config; 0 keeps a quantity as it is).

    Each quantity is a sum of rank-1 terms (``term_groups``) and is replaced by its best
    approximation with fewer terms (``tensor_fit.reduce_cp``): VM density, per mode the matrix
    P L^T ([H*W, C] x [L, C]), by the truncated SVD of the C x C core left by QR of both factors
    (optimal, Eckart-Young: exact when the field has that rank); VM appearance, per mode the
    3-way CP [[P, L, B_m]] with the basis columns as third factor, and CP density / appearance,
    by parafac of the QR-compressed core warm-started from the strongest terms (never worse
    than keeping those terms, as structured pruning does; for cores over
    ``tensor_fit.CORE_CAP`` elements, the strongest terms with a least-squares basis). The
    report gives the relative error of each quantity's factor products.
    """
    c = Compressed.of(model)
    field = require_grid_field(c, "reduce_rank")
    cfg = field.config
    d, a = density or cfg.density_components, appearance or cfg.appearance_components
    if not (1 <= d <= cfg.density_components and 1 <= a <= cfg.appearance_components) \
            or (d, a) == (cfg.density_components, cfg.appearance_components) or iters < 1:
        raise NerfzipError(f"reduce_rank: density and appearance must be at most the field's "
                           f"{cfg.density_components} / {cfg.appearance_components} components "
                           f"and one of them fewer (got {density} / {appearance}, 0 keeps)")
    before = field.num_parameters()
    dens, dens_err = reduce_groups(term_groups(field.density_grids, None), d, iters)
    app, app_err = reduce_groups(term_groups(field.app_grids, field.basis.weight), a, iters)
    res = tuple(cfg.resolution)
    tensors = {**grid_tensors("density_grids", cfg.decomposition, dens, res),
               **grid_tensors("app_grids", cfg.decomposition, app, res),
               "basis.weight": torch.cat([g[-1] for g in app], dim=1)}
    c.model.field = rebuilt_field(field, {"density_components": d, "appearance_components": a},
                                  tensors)
    report = {"density_components": [cfg.density_components, d],
              "appearance_components": [cfg.appearance_components, a],
              "density_rel_error": dens_err, "appearance_rel_error": app_err,
              "parameters_before": before, "parameters_after": c.model.field.num_parameters()}
    c.record("reduce_rank", {"density": density, "appearance": appearance, "iters": iters},
             report)
    return c, report


# --- convert ------------------------------------------------------------------------------
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


def convert(model: RadianceModel | Compressed, to: str = "cp", density: int = 0,
            appearance: int = 0, iters: int = 50, max_elements: int = 1 << 23
            ) -> tuple[Compressed, dict[str, Any]]:
    """A copy of ``model`` whose TensoRF is converted to the other decomposition.

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
    if to not in ("vm", "cp"):
        raise NerfzipError(f"convert: to must be vm or cp, got {to!r}")
    c = Compressed.of(model)
    field = require_grid_field(c, "convert")
    cfg = field.config
    if cfg.decomposition == to:
        raise NerfzipError(f"convert: the field is already tensorf-{to}")
    if to == "vm" and (density or appearance):
        raise NerfzipError("convert(to=vm) is exact and sets the component counts itself "
                           "(ceil(C / 3) per mode); shrink it afterwards with reduce_rank")
    if min(density, appearance) < 0 or iters < 1 or max_elements < 8:
        raise NerfzipError("convert: density, appearance >= 0 (0: default), iters >= 1 and "
                           "max_elements >= 8")
    before = field.num_parameters()
    res = tuple(cfg.resolution)
    if to == "vm":
        dens, d = cp_terms_to_vm(term_groups(field.density_grids, None), res)  # type: ignore
        app, a = cp_terms_to_vm(term_groups(field.app_grids, field.basis.weight),
                                res)  # type: ignore[arg-type]
        tensors = {**grid_tensors("density_grids", "vm", dens, res),
                   **grid_tensors("app_grids", "vm", app, res),
                   "basis.weight": torch.cat([g[-1] for g in app], dim=1)}
        report: dict[str, Any] = {"density_rel_error": 0.0, "appearance_rel_error": 0.0}
    else:
        d = density or 3 * cfg.density_components
        a = appearance or 3 * cfg.appearance_components
        tensors, report = vm_to_cp(field, d, a, iters, max_elements)
    c.model.field = rebuilt_field(field, {"decomposition": to, "density_components": d,
                                          "appearance_components": a}, tensors)
    report = {"to": to, "density_components": d, "appearance_components": a, **report,
              "parameters_before": before, "parameters_after": c.model.field.num_parameters()}
    c.record("convert", {"to": to, "density": density, "appearance": appearance,
                         "iters": iters, "max_elements": max_elements}, report)
    return c, report
