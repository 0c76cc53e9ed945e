"""The ``progressive`` pass: a model split into a base layer and refinement layers, so that
any prefix of its .nrz file decodes and renders. Two orders:

- ``order=precision`` (any family, after ``quant``): every quantized feature grid is stored
  as nested layers, a coarse quantization step first and finer residuals after
  (``_precision.py``, ``codec/ladder.py``); the coarse steps are chosen per tensor by the
  shared allocator under a base-layer byte budget. On lego this is the order that keeps the
  first tenth of the file within 3 dB of the whole.
- ``order=components`` (TensoRF, before ``quant``; the default), below.

A TensoRF's components are split, strongest first, into the layers.

A TensoRF quantity is a sum of rank-1 terms (VM: per mode m, ``P_m,c (x) L_m,c``; CP:
``X_c (x) Y_c (x) Z_c``); dropping some leaves a field that is the sum of the others. The pass
orders each mode's terms, strongest first, and splits them into ``layers`` groups whose sizes
grow by ``growth`` (VM, 16 components, 4 layers, growth 2: 1, 2, 4, 9 per mode):

- VM density (``density=svd``): the mode's terms are rewritten, as many of them, as the
  singular vectors of the matrix ``P L^T`` (``svd_rotated``), so the first k are its best
  rank-k approximation (Eckart-Young) and all of them give the same sums. Choosing among the
  trained terms instead (``density=energy``) loses the terms that build the density up: on
  the test scene the base layer then renders an almost empty scene (8.5 dB against 22.5).
- Appearance (``appearance=greedy``): the terms with their basis columns,
  ``sum_c B_c P_c L_c``, are a 3-way sum that no rotation preserves, so they are chosen in
  greedy order: each next the term leaving the smallest residual of the decoder's input at
  the occupied cells (``greedy_order``; +0.3 to 0.4 dB per prefix over ``energy``).
- ``energy`` (CP density, or when asked): the Frobenius norm of the term on the grid,
  ``||P_c|| ||L_c||`` or ``||X_c|| ||Y_c|| ||Z_c||``, times ``||B_c||`` for appearance.

Group g is stored as its own tensors (``FactorGrids`` groups: factor ``3 g + m``), the basis
columns permuted to match, so the full field computes the same sums (up to float rounding).
Everything else (decoder, basis, occupancy grid) and group 0 make the base layer; the .nrz
writer puts group g's sections in layer g (``codec/layers.py``), and a reader that has not
received a group yet takes it as zeros (``Field.optional_tensors``).

Order in a pipeline: ``progressive`` first is the supported order. Constraints already on
the grids follow their components when ``density=energy`` (the VM density's singular vectors
need free factors, so plain ``quant(8) progressive`` is refused in one line): a pruning mask
and a per-component (axis 1) or per-tensor quantization grid are split with them, half
precision kept; a codebook, factorisation or learned prior is refused (``progressive`` must
come before ``vq``, ``tensor_decompose`` and ``entropy_model``). Passes after ``progressive``
see one tensor per group and work per group: ``quant`` gives each group its own grid. Passes
that rebuild the grids (``reduce_rank``, ``convert``, component pruning) must come before it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from nerfzip.compression.compressed import Compressed
from nerfzip.compression.constraints import Constraint, Half, Mask, QuantGrid
from nerfzip.compression.passes._precision import precision_layers
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
    density: str = field(default="svd", metadata=limits(choices=("svd", "energy")))
    """VM density order: svd (singular vectors, strongest first) or energy (components)."""
    appearance: str = field(default="greedy", metadata=limits(choices=("greedy", "energy")))
    """Appearance order: greedy (least feature error at occupied cells) or energy."""
    order: str = field(default="components", metadata=limits(choices=("components",
                                                                        "precision")))
    """What the layers refine: components (TensoRF, before quant) or precision (coarse
    quantization steps first, any family, after quant; ``_precision.py``)."""
    base: float = field(default=0.08, metadata=limits(0.0, 1.0, lo_open=True))
    """order=precision: the base layer's bytes, as a share of the layered tensors' bytes at
    full precision."""
    n_rays: int = field(default=1 << 16, metadata=limits(1))
    """order=precision: training rays the importance of grid entries is measured with."""
    calibrate: int = field(default=4096, metadata=limits(0))
    """order=precision: training rays rendered to scale each tensor's error (0: none)."""
    split: int = field(default=1 << 21, metadata=limits(0))
    """order=precision: a refinement level holding more values than this is split, tensor by
    tensor, over several layers (each decodes faster; 0: one layer per level)."""


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


