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

from nerfzip.compression.compressed import Codebook, Compressed, Constraint, Factorized, constrained
from nerfzip.data.scene import Scene
from nerfzip.errors import NerfzipError
from nerfzip.fields.tensorf import TensoRF
from nerfzip.rendering.model import RadianceModel
from nerfzip.rendering.renderer import render_rays
from nerfzip.utils.progress import progress_bar


class Constrain(nn.Module):
    """A parametrization applying a tensor's constraints; codebooks become parameters, and a
    factorised tensor's latent tensors are its core and factors (``right_inverse``)."""

    def __init__(self, constraints: list[Constraint]):
        super().__init__()
        self.constraints = constraints
        self.codebooks = nn.ParameterList(
            [nn.Parameter(c.codebook.clone()) for c in constraints if isinstance(c, Codebook)])
        self.factorized = next((c for c in constraints if isinstance(c, Factorized)), None)

    def right_inverse(self, x: Tensor) -> Tensor | tuple[Tensor, ...]:
        if self.factorized is None:
            return x
        return tuple(p.to(x.device).clone() for p in self.factorized.parts)

    def forward(self, *latent: Tensor) -> Tensor:
        books = iter(self.codebooks)
        cons = [Codebook(c.axis, c.indices, next(books)) if isinstance(c, Codebook) else c
                for c in self.constraints if not isinstance(c, Factorized)]
        x = latent[0] if self.factorized is None else self.factorized.product(list(latent))
        return constrained(x, cons)


def owner(root: nn.Module, name: str) -> tuple[nn.Module, str]:
    prefix, _, attr = name.rpartition(".")
    return (root.get_submodule(prefix) if prefix else root), attr


def param_groups(c: Compressed, lr_grid: float, lr_net: float) -> list[dict[str, Any]]:
    grid, net = [], []
    for name, p in c.model.field.named_parameters():
        (grid if "grids" in name else net).append(p)
    groups = [{"params": grid, "lr": lr_grid}] if grid else []
    return groups + [{"params": net, "lr": lr_net}] if net else groups


def finetune(model: RadianceModel | Compressed, steps: int = 1000, batch_size: int = 4096,
             lr_grid: float = 2e-3, lr_net: float = 1e-4, seed: int = 0, *,
             scene: Scene | None = None, quiet: bool = True
             ) -> tuple[Compressed, dict[str, Any]]:
    """``steps`` of Adam on random training rays of ``scene``, constraints kept."""
    if scene is None:
        raise NerfzipError("finetune needs the scene's training views (pass --data)")
    c = Compressed.of(model)
    field = c.model.field
    if not isinstance(field, TensoRF):
        lr_grid, lr_net = lr_net, lr_net
    hooks: dict[str, Constrain] = {}
    for name, cons in c.constraints.items():
        module, attr = owner(field, name)
        hooks[name] = Constrain(cons).to(field.aabb.device)
        parametrize.register_parametrization(module, attr, hooks[name], unsafe=True)
    opt = torch.optim.Adam(param_groups(c, lr_grid, lr_net), betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(seed)
    device = field.aabb.device
    bar = progress_bar(steps, desc="finetune", quiet=quiet)
    psnrs: list[float] = []
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
            if hook.factorized is not None:  # keep the trained factors, on their fixed grids
                latent = module.parametrizations[attr]
                hook.factorized.set_parts([getattr(latent, f"original{i}") for i in
                                           range(len(hook.factorized.parts))], new_grids=False)
            parametrize.remove_parametrizations(module, attr, leave_parametrized=True)
            books = iter(hook.codebooks)
            c.constraints[name] = [
                Codebook(k.axis, k.indices, next(books).detach().clone())
                if isinstance(k, Codebook) else k for k in hook.constraints]
    c.project()
    head = psnrs[: max(1, steps // 10)]
    tail = psnrs[-max(1, steps // 10):]
    report = {"steps": steps, "train_psnr_first": sum(head) / len(head) if psnrs else None,
              "train_psnr_last": sum(tail) / len(tail) if psnrs else None}
    c.record("finetune", {"steps": steps, "batch_size": batch_size, "lr_grid": lr_grid,
                          "lr_net": lr_net}, report)
    return c, report
