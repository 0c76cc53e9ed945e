"""Volume-rendering maths as pure functions over samples laid out densely as [R, S].

The quadrature of Max (1995) used by NeRF (Mildenhall et al. 2020, eq. 3):
``alpha_i = 1 - exp(-sigma_i delta_i)``, ``T_i = prod_{j<i} (1 - alpha_j)``,
``w_i = T_i alpha_i``, ``C = sum_i w_i c_i + (1 - sum_i w_i) c_bg``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def alphas_from_density(sigma: Tensor, deltas: Tensor) -> Tensor:
    """``alpha = 1 - exp(-sigma * delta)``; shapes [R, S] -> [R, S]."""
    return 1.0 - torch.exp(-sigma * deltas)


def transmittance(sigma_delta: Tensor) -> Tensor:
    """Exclusive transmittance ``T_i = exp(-sum_{j<i} sigma_j delta_j)`` along the last axis.

    Summing optical depth before exponentiating is exact (``prod exp = exp sum``) and avoids the
    ``cumprod`` of ``1 - alpha`` underflowing to a zero with no gradient.
    """
    tau = torch.cumsum(sigma_delta, dim=-1)
    return torch.exp(-torch.cat([torch.zeros_like(tau[..., :1]), tau[..., :-1]], dim=-1))


def render_weights(sigma: Tensor, deltas: Tensor) -> tuple[Tensor, Tensor]:
    """Compositing weights ``w = T alpha`` and the transmittance after the last sample.

    ``sigma``, ``deltas``: [R, S]; returns ``weights [R, S]`` and ``t_final [R]``.
    """
    sd = sigma * deltas
    trans = transmittance(sd)
    alpha = 1.0 - torch.exp(-sd)
    weights = trans * alpha
    if sd.shape[-1] == 0:
        return weights, sd.new_ones(sd.shape[:-1])
    t_final = trans[..., -1] * (1.0 - alpha[..., -1])
    return weights, t_final


def composite(weights: Tensor, values: Tensor, background: Tensor | None = None) -> Tensor:
    """``sum_i w_i v_i (+ (1 - sum_i w_i) background)``: weights [R, S], values [R, S, C]."""
    out = torch.einsum("rs,rsc->rc", weights, values)
    if background is not None:
        out = out + (1.0 - weights.sum(-1, keepdim=True)) * background
    return out


def expected_depth(weights: Tensor, t_mid: Tensor) -> Tensor:
    """Expected termination distance ``sum_i w_i t_i`` (un-normalised): [R, S] -> [R]."""
    return (weights * t_mid).sum(-1)