def factor_norms(grids: FactorGrids) -> list[Tensor]:
    """Per mode (VM: 3, CP: 1), each component's energy on the grid [C]: the product of its
    factors' norms (the Frobenius norm of the rank-1 term)."""
    norms = [t.detach()[0].flatten(1).norm(dim=1) for t in grids.lines]
    if grids.decomposition == "vm":
        return [grids.planes[m].detach()[0].flatten(1).norm(dim=1) * norms[m] for m in range(3)]
    return [norms[0] * norms[1] * norms[2]]


def svd_rotated(plane: Tensor, line: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One VM mode's terms ``sum_c P_c (x) L_c`` rewritten with the same number of terms as
    the singular vectors of the matrix P L^T, strongest first (QR of both factors, SVD of the
    C x C core, in float64; each side takes the square root of the singular values): the
    first k terms are then the best rank-k approximation of the mode (Eckart-Young). Returns
    the new plane and line and the singular values [C]."""
    c, h, w = plane.shape[1:]
    a = plane.detach()[0].reshape(c, -1).T.double()
    b = line.detach()[0, :, :, 0].T.double()
    qa, ra = torch.linalg.qr(a)
    qb, rb = torch.linalg.qr(b)
    u, sv, vh = torch.linalg.svd(ra @ rb.T)
    root = sv.sqrt()
    a2, b2 = qa @ u * root, qb @ vh.T * root
    return (a2.T.reshape(1, c, h, w).to(plane.dtype), b2.T.reshape(1, c, -1, 1).to(line.dtype),
            sv.to(plane.dtype))


@torch.no_grad()
def greedy_order(fld: TensoRF, points: Tensor, basis: Tensor) -> list[Tensor]:
    """Per mode, the appearance components in greedy order: each next the one whose removal
    from the residual ``F_m - sum_chosen B_c f_c`` (F_m the mode's part of the decoder input
    at ``points``) leaves it smallest (matching pursuit without refitting)."""
    grids = fld.app_grids
    per = grids.lines[0].shape[1]
    feats = grids.features(fld.normalize(points))  # [modes * per, N]
    out = []
    for m in range(grids.num_components // per):
        terms = [basis[:, m * per + k, None] * feats[m * per + k][None] for k in range(per)]
        residual = torch.stack(terms).sum(dim=0)
        left, order = list(range(per)), []
        while left:
            best = min(left, key=lambda k: float((residual - terms[k]).pow(2).sum()))
            residual -= terms[best]
            order.append(best)
            left.remove(best)
        out.append(torch.tensor(order, device=basis.device))
    return out


def occupied_points(model: RadianceModel, limit: int = 1 << 16) -> Tensor | None:
    """Centres of the occupied cells of the model's occupancy grid (an even subsample of at
    most ``limit``), or None without a grid."""
    occ = model.occupancy
    if occ is None:
        return None
    idx = occ.occupied.nonzero()
    if len(idx) == 0:
        return None
    idx = idx[torch.linspace(0, len(idx) - 1, min(limit, len(idx))).long()]
    cell = (occ.aabb[1] - occ.aabb[0]) / occ.resolution
    return (occ.aabb[0] + (idx.float() + 0.5) * cell).to(model.field.aabb.device)


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


def layerable(c: Compressed, cfg: Config) -> TensoRF:
    """The TensoRF of ``c`` if ``cfg`` can layer it, else a one-line error saying why."""
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
    if cfg.density == "svd" and fc.decomposition == "vm":
        held = [k for k, v in c.constraints.items() if v and k.startswith("density_grids.")]
        if held:
            raise NerfzipError(f"progressive: {held[0]} is already constrained; the density's "
                               "singular vectors are computed from free factors: run "
                               "progressive before quant / prune / vq, or use "
                               "progressive(density=energy)")
    return fld


def ordered_terms(fld: TensoRF, prefix: str, cfg: Config, basis: Tensor,
                  points: Tensor | None) -> tuple[dict[str, Tensor], list[Tensor],
                                                  list[Tensor], str]:
    """One quantity's factors (the VM density's rotated to its singular vectors, else as
    they are), each mode's component order, each component's energy, and the order's name."""
    grids: FactorGrids = fld.get_submodule(prefix)
    per = grids.lines[0].shape[1]
    source: dict[str, Tensor] = {}
    energy = factor_norms(grids)
    order = [torch.argsort(e, descending=True, stable=True) for e in energy]
    how = "energy"
    if prefix == "density_grids" and cfg.density == "svd" and grids.decomposition == "vm":
        for m in range(3):
            plane, line, energy[m] = svd_rotated(grids.planes[m], grids.lines[m])
            source[f"{prefix}.planes.{m}"], source[f"{prefix}.lines.{m}"] = plane, line
            order[m] = torch.arange(per, device=plane.device)
        how = "svd"
    if prefix == "app_grids":
        energy = [e * basis[:, m * per:(m + 1) * per].norm(dim=0) for m, e in enumerate(energy)]
        if points is not None:
            order, how = greedy_order(fld, points, basis), "greedy"
    return source, order, energy, how


