"""The ``reduce_rank`` pass: a VM / CP field with fewer components, the best approximation of
each quantity's factor product that fewer components can hold: a real, smaller field. It changes
the grids' shapes, so it refuses to run after passes that constrained those tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from nerfzip.compression.compressed import Compressed
from nerfzip.compression.fit.grid_terms import (
    grid_tensors,
    rebuilt_field,
    require_grid_field,
    term_groups,
)
from nerfzip.compression.fit.tensor_fit import balanced, cp_distance, reduce_cp
from nerfzip.compression.registry import PassContext, register_pass
from nerfzip.errors import NerfzipError
from nerfzip.rendering.model import RadianceModel
from nerfzip.utils.schema import limits


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


@dataclass
class Config:
    """Fewer TensoRF components."""

    density: int = field(default=0, metadata=limits(0))
    """Density components to keep (per mode for VM, in total for CP; 0 keeps them all)."""
    appearance: int = field(default=0, metadata=limits(0))
    """Appearance components to keep (as density)."""
    iters: int = field(default=100, metadata=limits(1))
    """parafac iterations of each reduced CP fit."""


@register_pass("reduce_rank", Config)
def reduce_rank(model: RadianceModel | Compressed, cfg: Config, ctx: PassContext
                ) -> tuple[Compressed, dict[str, Any]]:
    """A TensoRF with fewer components, each quantity's best approximation at that rank.

A copy of ``model`` whose TensoRF keeps ``density`` / ``appearance`` components (per mode
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
    density, appearance, iters = cfg.density, cfg.appearance, cfg.iters
    c = Compressed.of(model)
    tensorf = require_grid_field(c, "reduce_rank")
    fc = tensorf.config
    d, a = density or fc.density_components, appearance or fc.appearance_components
    if not (1 <= d <= fc.density_components and 1 <= a <= fc.appearance_components) \
            or (d, a) == (fc.density_components, fc.appearance_components):
        raise NerfzipError(f"reduce_rank: density and appearance must be at most the field's "
                           f"{fc.density_components} / {fc.appearance_components} components "
                           f"and one of them fewer (got {density} / {appearance}, 0 keeps)")
    before = tensorf.num_parameters()
    dens, dens_err = reduce_groups(term_groups(tensorf.density_grids, None), d, iters)
    app, app_err = reduce_groups(term_groups(tensorf.app_grids, tensorf.basis.weight), a, iters)
    res = tuple(fc.resolution)
    tensors = {**grid_tensors("density_grids", fc.decomposition, dens, res),
               **grid_tensors("app_grids", fc.decomposition, app, res),
               "basis.weight": torch.cat([g[-1] for g in app], dim=1)}
    c.model.field = rebuilt_field(tensorf, {"density_components": d, "appearance_components": a},
                                  tensors)
    report = {"density_components": [fc.density_components, d],
              "appearance_components": [fc.appearance_components, a],
              "density_rel_error": dens_err, "appearance_rel_error": app_err,
              "parameters_before": before, "parameters_after": c.model.field.num_parameters()}
    c.record("reduce_rank", {"density": density, "appearance": appearance, "iters": iters},
             report)
    return c, report
