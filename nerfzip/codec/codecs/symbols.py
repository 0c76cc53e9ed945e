"""Codec 7, ``symbols``: an integer or boolean tensor as entropy-coded symbols (the smallest of
the symbol coders in ``nerfzip.codec.symbols``); the leaf that quantized values, codebook
indices and sparsity masks end in."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from nerfzip.codec import symbols as sym
from nerfzip.codec.binary import FormatError
from nerfzip.codec.node import Codec, Node, TensorSpec, expect_parts, register_codec


def symbols_node(values: Tensor, coders: tuple[str, ...], dtype: torch.dtype = torch.int64
                 ) -> Node:
    """``values`` (any integer tensor) coded as symbols, decoding to ``dtype``."""
    params, blobs = sym.encode_symbols(values.detach().cpu().numpy().reshape(-1), coders)
    return Node("symbols", dtype, tuple(values.shape), params, [], blobs)


def encode(x: Tensor, spec: TensorSpec) -> list[Node]:
    return [symbols_node(x.to(torch.int64), spec.coders, x.dtype)]


def decode(node: Node) -> Tensor:
    expect_parts(node, 0, len(node.blobs))
    n = math.prod(node.shape)
    values = sym.decode_symbols(node.params, [memoryview(b) for b in node.blobs], n)
    if node.dtype.is_floating_point:
        raise FormatError("symbols node with a float dtype")
    if node.dtype == torch.bool and values.size and (values.min() < 0 or values.max() > 1):
        raise FormatError("boolean tensor holds values other than 0 and 1")
    return torch.from_numpy(values).to(node.dtype).view(node.shape)


def describe(node: Node) -> str:
    p = node.params
    return f"{p['coder']}" + (f"/{p['bits']}b" if p["coder"] == "pack" else "")


register_codec(Codec("symbols", 7, encode, decode, describe, integer=True, float_only=False))
