"""Codec 2, ``half``: a float32 tensor stored as float16 (lossy: decodes to ``x.half().float()``),
plain or byte-shuffled and zstd compressed."""

from __future__ import annotations

import torch
from torch import Tensor

from nerfzip.codec import symbols as sym
from nerfzip.codec.codecs.raw import bytes_of, describe_bytes, float_tensor, shuffle, stored_bytes
from nerfzip.codec.node import FLOAT, Codec, Node, TensorSpec, register_codec


def encode(x: Tensor, spec: TensorSpec) -> list[Node]:
    raw = bytes_of(x.to(torch.float16))
    out = [Node("half", FLOAT, tuple(x.shape), {"compress": "none", "shuffle": False}, [],
                [raw])]
    if "zstd" in spec.coders:
        out.append(Node("half", FLOAT, tuple(x.shape), {"compress": "zstd", "shuffle": True},
                        [], [sym.compress_bytes(shuffle(raw, 2), "zstd")]))
    return out


def decode(node: Node) -> Tensor:
    raw = stored_bytes(node, torch.float16)
    return float_tensor(raw, torch.float16, node.shape).to(FLOAT)


def describe(node: Node) -> str:
    return describe_bytes("f16", node)


register_codec(Codec("half", 2, encode, decode, describe, modes=("half",)))
