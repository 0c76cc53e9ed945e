"""How much each grid entry matters to the rendered images (VQRF's importance score).

The importance of a plane texel or line entry is the compositing weight of every sample along
the training rays, splatted onto the factor grids with the same bilinear / linear coefficients
that interpolation reads them with. It is computed as the gradient of ``sum(w * interp(Z))``
with respect to an all-zero grid ``Z``: autograd does the splatting, on any device.

``occupancy_importance`` is the cheap variant that needs no rays: every occupied cell of the
occupancy grid counts once.
"""

from __future__ import annotations

import torch
from torch import Tensor

from nerfzip.data.scene import Scene
from nerfzip.errors import NerfzipError
from nerfzip.fields.tensorf import MAT_AXES, VEC_AXES, FactorGrids, TensoRF
from nerfzip.rendering.model import RadianceModel
from nerfzip.rendering.renderer import sample_weights
from nerfzip.utils.progress import progress_bar


def require_tensorf(model: RadianceModel, what: str) -> TensoRF:
    if not isinstance(model.field, TensoRF):
        raise NerfzipError(f"{what} works on grid fields (tensorf-vm, tensorf-cp), not "
                           f"{model.field.family}")
    return model.field


def grid_names(grids: FactorGrids, prefix: str) -> list[tuple[str, tuple[int, ...]]]:
    """(tensor name, axes of the point it is indexed by) for each factor of ``grids``."""
    if grids.decomposition == "vm":
        planes = [(f"{prefix}.planes.{m}", MAT_AXES[m]) for m in range(3)]
        return planes + [(f"{prefix}.lines.{m}", (VEC_AXES[m],)) for m in range(3)]
    return [(f"{prefix}.lines.{a}", (a,)) for a in range(3)]


def splat(grids: FactorGrids, x: Tensor, w: Tensor, out: dict[str, Tensor], prefix: str) -> None:
    """Add the weights ``w`` [N] of normalised points ``x`` [N, 3] onto ``out`` (one map per
    factor, shaped like one channel of it)."""
    for (name, axes), tensor in zip(grid_names(grids, prefix),
                                    list(grids.planes) + list(grids.lines)):
        z = torch.zeros((1, 1, *tensor.shape[2:]), device=x.device, requires_grad=True)
        if len(axes) == 2:
            vals = grids.plane_values(z, x[:, list(axes)])
        else:
            vals = grids.line_values(z, x[:, axes[0]])
        (vals[0] * w).sum().backward()
        out[name] = out.get(name, torch.zeros_like(z.grad)) + z.grad


def importance_from_points(field: TensoRF, points: Tensor, weights: Tensor,
                           out: dict[str, Tensor]) -> None:
    x = field.normalize(points).clamp(-1, 1)
    splat(field.density_grids, x, weights, out, "density_grids")
    splat(field.app_grids, x, weights, out, "app_grids")


def grid_importance(model: RadianceModel, scene: Scene, n_rays: int = 1 << 20,
                    chunk: int = 8192, seed: int = 0, quiet: bool = True) -> dict[str, Tensor]:
    """Importance maps (name -> [1, 1, ...] like one channel of the factor) from ``n_rays``
    random training rays."""
    field = require_tensorf(model, "importance")
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, Tensor] = {}
    device = field.aabb.device
    bar = progress_bar(n_rays, desc="importance", quiet=quiet)
    field.eval()
    for start in range(0, n_rays, chunk):
        m = min(chunk, n_rays - start)
        rays, _ = scene.random_rays("train", m, gen)
        rays = rays.to(device)
        pts, wts = sample_weights(field, rays, model.render, model.occupancy)
        with torch.enable_grad():
            importance_from_points(field, pts, wts, out)
        bar.update(m)
    bar.close()
    return out


def occupancy_importance(model: RadianceModel, chunk: int = 1 << 20) -> dict[str, Tensor]:
    """Importance from the occupancy grid alone: every point of a lattice at the field's voxel
    spacing that falls in an occupied cell weighs 1 (so every texel an occupied cell covers
    is reached, however much finer the field's grid is than the occupancy grid)."""
    field = require_tensorf(model, "occupancy pruning")
    if model.occupancy is None:
        raise NerfzipError("the model has no occupancy grid to prune by")
    lo, hi = field.aabb[0], field.aabb[1]
    res = field.config.resolution
    axes = [torch.linspace(float(lo[a]), float(hi[a]), res[a], device=lo.device)
            for a in range(3)]
    lattice = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).view(-1, 3)
    out: dict[str, Tensor] = {}
    for i in range(0, lattice.shape[0], chunk):
        pts = lattice[i:i + chunk]
        pts = pts[model.occupancy.query(pts)]
        if pts.shape[0]:
            with torch.enable_grad():
                importance_from_points(field, pts, torch.ones(pts.shape[0],
                                                              device=pts.device), out)
    return out


def keep_by_importance(score: Tensor, keep_mass: float, dilate: int = 1) -> Tensor:
    """The smallest set of entries holding ``keep_mass`` of the total importance (bool, same
    shape), grown by ``dilate`` entries on every side (interpolation reads the neighbours of
    every kept entry; importance from a sample of rays is noisy)."""
    flat = score.reshape(-1)
    order = torch.argsort(flat, descending=True)
    cum = torch.cumsum(flat[order], 0)
    total = float(cum[-1]) if cum.numel() else 0.0
    keep = torch.zeros_like(flat, dtype=torch.bool)
    if total <= 0:
        return keep.view(score.shape)
    n_keep = int(torch.searchsorted(cum, torch.tensor(keep_mass * total, dtype=cum.dtype,
                                                        device=cum.device))) + 1
    keep[order[:min(n_keep, flat.numel())]] = True
    keep = (keep & (flat > 0)).view(score.shape)
    if dilate > 0:
        k = 2 * dilate + 1
        grown = keep.float().view(1, 1, *score.shape[-2:])
        pad = (dilate, dilate) if score.shape[-1] > 1 else (0, 0)
        kernel = (k, k) if score.shape[-1] > 1 else (k, 1)
        grown = torch.nn.functional.max_pool2d(grown, kernel, stride=1,
                                               padding=(dilate, pad[0]))
        keep = grown.view(score.shape) > 0
    return keep


def expand_channels(mask: Tensor, like: Tensor) -> Tensor:
    """A per-texel mask [1, 1, ...] broadcast to every channel of ``like`` [1, C, ...]."""
    return mask.expand_as(like).contiguous()

