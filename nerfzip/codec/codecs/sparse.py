"""Codec 5, ``sparse``: the positions of the non-zeros (a bitmask or the gaps between them,
whichever codes smaller) and the non-zero values coded under the same spec; what pruning
leaves behind."""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import Tensor

from nerfzip.codec.binary import FormatError
from nerfzip.codec.codecs.symbols import symbols_node
from nerfzip.codec.node import (
    FLOAT,
    Codec,
    Node,
    TensorSpec,
    check_shape,
    encode_tensor,
    expect_parts,
    register_codec,
)
from nerfzip.codec.node import decode as decode_node

MIN_ELEMENTS = 64
MAX_DENSITY = 0.75


def sparse_node(x: Tensor, spec: TensorSpec) -> Node | None:
    """Positions of the non-zeros (a bitmask or the gaps between them, whichever codes smaller)
    plus the non-zero values coded under the same spec."""
    flat = x.reshape(-1)
    nz = flat != 0
    if flat.numel() < MIN_ELEMENTS or float(nz.float().mean()) > MAX_DENSITY:
        return None
    where = nz.nonzero()[:, 0]
    gaps = torch.diff(where, prepend=torch.tensor([-1])) - 1
    mask = symbols_node(nz.to(torch.int64), spec.coders)
    gap = symbols_node(gaps, spec.coders) if where.numel() else mask
    positions, kind = (mask, "mask") if mask.nbytes() <= gap.nbytes() else (gap, "gaps")
    values = flat[nz]
    # The values are a flat list: feature vectors along ``vector_axis`` do not survive.
    inner_spec = replace(spec, sparse=False, vector_axis=None)
    return Node("sparse", x.dtype, tuple(x.shape), {"positions": kind},
                [positions, encode_tensor(values, inner_spec)], [])


def encode(x: Tensor, spec: TensorSpec) -> list[Node]:
    # Sparse quantized values must land on the tensor's own grid: only a given per-tensor grid
    # guarantees that (a grid of the non-zeros alone would give different values).
    grid_kept = spec.mode != "quant" or (spec.grid is not None and spec.axis is None)
    node = sparse_node(x, spec) if spec.sparse and grid_kept else None
    return [] if node is None else [node]


def positions(node: Node, pos: Tensor, n: int) -> Tensor:
    """The flat indices of the non-zeros, from a validated mask or gap list."""
    kind = node.params.get("positions")
    if kind == "mask":
        check_shape(pos.shape, (n,), "sparsity mask")
        mask = pos.reshape(-1)
        if mask.numel() and (int(mask.min()) < 0 or int(mask.max()) > 1):
            raise FormatError("sparsity mask holds values other than 0 and 1")
        return mask.nonzero()[:, 0]
    if kind == "gaps":
        if pos.dim() != 1 or (pos.numel() and int(pos.min()) < 0):
            raise FormatError("bad gap list of a sparse tensor")
        where = torch.cumsum(pos + 1, 0) - 1
        if where.numel() and int(where[-1]) >= n:
            raise FormatError("sparse position past the end of the tensor")
        return where
    raise FormatError(f"unknown sparse positions {kind!r}")


def decode(node: Node) -> Tensor:
    expect_parts(node, 2, 0)
    n = math.prod(node.shape)
    pos, values = decode_node(node.children[0]), decode_node(node.children[1])
    where = positions(node, pos, n)
    check_shape(values.shape, (where.numel(),), "sparse values")
    out = torch.zeros(n, dtype=FLOAT)
    out[where] = values.to(FLOAT)
    return out.view(node.shape)


def describe(node: Node) -> str:
    return (f"sparse {node.params['positions']} [{node.children[0].describe()}] values "
            f"[{node.children[1].describe()}]")


register_codec(Codec("sparse", 5, encode, decode, describe,
                     modes=("lossless", "half", "quant")))