def split_groups(c: Compressed, prefix: str, source: dict[str, Tensor], order: list[Tensor],
                 energy: list[Tensor], sizes: list[int], tensors: dict[str, Tensor],
                 constraints: dict[str, list[Constraint]], columns: list[Tensor]
                 ) -> list[float]:
    """Write group g of quantity ``prefix`` (the next ``sizes[g]`` components of each mode's
    ``order``) to ``tensors`` as factors ``3 g + m``, their constraints split alike, and the
    appearance basis columns they read to ``columns``; returns the cumulative energy share
    of each layer."""
    grids: FactorGrids = c.model.field.get_submodule(prefix)
    per, vm = grids.lines[0].shape[1], grids.decomposition == "vm"
    total = float(sum(e.pow(2).sum() for e in energy)) or 1.0
    shares, start, acc = [], 0, 0.0
    for g, n in enumerate(sizes):
        for m, perm in enumerate(order):
            idx = perm[start:start + n]
            acc += float(energy[m][idx].pow(2).sum())
            for kind in ("planes", "lines") if vm else ("lines",):
                for a in [m] if vm else [0, 1, 2]:
                    src, dst = f"{prefix}.{kind}.{a}", f"{prefix}.{kind}.{3 * g + a}"
                    x = source.get(src, grids.get_parameter(f"{kind}.{a}").detach())
                    tensors[dst] = x.index_select(1, idx.to(x.device))
                    if c.constraints.get(src):
                        constraints[dst] = [split_constraint(k, idx, src)
                                            for k in c.constraints[src]]
            if prefix == "app_grids":
                columns.append(idx + m * per)
        start += n
        shares.append(acc / total)
    return shares


@register_pass("progressive", Config)
def progressive(model: RadianceModel | Compressed, cfg: Config, ctx: PassContext
                ) -> tuple[Compressed, dict[str, Any]]:
    """Layer a model for progressive decoding, by precision (coarse quantization steps first,
    then finer residuals) or by a TensoRF's components (strongest first): a base layer and
    refinement layers, each its own .nrz sections; any prefix of the file renders."""
    c = Compressed.of(model)
    if cfg.order == "precision":
        report = precision_layers(c, cfg.layers, cfg.base, cfg.n_rays, cfg.calibrate,
                                  cfg.split, ctx)
        c.record("progressive", {"layers": cfg.layers, "order": "precision",
                                 "base": cfg.base, "n_rays": cfg.n_rays,
                                 "calibrate": cfg.calibrate, "split": cfg.split}, report)
        return c, report
    fld = layerable(c, cfg)
    fc = fld.config
    sizes = {p: group_sizes(n, cfg.layers, cfg.growth) for p, n in
             zip(PREFIXES, (fc.density_components, fc.appearance_components))}
    bname = basis_name(fld)
    basis = fld.get_parameter(bname).detach()
    points = occupied_points(c.model) if cfg.appearance == "greedy" else None
    tensors = {k: v for k, v in fld.named_tensors().items()
               if not k.startswith(PREFIXES) and k != bname}
    constraints = {k: v for k, v in c.constraints.items()
                   if not k.startswith(PREFIXES) and k != bname}
    columns: list[Tensor] = []  # the old basis column of each new feature
    shares, orders = {}, {}
    for prefix in PREFIXES:
        source, order, energy, orders[prefix] = ordered_terms(fld, prefix, cfg, basis, points)
        shares[prefix] = split_groups(c, prefix, source, order, energy, sizes[prefix], tensors,
                                      constraints, columns)
    perm = torch.cat(columns).to(basis.device)
    tensors[bname] = basis.index_select(1, perm)
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
    report = {"layers": cfg.layers, "density_order": orders["density_grids"],
              "appearance_order": orders["app_grids"],
              "density_groups": sizes["density_grids"],
              "appearance_groups": sizes["app_grids"],
              "energy": [round(x, 6) for x in shares["density_grids"]],
              "appearance_energy": [round(x, 6) for x in shares["app_grids"]],
              "max_output_change": change}
    c.record("progressive", {"layers": cfg.layers, "growth": cfg.growth,
                             "density": cfg.density, "appearance": cfg.appearance}, report)
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
