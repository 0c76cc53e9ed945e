"""The ``progressive`` pass: a TensoRF whose components are split into a base layer and
refinement layers, strongest first, so that any prefix of its .nrz file decodes and renders.

A TensoRF quantity is a sum of rank-1 terms (VM: per mode m, ``P_m,c (x) L_m,c``; CP:
``X_c (x) Y_c (x) Z_c``), and the terms are independent: dropping some leaves a field that is
the sum of the others. The pass orders each mode's components by **energy**, the Frobenius
norm of the term over the grid, ``||P_c|| ||L_c||`` (VM) or ``||X_c|| ||Y_c|| ||Z_c||`` (CP),
times the norm of the term's basis column ``||B[:, c]||`` for appearance (its contribution to
the decoder's input), and splits them into ``layers`` groups whose sizes grow by ``growth``
(VM, 16 components, 4 layers, growth 2: 1, 2, 4, 9 per mode). Group g is stored as its own
tensors (``FactorGrids`` groups: factor ``3 g + m``), the basis columns permuted to match, so
the full field computes exactly the same sums (up to float rounding in the summation order).
Everything else (decoder, basis, occupancy grid) and group 0 make the base layer; the .nrz
writer puts group g's sections in layer g (``codec/layers.py``), and a reader that has not
received a group yet takes it as zeros (``Field.optional_tensors``).

Energy needs no scene and costs nothing; it is the truncation error of each term on the grid
(the terms are not orthogonal, so it ranks them rather than adds up exactly).

Constraints already on the grids follow their components: a pruning mask and a
per-component (axis 1) or per-tensor quantization grid are split with them, half precision
kept; a codebook, factorisation or learned prior is refused (``progressive`` must come before
``vq``, ``tensor_decompose`` and ``entropy_model``). Passes after ``progressive`` see one tensor
per group and work per group: ``quant`` gives each group its own grid. Passes that rebuild the
grids (``reduce_rank``, ``convert``, component pruning) must come before it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from nerfzip.compression.compressed import Compressed
from nerfzip.compression.constraints import Constraint, Half, Mask, QuantGrid
from nerfzip.compression.registry import PassContext, register_pass
from nerfzip.errors import NerfzipError
from nerfzip.fields.base import build_field
from nerfzip.fields.tensorf import FactorGrids, TensoRF
from nerfzip.rendering.model import RadianceModel
from nerfzip.utils.schema import limits

PREFIXES = ("density_grids", "app_grids")


@dataclass
class Config:
    """Split a TensoRF's components into a base layer and refinement layers."""

    layers: int = field(default=4, metadata=limits(2, 16))
    """Layers, the base included (2 to 16)."""
    growth: float = field(default=2.0, metadata=limits(1.0, 16.0))
    """Each layer holds about this many times the components of the one before (1: equal)."""


def group_sizes(components: int, layers: int, growth: float) -> list[int]:
    """``layers`` positive sizes summing to ``components``, growing geometrically by
    ``growth`` (rounded; the largest groups give way when rounding overshoots)."""
    weights = [growth ** k for k in range(layers)]
    sizes = [max(1, round(components * w / sum(weights))) for w in weights]
    while sum(sizes) > components:
        i = max(range(layers), key=lambda j: (sizes[j], j))
        sizes[i] -= 1
    sizes[-1] += components - sum(sizes)
    return sizes


def component_energy(grids: FactorGrids, basis_cols: Tensor | None) -> list[Tensor]:
    """Per mode (VM: 3, CP: 1), each component's energy [C]: the product of its factors'
    norms, times its basis column's norm (appearance)."""
    per = grids.lines[0].shape[1]
    if grids.decomposition == "vm":
        energy = [grids.planes[m].detach()[0].flatten(1).norm(dim=1)
                  * grids.lines[m].detach()[0].flatten(1).norm(dim=1) for m in range(3)]
    else:
        energy = [grids.lines[0].detach()[0].flatten(1).norm(dim=1)
                  * grids.lines[1].detach()[0].flatten(1).norm(dim=1)
                  * grids.lines[2].detach()[0].flatten(1).norm(dim=1)]
    if basis_cols is not None:
        norms = basis_cols.detach().norm(dim=0)
        energy = [e * norms[m * per:(m + 1) * per] for m, e in enumerate(energy)]
    return energy


def split_constraint(con: Constraint, idx: Tensor, name: str) -> Constraint:
    """``con`` on the components ``idx`` (axis 1) of tensor ``name``."""
    if isinstance(con, Mask):
        return Mask(con.keep.index_select(1, idx.to(con.keep.device)))
    if isinstance(con, QuantGrid) and con.axis in (None, 1):
        if con.axis is None:
            return con
        return replace(con, lo=con.lo[idx.to(con.lo.device)],
                       scale=con.scale[idx.to(con.scale.device)])
    if isinstance(con, Half):
        return con
    raise NerfzipError(f"progressive: {name} is under a {type(con).__name__} constraint, which "
                       "cannot be split by component; run progressive before vq, "
                       "tensor_decompose and entropy_model")


def basis_name(fld: TensoRF) -> str:
    """The basis weight whose columns are the appearance components."""
    return "basis.down.weight" if "basis" in fld.low_rank else "basis.weight"


