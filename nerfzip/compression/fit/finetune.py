"""Fine-tuning between passes, with every pass's constraints in force.

Each constrained tensor gets a ``torch.nn.utils.parametrize`` parametrization that applies its
constraints on every forward pass: pruned entries are multiplied by their fixed mask (so they
get no gradient), quantized and half-precision tensors round with a straight-through
estimator (quantization-aware training: the optimiser moves a latent float copy), and
vector-quantized grids read their vectors from a trainable codebook through a fixed
assignment, and Tucker / CP tensors are trained through their core and factors (the
parametrization's latent tensors, what the file stores), as factorised networks are fine-tuned
(Kim et al., ICLR 2016). Each step computes every parametrized tensor once
(``parametrize.cached``). At the end the parametrizations are removed, leaving tensors that
satisfy their constraints exactly, and the codebooks and factors are updated with what was
learned.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from nerfzip.compression.compressed import Compressed
from nerfzip.compression.constraints import Constraint
from nerfzip.data.scene import Scene
from nerfzip.errors import NerfzipError
from nerfzip.rendering.model import RadianceModel
from nerfzip.rendering.renderer import render_rays
from nerfzip.utils.progress import progress_bar


class Constrain(nn.Module):
    """A parametrization applying a tensor's constraints (in their order). Each constraint's
    ``trainable`` tensors become parameters; a constraint with ``latent`` tensors (a
    factorisation) makes them the parametrization's latent tensors (``right_inverse``) and
    builds the tensor from them (``from_latent``)."""

    def __init__(self, constraints: list[Constraint]):
        super().__init__()
        self.original = list(constraints)
        ordered = sorted(constraints, key=lambda c: c.order)
        self.source = next((c for c in ordered if c.latent() is not None), None)
        self.rest = [c for c in ordered if c is not self.source]
        self.trained = nn.ModuleList([nn.ParameterList([nn.Parameter(t.clone())
                                                        for t in c.trainable()])
                                      for c in self.rest])
        self.penalty: Tensor | None = None
        """The constraints' loss terms (``penalty_with``) of the last forward pass."""

    def right_inverse(self, x: Tensor) -> Tensor | tuple[Tensor, ...]:
        if self.source is None:
            return x
        return tuple(p.to(x.device).clone() for p in self.source.latent())

    def forward(self, *latent: Tensor) -> Tensor:
        x = latent[0] if self.source is None else self.source.from_latent(list(latent))
        penalties = []
        for c, params in zip(self.rest, self.trained):
            term = c.penalty_with(x, list(params))
            if term is not None:
                penalties.append(term)
            x = c.project_with(x, list(params))
        self.penalty = sum(penalties) if penalties else None
        return x

    def finished(self, latent: list[Tensor] | None) -> list[Constraint]:
        """The constraints with what fine-tuning learned (in their original order)."""
        done = {id(c): c.trained([p for p in params], None)
                for c, params in zip(self.rest, self.trained)}
        if self.source is not None:
            done[id(self.source)] = self.source.trained([], latent)
        return [done[id(c)] for c in self.original]


def owner(root: nn.Module, name: str) -> tuple[nn.Module, str]:
    prefix, _, attr = name.rpartition(".")
    return (root.get_submodule(prefix) if prefix else root), attr


def finetune(model: RadianceModel | Compressed, steps: int, batch_size: int,
             lr_grid: float | None, lr_net: float | None, seed: int, scene: Scene | None,
             quiet: bool = True
             ) -> tuple[Compressed, dict[str, Any]]:
    """``steps`` of Adam on random training rays of ``scene``, constraints kept (the
    ``finetune`` pass, ``passes/finetune.py``), recorded in the pipeline."""
    c, report = train_constrained(model, steps, batch_size, lr_grid, lr_net, seed, scene,
                                  quiet)
    c.record("finetune", {"steps": steps, "batch_size": batch_size, "lr_grid": report.pop(
        "lr_grid"), "lr_net": report.pop("lr_net")}, report)
    return c, report


def train_constrained(model: RadianceModel | Compressed, steps: int, batch_size: int,
                      lr_grid: float | None, lr_net: float | None, seed: int,
                      scene: Scene | None,
                      quiet: bool = True, what: str = "finetune"
                      ) -> tuple[Compressed, dict[str, Any]]:
    """``steps`` of Adam on random training rays of ``scene`` with every constraint in force;
    the loss is the rendering MSE plus the constraints' penalties (a learned prior's weighted
    rate). Not recorded: the pass that calls it records itself."""
    if scene is None:
        raise NerfzipError(f"{what} needs the scene's training views (pass --data)")
    c = Compressed.of(model)
    field = c.model.field
    rates = field.finetune_rates()
    lr_net = rates["net"] if lr_net is None else lr_net
    lr_grid = rates["grid"] if lr_grid is None else lr_grid
    if not field.param_groups().get("grid"):  # a family without grids: one rate (recorded)
        lr_grid = lr_net
    hooks: dict[str, Constrain] = {}
    for name, cons in c.constraints.items():
        module, attr = owner(field, name)
        hooks[name] = Constrain(cons).to(field.aabb.device)
        parametrize.register_parametrization(module, attr, hooks[name], unsafe=True)
    opt = torch.optim.Adam(field.optimizer_groups({"grid": lr_grid, "net": lr_net}),
                           betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(seed)
    device = field.aabb.device
    bar = progress_bar(steps, desc=what, quiet=quiet)
    psnrs: list[float] = []
    penalties: list[float] = []
    field.train()
    try:
        for _ in range(steps):
            rays, target = scene.random_rays("train", batch_size, gen)
            rays, target = rays.to(device), target.to(device)
            with parametrize.cached():
                # Computed once per step, here, with gradients: the renderer's first read of
                # them is in its gradient-free pass, which would otherwise fill the cache.
                for name in hooks:
                    getattr(*owner(field, name))
                out = render_rays(field, rays, c.model.background, c.model.render,
                                  c.model.occupancy, train=True, generator=gen)
                mse = F.mse_loss(out["rgb"], target)
                loss = mse + (F.mse_loss(out["rgb_coarse"], target) if "rgb_coarse" in out
                              else 0)
                terms = [h.penalty for h in hooks.values() if h.penalty is not None]
                if terms:
                    penalty = sum(terms)
                    loss = loss + penalty
                    penalties.append(float(penalty.detach()))
                opt.zero_grad(set_to_none=True)
                loss.backward()
            opt.step()
            psnrs.append(-10.0 * math.log10(max(float(mse.detach()), 1e-10)))
            bar.update(1)
            bar.set_postfix(psnr=f"{psnrs[-1]:.2f}")
    finally:
        bar.close()
        field.eval()
        for name, hook in hooks.items():
            module, attr = owner(field, name)
            latent = None
            if hook.source is not None:  # the trained latent tensors (factors), read first
                originals = module.parametrizations[attr]
                latent = [getattr(originals, f"original{i}")
                          for i in range(len(hook.source.latent()))]
            c.constraints[name] = hook.finished(latent)
            parametrize.remove_parametrizations(module, attr, leave_parametrized=True)
    c.project()
    head = psnrs[: max(1, steps // 10)]
    tail = psnrs[-max(1, steps // 10):]
    report = {"steps": steps, "train_psnr_first": sum(head) / len(head) if psnrs else None,
              "train_psnr_last": sum(tail) / len(tail) if psnrs else None, "lr_grid": lr_grid,
              "lr_net": lr_net}
    if penalties:
        report["penalty_first"] = penalties[0]
        report["penalty_last"] = penalties[-1]
    return c, report
