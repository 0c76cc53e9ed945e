"""How much each grid entry matters to the rendered images (VQRF's importance score).

The importance of a grid entry (a TensoRF plane texel or line entry, a hash-table entry) is the
compositing weight of every sample along the training rays, splatted onto the field's feature
grids with the coefficients interpolation reads them with; an octree leaf's is the sum of its
segments' weights, which its renderer gives exactly. The field family does the splat
(``Field.importance``, the adjoint of its own ``read_grid``), so these functions work for any
family with feature grids.

``occupancy_importance`` is the cheap variant that needs no rays: every occupied cell of the
occupancy grid counts once.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from nerfzip.data.scene import Scene
from nerfzip.errors import NerfzipError
from nerfzip.fields.base import FeatureGrid
from nerfzip.fields.octree import Octree
from nerfzip.fields.tensorf import TensoRF
from nerfzip.rendering.model import RadianceModel
from nerfzip.rendering.octree import leaf_weights
from nerfzip.rendering.renderer import sample_weights
from nerfzip.utils.progress import progress_bar

MAX_LATTICE = 1 << 24
"""Most lattice points ``occupancy_importance`` queries (a 256^3 lattice)."""


def require_tensorf(model: RadianceModel, what: str) -> TensoRF:
    """The model's TensoRF field, for the passes that work on its components (``reduce_rank``,
    ``convert``, component pruning): a structure only that family has."""
    if not isinstance(model.field, TensoRF):
        raise NerfzipError(f"{what} works on TensoRF fields (tensorf-vm, tensorf-cp), not "
                           f"{model.field.family}")
    return model.field


def require_grids(model: RadianceModel, what: str) -> dict[str, FeatureGrid]:
    """The field's feature grids (``Field.feature_grids``), or a one-line error for a family
    that has none (an MLP)."""
    grids = model.field.feature_grids()
    if not grids:
        raise NerfzipError(f"{what} works on fields with feature grids (tensorf-vm, "
                           f"tensorf-cp, hash-grid), not {model.field.family}")
    return grids


def accumulate(out: dict[str, Tensor], maps: dict[str, Tensor]) -> None:
    for name, m in maps.items():
        out[name] = out[name] + m if name in out else m


def grid_importance(model: RadianceModel, scene: Scene, n_rays: int = 1 << 20,
                    chunk: int = 8192, seed: int = 0, quiet: bool = True) -> dict[str, Tensor]:
    """Importance maps (name -> the grid's shape with its feature axis of length 1) from
    ``n_rays`` random training rays: the compositing weight of every sample, splatted by the
    field's own ``importance`` hook."""
    require_grids(model, "importance")
    field = model.field
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, Tensor] = {}
    device = field.aabb.device
    bar = progress_bar(n_rays, desc="importance", quiet=quiet)
    field.eval()
    for start in range(0, n_rays, chunk):
        m = min(chunk, n_rays - start)
        rays, _ = scene.random_rays("train", m, gen)
        if isinstance(field, Octree) and model.render.sampler == "octree":
            # Leaf traversal gives each leaf's weight exactly: no samples to splat.
            w = leaf_weights(field, rays.to(device), model.render.stop_transmittance, "sum")
            accumulate(out, {name: w.float().view(1, -1).to(device)
                             for name in field.feature_grids()})
        else:
            pts, wts = sample_weights(field, rays.to(device), model.render, model.occupancy)
            accumulate(out, field.importance(pts, wts))
        bar.update(m)
    bar.close()
    return out


def occupancy_importance(model: RadianceModel, chunk: int = 1 << 20) -> dict[str, Tensor]:
    """Importance from the occupancy grid alone: every point of a lattice at the field's
    finest vertex spacing (``Field.grid_shape``, at most ``MAX_LATTICE`` points) that falls in
    an occupied cell weighs 1, so every entry an occupied cell covers is reached, however much
    finer the field's grid is than the occupancy grid."""
    require_grids(model, "occupancy pruning")
    field = model.field
    if model.occupancy is None:
        raise NerfzipError("the model has no occupancy grid to prune by")
    shape = field.grid_shape() or (model.occupancy.resolution,) * 3
    # A hash grid's finest level (512^3 vertices) would take minutes of lookups: thin the
    # lattice evenly; its finest hashed entries are then reached by nearby points only.
    thin = max(1.0, (math.prod(shape) / MAX_LATTICE) ** (1 / 3))
    lo, hi = field.aabb[0], field.aabb[1]
    axes = [torch.linspace(float(lo[a]), float(hi[a]), max(2, round(shape[a] / thin)),
                           device=lo.device) for a in range(3)]
    lattice = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).view(-1, 3)
    out: dict[str, Tensor] = {}
    for i in range(0, lattice.shape[0], chunk):
        pts = lattice[i:i + chunk]
        pts = pts[model.occupancy.query(pts)]
        if pts.shape[0]:
            accumulate(out, field.importance(pts, torch.ones(pts.shape[0], device=pts.device)))
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

