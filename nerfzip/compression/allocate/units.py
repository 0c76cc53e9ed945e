"""Units for the allocator from a pass's candidate constraints: one unit per tensor (one file
section), one option per setting the pass offers it (a bit depth, a codebook size).

Rate: the real bytes of the tensor's section under that setting (the tensor encoded as the
file would encode it, its other constraints included: a pruned tensor stays sparse).
Distortion: the importance-weighted squared error of the tensor's values,

    D_u(o) = s_u * sum_i w_i (x_i - P_o(x_i))^2,

with ``P_o`` the projection the setting imposes, ``w_i`` the accumulated compositing weight of
training rays at entry ``i`` (``analysis.importance``; 1 for tensors that are not feature grids,
such as MLP weights), and ``s_u`` a per-tensor scale calibrated on real renders: the mean
squared colour change of a few training rays with the tensor alone at a middle setting, over
that setting's weighted error. The scale puts every unit in one currency (rendered squared
error), which importance alone does not: a plane's texel moves the colour through the line it
multiplies and the decoder behind it, so equal weighted errors in two tensors need not cost
equal PSNR.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from nerfzip.codec.tensors import TensorSpec, encode_tensor, serialize
from nerfzip.compression.allocate.lagrangian import Option, Unit, allocate
from nerfzip.compression.compressed import Compressed, merged, storage_spec
from nerfzip.compression.constraints import Constraint, constrained
from nerfzip.data.scene import Scene


@dataclass
class Candidate:
    """A tensor under one setting: the constraint the pass would add and the values it gives."""

    constraint: Constraint
    value: Tensor
    rate: int
    error: float
    """Importance-weighted squared error (before calibration)."""


def section_bytes(value: Tensor, constraints: list[Constraint], coders: tuple[str, ...]) -> int:
    """Bytes of the file section of a tensor of ``value`` under ``constraints``."""
    return len(serialize(encode_tensor(value, storage_spec(constraints, TensorSpec(
        coders=coders)))))


def candidates(c: Compressed, name: str, settings: Sequence[int],
               make: Callable[[Tensor, int], Constraint], weight: Tensor | None,
               coders: tuple[str, ...]) -> dict[int, Candidate]:
    """Tensor ``name`` of ``c`` under each of ``settings``: the constraint ``make(values,
    setting)``, the values, section bytes and weighted error (``weight`` broadcast to the
    tensor; None: every entry weighs 1)."""
    x = c.tensors()[name].detach()
    current = constrained(x, c.constraints.get(name, []))
    out = {}
    for setting in settings:
        con = make(current, setting)
        cons = merged(c.constraints.get(name, []), con, name)
        value = constrained(current, cons).detach()
        sq = (value - current).double().pow(2)
        err = float((sq * weight.double()).sum() if weight is not None else sq.sum())
        out[setting] = Candidate(con, value, section_bytes(value, cons, coders), err)
    return out


@torch.no_grad()
def render_scales(c: Compressed, values: dict[str, Tensor], errors: dict[str, float],
                  scene: Scene, n_rays: int, seed: int = 0) -> dict[str, float]:
    """Per tensor, rendered squared error per unit of weighted error: each tensor alone is
    replaced by ``values[name]`` and ``n_rays`` training rays rendered again; the scale is
    the mean squared colour change (summed over RGB) over ``errors[name]``."""
    gen = torch.Generator().manual_seed(seed)
    rays, _ = scene.random_rays("train", n_rays, gen)
    rays = rays.to(c.model.field.aabb.device)
    reference = c.model.render_rays(rays)
    tensors = c.tensors()
    out = {}
    for name, value in values.items():
        x = tensors[name]
        kept = x.detach().clone()
        x.copy_(value)
        try:
            mse = float((c.model.render_rays(rays) - reference).double().pow(2).sum(1).mean())
        finally:
            x.copy_(kept)
        out[name] = mse / errors[name] if errors[name] > 0 else 0.0
    return out


def choose(c: Compressed, table: dict[str, dict[int, Candidate]], budget: int,
           scene: Scene | None, calibrate: int) -> tuple[dict[str, Candidate], dict[str, Any]]:
    """Per tensor, the candidate the allocator picks under ``budget`` bytes (``calibrate``
    rays rendered to scale the errors, 0: none), and a report: the setting per tensor, the
    section bytes and distortion, and those of the best single setting within the budget
    (``uniform_*``, the same setting for every tensor)."""
    settings = sorted({s for by in table.values() for s in by})
    scales = None
    if calibrate and scene is not None:
        ref = settings[len(settings) // 2]
        at = {n: by[ref] if ref in by else by[max(by)] for n, by in table.items()}
        scales = render_scales(c, {n: a.value for n, a in at.items()},
                               {n: a.error for n, a in at.items()}, scene, calibrate)
    units = [Unit(name, tuple(Option(s, cand.rate, cand.error * (scales or {}).get(name, 1.0))
                              for s, cand in by.items()))
             for name, by in table.items()]
    alloc = allocate(units, budget)
    chosen = {name: table[name][int(o.value)] for name, o in alloc.choice.items()}
    fits = [s for s in settings if all(s in by for by in table.values())
            and sum(by[s].rate for by in table.values()) <= budget]
    uniform = max(fits, key=lambda s: -sum(o.distortion for u in units for o in u.options
                                           if o.value == s), default=None)
    return chosen, {"setting_per_tensor": {n: int(o.value) for n, o in alloc.choice.items()},
                    "section_bytes": int(alloc.rate), "distortion": alloc.distortion,
                    "lambda": alloc.lmbda, "uniform_setting": uniform,
                    "uniform_distortion": None if uniform is None else
                    sum(o.distortion for u in units for o in u.options if o.value == uniform)}
