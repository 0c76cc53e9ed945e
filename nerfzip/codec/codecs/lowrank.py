"""Codec 6, ``lowrank``: a [m, n] matrix as two factors ``(U S) [m, r]`` and ``V^T [r, n]`` from
its truncated SVD (lossy), each coded losslessly; decodes to their product."""

from __future__ import annotations

import torch
from torch import Tensor

from nerfzip.codec.binary import FormatError
from nerfzip.codec.node import (
    FLOAT,
    Codec,
    Node,
    TensorSpec,
    encode_tensor,
    expect_parts,
    register_codec,
)
from nerfzip.codec.node import decode as decode_node


def encode(x: Tensor, spec: TensorSpec) -> list[Node]:
    if x.dim() != 2 or spec.rank < 1:
        raise ValueError(f"low-rank coding needs a matrix and a rank >= 1 (got shape "
                         f"{tuple(x.shape)}, rank {spec.rank})")
    u, s, vh = torch.linalg.svd(x.to(FLOAT), full_matrices=False)
    r = min(spec.rank, s.numel())
    exact = TensorSpec(coders=spec.coders)
    children = [encode_tensor((u[:, :r] * s[:r]).contiguous(), exact),
                encode_tensor(vh[:r].contiguous(), exact)]
    return [Node("lowrank", FLOAT, tuple(x.shape), {}, children, [])]


def decode(node: Node) -> Tensor:
    expect_parts(node, 2, 0)
    u, v = decode_node(node.children[0]), decode_node(node.children[1])
    if len(node.shape) != 2 or u.dim() != 2 or v.dim() != 2 or u.shape[1] != v.shape[0] \
            or (u.shape[0], v.shape[1]) != node.shape:
        raise FormatError(f"low-rank factors {list(u.shape)} x {list(v.shape)} do not "
                          f"make {list(node.shape)}")
    return u @ v


def describe(node: Node) -> str:
    return f"rank {node.children[0].shape[1]} [{node.children[0].describe()}]"


register_codec(Codec("lowrank", 6, encode, decode, describe, modes=("lowrank",)))
