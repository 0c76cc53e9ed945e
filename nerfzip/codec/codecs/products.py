"""Tucker and CP products (not a codec): the maths the ``tucker`` and ``cp`` codecs decode with
and the compression passes fit with, so that a file decodes to the values the field had; and
the encoding of a pass's fitted parts, refused unless they rebuild the tensor exactly."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from nerfzip.codec.node import FLOAT, Node, TensorSpec, decode, encode_tensor


def tucker_to_tensor(core: Tensor, factors: list[Tensor], modes: list[int]) -> Tensor:
    """``core x_m U_m`` for m in ``modes`` (U_m [shape_m, rank_m]; Kolda & Bader 2009, eq. 4.1),
    accumulated in float64 and rounded once to float32: the pass that fits the factors and the
    decoder call this same function, so a file decodes to the values the field had."""
    out = core.double()
    for m, u in zip(modes, factors):
        out = torch.movedim(torch.tensordot(u.double(), out, dims=([1], [m])), 0, m)
    return out.to(FLOAT).contiguous()


def khatri_rao(factors: list[Tensor], width: int) -> Tensor:
    """Column-wise Kronecker product of [n_k, width] matrices -> [prod n_k, width] in float64
    (row-major: the last factor's index varies fastest); ones [1, width] for no factor."""
    out = torch.ones(1, width, dtype=torch.float64)
    for u in factors:
        out = (out[:, None, :] * u.double()[None, :, :]).reshape(-1, width)
    return out


def cp_to_tensor(factors: list[Tensor]) -> Tensor:
    """``sum_r prod_k U_k[i_k, r]`` (U_k [shape_k, R]; Kolda & Bader 2009, eq. 3.1) in float64,
    rounded once to float32. The components go in chunks no wider than the longest mode, so no
    intermediate is larger than the result, whatever the rank."""
    shape = [u.shape[0] for u in factors]
    rank = factors[0].shape[1]
    lead = max(range(len(shape)), key=lambda k: shape[k])
    first = factors[lead].double()
    rest = [u for k, u in enumerate(factors) if k != lead]
    out = torch.zeros(shape[lead], math.prod(shape) // max(1, shape[lead]), dtype=torch.float64)
    step = max(1, shape[lead])
    for lo in range(0, rank, step):
        chunk = first[:, lo:lo + step]
        out += chunk @ khatri_rao([u[:, lo:lo + step] for u in rest], chunk.shape[1]).T
    moved = [shape[lead]] + [n for k, n in enumerate(shape) if k != lead]
    return out.view(moved).movedim(0, lead).to(FLOAT).contiguous()


def tucker_work(core_shape: tuple[int, ...], shape: tuple[int, ...], modes: list[int]) -> int:
    """Multiply-adds of ``tucker_to_tensor`` applying the factors of ``modes`` in order."""
    current, work = list(core_shape), 0
    for m in modes:
        work += math.prod(current) * shape[m]
        current[m] = shape[m]
    return work


def fitted_children(x: Tensor, spec: TensorSpec,
                    rebuild: Callable[[list[Tensor]], Tensor]) -> list[Node]:
    """The parts in ``spec.parts``, each coded under its own spec, refused unless the parts as
    they decode rebuild ``x`` exactly: the file must decode to the tensor that was saved."""
    if not spec.parts:
        raise ValueError(f"{spec.mode} coding needs the fitted parts (a compression pass's)")
    children = [encode_tensor(p.contiguous(), s) for p, s in spec.parts]
    y = rebuild([decode(child) for child in children])
    if y.shape != x.shape or not torch.equal(y, x):
        raise ValueError(f"the {spec.mode} factors do not rebuild the {list(x.shape)} tensor "
                         "exactly (was the field changed after its constraints were applied?)")
    return children
