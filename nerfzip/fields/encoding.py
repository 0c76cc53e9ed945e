"""NeRF's frequency (positional) encoding, in krrish94/nerf-pytorch's order with log sampling.

``gamma(x) = [x, sin(2^0 x), cos(2^0 x), sin(2^1 x), cos(2^1 x), ..., sin(2^(L-1) x),
cos(2^(L-1) x)]`` (Mildenhall et al. 2020, eq. 4, without the factor pi), where every block has
the width of ``x``'s last dimension.
"""

from __future__ import annotations

import torch
from torch import Tensor


def encoding_dim(in_dim: int, n_freqs: int, include_input: bool = True) -> int:
    """Width of ``positional_encoding`` for inputs of width ``in_dim``: ``in_dim * (2L + [1])``."""
    return in_dim * (2 * n_freqs + (1 if include_input else 0))


def positional_encoding(x: Tensor, n_freqs: int, include_input: bool = True) -> Tensor:
    """Encode ``x`` [..., D] -> [..., encoding_dim(D, n_freqs, include_input)].

    One broadcasted ``sin`` and one ``cos`` over [..., L, D], interleaved by stacking to
    [..., L, 2, D] and flattening, which gives exactly the block order above.
    """
    if n_freqs <= 0:
        return x if include_input else x[..., :0]
    freqs = 2.0 ** torch.arange(n_freqs, dtype=x.dtype, device=x.device)  # exact powers of two
    scaled = x[..., None, :] * freqs[:, None]  # [..., L, D]
    blocks = torch.stack((torch.sin(scaled), torch.cos(scaled)), dim=-2)  # [..., L, 2, D]
    enc = blocks.flatten(-3)  # [..., 2 L D]
    return torch.cat((x, enc), dim=-1) if include_input else enc
