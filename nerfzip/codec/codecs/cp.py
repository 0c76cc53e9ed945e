"""Codec 9 (format 1.1), ``cp``: one factor matrix [shape_k, R] per mode, fitted by a compression
pass and each coded under its own spec; decodes to ``sum_r prod_k U_k[i_k, r]``."""

from __future__ import annotations

import math

from torch import Tensor

from nerfzip.codec.binary import FormatError
from nerfzip.codec.codecs.products import cp_to_tensor, fitted_children
from nerfzip.codec.node import (
    FLOAT,
    MAX_DECODE_WORK,
    Codec,
    Node,
    TensorSpec,
    check_shape,
    expect_parts,
    register_codec,
)
from nerfzip.codec.node import decode as decode_node


def encode(x: Tensor, spec: TensorSpec) -> list[Node]:
    children = fitted_children(x, spec, cp_to_tensor)
    return [Node("cp", FLOAT, tuple(x.shape), {}, children, [])]


def decode(node: Node) -> Tensor:
    """One factor [shape_k, R] per mode; R at most the largest rank any tensor of this shape
    has (numel / longest mode) and bounded work."""
    ndim = len(node.shape)
    if ndim < 1:
        raise FormatError("cp node needs at least one mode")
    expect_parts(node, ndim, 0)
    rank = node.children[0].shape[1] if len(node.children[0].shape) == 2 else -1
    for k, child in enumerate(node.children):
        check_shape(child.shape, (node.shape[k], rank), f"cp factor {k}")
    n = math.prod(node.shape)
    if rank > max(1, n // max(1, max(node.shape))) or rank * n > MAX_DECODE_WORK:
        raise FormatError(f"cp rank {rank} is more than a {list(node.shape)} tensor needs")
    parts = [decode_node(c) for c in node.children]
    if any(p.dtype != FLOAT for p in parts):
        raise FormatError("cp factors must be float32")
    return cp_to_tensor(parts)


def describe(node: Node) -> str:
    return f"cp rank {node.children[0].shape[1]} [{node.children[0].describe()}]"


register_codec(Codec("cp", 9, encode, decode, describe, modes=("cp",), minor=1))
