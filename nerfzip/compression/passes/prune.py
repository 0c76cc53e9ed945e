"""The ``prune`` pass: set parameters to exactly zero (stored sparsely in the .nrz file) or
remove whole components so the field really shrinks.

- ``magnitude``: unstructured, the smallest-magnitude entries of the weight tensors, one
  threshold over all of them (``scope="global"``) or a share per tensor (``"layer"``), by
  the share to ``remove`` or an absolute ``threshold``; any field family.
- ``importance``: fields with feature grids; plane texels, line entries or hash-table entries
  whose accumulated rendering weight over training rays is negligible are zeroed in every
  channel (VQRF's voxel pruning). ``keep_mass`` is the share of total importance the kept
  entries hold.
- ``occupancy``: grid fields; entries no occupied cell projects onto.
- ``neurons`` (structured): MLP NeRFs; the share ``remove`` of each trunk layer's neurons that
  matter least are removed, so every matrix really shrinks (``colour_branch=True``: the same
  share of the feature channels and view-direction neurons too); given the scene, the kept weights
  are refitted to reproduce the original layers (``neurons.py``), and ``refit_steps`` of
  distillation from the original (rendered novel-view rays plus point targets) then make the
  pruned model render like it.
- ``leaves`` (structured): octree fields; the leaves holding the least rendering importance
  are removed from the octree, the kept ones holding ``keep_mass`` of the total.
- ``components`` (structured): grid fields; the share ``remove`` of density and appearance
  components with the smallest plane-norm x line-norm are removed from every mode (and the
  appearance basis loses the matching columns), so rendering does less work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from nerfzip.compression.analysis.importance import (
    grid_importance,
    keep_by_importance,
    occupancy_importance,
    require_grids,
    require_tensorf,
)
from nerfzip.compression.compressed import Compressed
from nerfzip.compression.constraints import Mask, constrained
from nerfzip.compression.fit.neurons import REFIT_LR, prune_neurons
from nerfzip.compression.registry import PassContext, register_pass
from nerfzip.data.scene import Scene
from nerfzip.errors import NerfzipError
from nerfzip.fields.octree import Octree
from nerfzip.fields.tensorf import FactorGrids
from nerfzip.rendering.model import RadianceModel
from nerfzip.utils.schema import limits

MIN_ELEMENTS = 1024
METHODS = ("magnitude", "importance", "occupancy", "components", "neurons", "leaves")


def weight_tensors(c: Compressed) -> dict[str, Tensor]:
    """Tensors unstructured pruning may touch: float matrices / grids with >= 1024 entries."""
    return {k: v for k, v in c.tensors().items()
            if v.is_floating_point() and v.dim() >= 2 and v.numel() >= MIN_ELEMENTS}


@dataclass
class Config:
    """Pruning."""

    remove: float = field(default=0.5, metadata=limits(0.0, 1.0))
    """Share removed: of the weights (magnitude), of the components or neurons (structured)."""
    method: str = field(default="magnitude", metadata=limits(choices=METHODS))
    """magnitude, importance, occupancy (grid entries), components, neurons or leaves
    (structured)."""
    scope: str = field(default="global", metadata=limits(choices=("global", "layer")))
    """magnitude: one threshold over all weights (global) or the share per tensor (layer)."""
    threshold: float | None = None
    """magnitude: prune values at or below this magnitude instead of a share."""
    keep_mass: float = field(default=0.999, metadata=limits(0.0, 1.0))
    """importance, leaves: share of the total rendering importance the kept grid entries or
    octree leaves hold."""
    n_rays: int = field(default=1 << 20, metadata=limits(1))
    """importance, leaves: training rays the importance is accumulated over."""
    refit_steps: int = field(default=0, metadata=limits(0))
    """neurons: distillation steps from the unpruned network after the rebuild."""
    refit_lr: float = field(default=REFIT_LR, metadata=limits(0.0, lo_open=True))
    """neurons: learning rate of the refit."""
    colour_branch: bool = False
    """neurons: also remove feature channels and view-direction neurons."""


@register_pass("prune", Config, renames={"ratio": "remove"})
def prune(model: RadianceModel | Compressed, cfg: Config, ctx: PassContext
          ) -> tuple[Compressed, dict[str, Any]]:
    """Unstructured (stored sparsely) or structured pruning (a smaller field)."""
    c = Compressed.of(model)
    method, scene = cfg.method, ctx.scene
    if method == "magnitude":
        report = prune_magnitude(c, cfg.remove, cfg.scope, cfg.threshold)
    elif method == "components":
        report = prune_components(c, cfg.remove)
    elif method == "leaves":
        report = prune_leaves(c, scene, cfg.keep_mass, cfg.n_rays)
    elif method == "neurons":
        _validate_share(cfg.remove)
        report = prune_neurons(c, cfg.remove, scene, cfg.refit_steps, cfg.refit_lr,
                               cfg.colour_branch, ctx.quiet)
    else:
        require_grids(c.model, f"prune(method={method})")
        if method == "importance":
            if scene is None:
                raise NerfzipError("prune(method=importance) needs the scene's training views")
            scores = grid_importance(c.model, scene, cfg.n_rays)
        else:
            scores = occupancy_importance(c.model)
        report = prune_grid_entries(c, scores, cfg.keep_mass if method == "importance" else 1.0)
    c.project()
    args = {"remove": cfg.remove, "method": method, "scope": cfg.scope,
            "threshold": cfg.threshold, "keep_mass": cfg.keep_mass}
    if method in ("importance", "leaves"):
        args["n_rays"] = cfg.n_rays
    if method == "neurons":
        args |= {"refit_steps": cfg.refit_steps, "refit_lr": cfg.refit_lr,
                 "colour_branch": cfg.colour_branch}
    c.record("prune", args, report)
    return c, report


def _validate_share(remove: float) -> None:
    if not 0.0 <= remove < 1.0:
        raise NerfzipError(f"prune: remove must be in [0, 1), got {remove}")


def prune_magnitude(c: Compressed, remove: float, scope: str, threshold: float | None
                    ) -> dict[str, Any]:
    _validate_share(remove)
    tensors = {k: constrained(v.detach(), c.constraints.get(k, []))
               for k, v in weight_tensors(c).items()}
    if not tensors:
        raise NerfzipError("prune: the field has no weight tensors large enough to prune")
    if threshold is None and scope == "global":
        mags = torch.cat([v.abs().reshape(-1) for v in tensors.values()])
        k = int(remove * mags.numel())
        threshold = float(mags.kthvalue(k).values) if k > 0 else -1.0
    pruned = total = 0
    for name, v in tensors.items():
        t = threshold
        if t is None:  # per layer, by share
            k = int(remove * v.numel())
            t = float(v.abs().reshape(-1).kthvalue(k).values) if k > 0 else -1.0
        keep = v.abs() > t
        c.add(name, Mask(keep))
        pruned += int((~keep).sum())
        total += v.numel()
    return {"pruned": pruned, "of": total, "sparsity": pruned / total,
            "tensors": len(tensors), "threshold": threshold}


def prune_grid_entries(c: Compressed, scores: dict[str, Tensor], keep_mass: float
                       ) -> dict[str, Any]:
    tensors = c.tensors()
    grids = c.model.field.feature_grids()
    pruned = total = 0
    for name, score in scores.items():
        # Interpolation reads the neighbours of a kept entry: grow the kept set in space, but
        # never across a hash table, whose neighbouring entries are unrelated.
        dilate = 1 if grids[name].spatial else 0
        keep = keep_by_importance(score, keep_mass, dilate).expand_as(
            tensors[name]).contiguous()
        c.add(name, Mask(keep))
        pruned += int((~keep).sum())
        total += keep.numel()
    return {"pruned": pruned, "of": total, "sparsity": pruned / max(1, total),
            "tensors": len(scores)}


def component_scores(grids: FactorGrids) -> list[Tensor]:
    """Per mode, each component's size: |plane_c| * |line_c| (VM) or the product of its line
    norms (CP, a single 'mode')."""
    if grids.decomposition == "vm":
        return [grids.planes[m][0].flatten(1).norm(dim=1) * grids.lines[m][0].flatten(1).norm(
            dim=1) for m in range(3)]
    score = torch.ones(grids.lines[0].shape[1], device=grids.lines[0].device)
    for line in grids.lines:
        score = score * line[0].flatten(1).norm(dim=1)
    return [score]


def keep_components(grids: FactorGrids, remove: float) -> list[Tensor]:
    scores = component_scores(grids)
    n = scores[0].numel()
    k = max(1, n - int(round(remove * n)))
    return [torch.sort(torch.topk(s, k).indices).values for s in scores]


@torch.no_grad()
def select_components(grids: FactorGrids, keep: list[Tensor]) -> None:
    if grids.decomposition == "vm":
        for m in range(3):
            grids.planes[m] = nn.Parameter(grids.planes[m].data[:, keep[m]].clone())
            grids.lines[m] = nn.Parameter(grids.lines[m].data[:, keep[m]].clone())
    else:
        for a in range(3):
            grids.lines[a] = nn.Parameter(grids.lines[a].data[:, keep[0]].clone())


def prune_components(c: Compressed, remove: float) -> dict[str, Any]:
    _validate_share(remove)
    field = require_tensorf(c.model, "prune(method=components)")
    if field.config.density_groups:
        raise NerfzipError("prune(method=components): the field is layered by progressive; "
                           "prune components before progressive")
    if c.constraints:
        raise NerfzipError("prune(method=components) must come before passes that constrain "
                           "tensors (it changes their shapes)")
    before = field.num_parameters()
    dens_keep = keep_components(field.density_grids, remove)
    app_keep = keep_components(field.app_grids, remove)
    # The basis reads the appearance components mode after mode: keep the matching columns.
    per_mode = field.app_grids.lines[0].shape[1]
    cols = torch.cat([k + i * per_mode for i, k in enumerate(app_keep)])
    with torch.no_grad():
        select_components(field.density_grids, dens_keep)
        select_components(field.app_grids, app_keep)
        old = field.basis
        field.basis = nn.Linear(cols.numel(), old.out_features, bias=False)
        field.basis.weight.copy_(old.weight[:, cols])
    field.config = type(field.config)(**{
        **field.config.__dict__, "density_components": int(dens_keep[0].numel()),
        "appearance_components": int(app_keep[0].numel())})
    return {"density_components": int(dens_keep[0].numel()),
            "appearance_components": int(app_keep[0].numel()),
            "parameters_before": before, "parameters_after": field.num_parameters()}


def prune_leaves(c: Compressed, scene: Scene | None, keep_mass: float, n_rays: int
                 ) -> dict[str, Any]:
    """Octree fields: remove the leaves of least rendering importance (the sum of their
    segments' weights over ``n_rays`` training rays), keeping the fewest that hold
    ``keep_mass`` of the total; the octree really shrinks (structure and leaf data)."""
    field = c.model.field
    if not isinstance(field, Octree):
        raise NerfzipError(f"prune(method=leaves) works on octree fields (bake first), not "
                           f"{field.family}")
    if scene is None:
        raise NerfzipError("prune(method=leaves) needs the scene's training views")
    if c.constraints:
        raise NerfzipError("prune(method=leaves) must come before passes that constrain "
                           "tensors (it changes their shapes)")
    score = grid_importance(c.model, scene, n_rays)[next(iter(field.feature_grids()))]
    keep = keep_by_importance(score.view(1, -1).cpu(), keep_mass, dilate=0).view(-1)
    before = field.config.leaves
    c.model.field = field.keep_leaves(keep.to(field.masks.device))
    return {"leaves_before": before, "leaves_after": c.model.field.config.leaves,
            "keep_mass": keep_mass}
