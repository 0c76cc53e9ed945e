"""Quantization options of a model's tensors, as allocation units: one unit per tensor (one
file section), one option per bit depth.

Rate: the real bytes of the tensor's section at that depth (the tensor encoded as the file
would encode it, its other constraints included: a pruned tensor stays sparse). Distortion: the
importance-weighted squared error of the tensor's values,

    D_u(b) = s_u * sum_i w_i (x_i - Q_b(x_i))^2,

with ``w_i`` the accumulated compositing weight of training rays at entry ``i``
(``analysis.importance``; 1 for tensors that are not feature grids, such as MLP weights), and
``s_u`` a per-tensor scale calibrated on real renders: the mean squared colour change of
``calibrate`` training rays with the tensor alone at the middle depth, over that depth's
weighted error. The scale puts every unit in one currency (rendered squared error), which
importance alone does not: a plane's texel moves the colour through the line it multiplies and
the decoder behind it, so equal weighted errors in two tensors need not cost equal PSNR.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from nerfzip.codec.tensors import TensorSpec, encode_tensor, serialize
from nerfzip.compression.allocate.lagrangian import Option, Unit
from nerfzip.compression.compressed import Compressed, merged, storage_spec
from nerfzip.compression.constraints import Constraint, constrained
from nerfzip.data.scene import Scene


@dataclass
class Candidate:
    """A tensor at one bit depth: the constraint the pass would add and the values it gives."""

    grid: Constraint
    value: Tensor
    rate: int
    error: float
    """Importance-weighted squared error (before calibration)."""


def section_bytes(value: Tensor, constraints: list[Constraint], coders: tuple[str, ...]) -> int:
    """Bytes of the file section of a tensor of ``value`` under ``constraints``."""
    return len(serialize(encode_tensor(value, storage_spec(constraints, TensorSpec(
        coders=coders)))))


def candidates(c: Compressed, name: str, bits: Sequence[int],
               make_grid: Callable[[Tensor, int], Constraint], weight: Tensor | None,
               coders: tuple[str, ...]) -> dict[int, Candidate]:
    """Tensor ``name`` of ``c`` at each depth of ``bits``: grid, values, section bytes and
    weighted error (``weight`` broadcast to the tensor; None: every entry weighs 1)."""
    x = c.tensors()[name].detach()
    current = constrained(x, c.constraints.get(name, []))
    out = {}
    for b in bits:
        grid = make_grid(current, b)
        cons = merged(c.constraints.get(name, []), grid, name)
        value = constrained(current, cons).detach()
        sq = (value - current).double().pow(2)
        err = float((sq * weight.double()).sum() if weight is not None else sq.sum())
        out[b] = Candidate(grid, value, section_bytes(value, cons, coders), err)
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


def quant_units(table: dict[str, dict[int, Candidate]], scales: dict[str, float] | None
                ) -> list[Unit]:
    """Allocation units of the candidates (``scales`` multiply each tensor's errors)."""
    return [Unit(name, tuple(Option(b, cand.rate, cand.error * (scales or {}).get(name, 1.0))
                             for b, cand in by_bits.items()))
            for name, by_bits in table.items()]