@register_pass("progressive", Config)
def progressive(model: RadianceModel | Compressed, cfg: Config, ctx: PassContext
                ) -> tuple[Compressed, dict[str, Any]]:
    """Layer a TensoRF for progressive decoding: components by energy into a base layer and
    refinement layers, each its own .nrz sections; any prefix of the file renders."""
    c = Compressed.of(model)
    fld = c.model.field
    if not isinstance(fld, TensoRF):
        raise NerfzipError(f"progressive: the {fld.family} family has no layered form "
                           "(supported: tensorf-vm, tensorf-cp)")
    fc = fld.config
    if fc.density_groups:
        raise NerfzipError("progressive: the field is already layered")
    for what, n in (("density", fc.density_components), ("appearance",
                                                         fc.appearance_components)):
        if n < cfg.layers:
            raise NerfzipError(f"progressive: {cfg.layers} layers need at least {cfg.layers} "
                               f"{what} components per mode; the field has {n}")
    sizes = {p: group_sizes(n, cfg.layers, cfg.growth) for p, n in
             zip(PREFIXES, (fc.density_components, fc.appearance_components))}
    bname = basis_name(fld)
    basis = fld.get_parameter(bname)
    old = fld.named_tensors()
    tensors: dict[str, Tensor] = {k: v for k, v in old.items()
                                  if not k.startswith(PREFIXES) and k != bname}
    constraints = {k: v for k, v in c.constraints.items()
                   if not k.startswith(PREFIXES) and k != bname}
    columns: list[Tensor] = []  # old basis column of each new feature
    shares: dict[str, list[float]] = {}
    for prefix in PREFIXES:
        grids: FactorGrids = fld.get_submodule(prefix)
        per = grids.lines[0].shape[1]
        energy = component_energy(grids, basis if prefix == "app_grids" else None)
        order = [torch.argsort(e, descending=True, stable=True) for e in energy]
        total = float(sum(e.pow(2).sum() for e in energy)) or 1.0
        shares[prefix] = []
        start, acc = 0, 0.0
        for g, n in enumerate(sizes[prefix]):
            for m, perm in enumerate(order):
                idx = perm[start:start + n]
                acc += float(energy[m][idx].pow(2).sum())
                kinds = ("planes", "lines") if grids.decomposition == "vm" else ("lines",)
                modes = [m] if grids.decomposition == "vm" else [0, 1, 2]
                for kind in kinds:
                    for a in modes:
                        src = f"{prefix}.{kind}.{a}"
                        dst = f"{prefix}.{kind}.{3 * g + a}"
                        tensors[dst] = old[src].index_select(1, idx.to(old[src].device))
                        if c.constraints.get(src):
                            constraints[dst] = [split_constraint(k, idx, src)
                                                for k in c.constraints[src]]
                if prefix == "app_grids":
                    columns.append(idx + m * per)
            start += n
            shares[prefix].append(acc / total)
    perm = torch.cat(columns).to(basis.device)
    tensors[bname] = basis.detach().index_select(1, perm)
    if c.constraints.get(bname):
        constraints[bname] = [permuted_basis_constraint(k, perm) for k in c.constraints[bname]]
    config = fld.config_dict()
    config["config"] = {**config["config"], "density_groups": sizes["density_grids"],
                        "appearance_groups": sizes["app_grids"]}
    new = build_field(config, {k: v.cpu() for k, v in tensors.items()}).to(fld.aabb.device)
    change = output_change(fld, new)
    c.model.field = new
    c.constraints.clear()
    c.constraints.update(constraints)
    c.project()
    report = {"layers": cfg.layers, "density_groups": sizes["density_grids"],
              "appearance_groups": sizes["app_grids"],
              "energy": [round(x, 6) for x in shares["density_grids"]],
              "appearance_energy": [round(x, 6) for x in shares["app_grids"]],
              "max_output_change": change}
    c.record("progressive", {"layers": cfg.layers, "growth": cfg.growth}, report)
    return c, report


def permuted_basis_constraint(con: Constraint, perm: Tensor) -> Constraint:
    """A constraint of the basis [out, K] with its columns permuted by ``perm``."""
    if isinstance(con, Mask):
        return Mask(con.keep.index_select(1, perm.to(con.keep.device)))
    if isinstance(con, QuantGrid) and con.axis == 1:
        return replace(con, lo=con.lo[perm], scale=con.scale[perm])
    if isinstance(con, (QuantGrid, Half)):
        return con
    raise NerfzipError(f"progressive: the appearance basis is under a {type(con).__name__} "
                       "constraint; run progressive before vq, tensor_decompose and "
                       "entropy_model")


@torch.no_grad()
def output_change(before: TensoRF, after: TensoRF, n: int = 4096) -> float:
    """Largest change of density or colour at ``n`` random points and directions (the
    layering only reorders sums: float rounding)."""
    gen = torch.Generator().manual_seed(0)
    lo, hi = before.aabb[0].cpu(), before.aabb[1].cpu()
    x = (lo + (hi - lo) * torch.rand(n, 3, generator=gen)).to(before.aabb.device)
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen), dim=-1).to(x.device)
    s0, c0 = before.density(x), before.radiance(x, d)
    s1, c1 = after.density(x), after.radiance(x, d)
    return float(max((s0 - s1).abs().max() / s0.abs().max().clamp(min=1e-6),
                     (c0 - c1).abs().max()))
