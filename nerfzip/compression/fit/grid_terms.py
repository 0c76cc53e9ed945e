"""A TensoRF field's factor grids as groups of rank-1 (CP) terms, and back: what ``reduce_rank``
and ``convert`` fit and rebuild a field from.

A VM quantity is, per mode m, the terms ``plane_m,c (x) line_m,c`` (and, for appearance, the
basis columns of mode m as a third factor); a CP quantity is the terms ``X_c (x) Y_c (x) Z_c``
(plus basis). ``term_groups`` reads them as factor matrices, ``grid_tensors`` writes factor
matrices back as field tensors, ``rebuilt_field`` makes the new field.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from nerfzip.compression.analysis.importance import require_tensorf
from nerfzip.compression.compressed import Compressed
from nerfzip.errors import NerfzipError
from nerfzip.fields.base import build_field
from nerfzip.fields.tensorf import MAT_AXES, FactorGrids, TensoRF


def require_grid_field(c: Compressed, what: str) -> TensoRF:
    """The TensoRF field of ``c``, refusing constraints on its grids or basis (these passes
    rebuild them with new shapes) and a factorised basis."""
    field = require_tensorf(c.model, what)
    if field.config.density_groups:
        raise NerfzipError(f"{what}: the field is layered by progressive; run {what} before "
                           "progressive")
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
