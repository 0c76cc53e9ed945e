"""Codec 4, ``vq``: an exact codebook, of the distinct values of a tensor or of its feature vectors
along one axis, stored as the codebook (a tensor coded like any other) and symbol indices;
what vector quantization and palettes of few values leave behind."""

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
    check_axis,
    check_shape,
    encode_tensor,
    expect_parts,
    register_codec,
)
from nerfzip.codec.node import decode as decode_node

MAX_BOOK = 1 << 16
SAMPLE_ROWS = 200_000


def codebook_node(x: Tensor, axis: int | None, spec: TensorSpec) -> Node | None:
    """An exact codebook of the distinct values (axis None) or feature vectors along ``axis``,
    when there are few enough of them to pay off."""
    rows = x.reshape(-1, 1) if axis is None else x.movedim(axis, -1).reshape(-1, x.shape[axis])
    limit = min(MAX_BOOK, rows.shape[0] // 4)
    if rows.shape[0] < 16:
        return None
    # A sample with too many distinct rows already rules the codebook out (cheap for the
    # continuous-valued tensors of an uncompressed field).
    sample = rows[:: max(1, rows.shape[0] // SAMPLE_ROWS)]
    if torch.unique(sample, dim=0).shape[0] > limit:
        return None
    book, idx = torch.unique(rows, dim=0, return_inverse=True)
    if book.shape[0] > limit:
        return None
    inner = replace(spec, vector_axis=None, sparse=False)
    if spec.mode == "quant" and spec.axis is not None:
        # Channels along the vectors become the codebook's columns; any other layout of
        # channels cannot be expressed on the codebook, which then stays exact.
        inner = replace(inner, axis=1) if spec.axis == axis else replace(inner, mode="lossless")
    children = [encode_tensor(book.contiguous(), inner), symbols_node(idx, spec.coders)]
    return Node("vq", x.dtype, tuple(x.shape), {"axis": axis}, children, [])


def encode(x: Tensor, spec: TensorSpec) -> list[Node]:
    """Quant: a codebook of the feature vectors only (quantized values along the vectors);
    lossless: of the single values and of the feature vectors."""
    if not x.numel():
        return []
    if spec.mode == "quant":
        axes = [] if spec.vector_axis is None else [spec.vector_axis]
    else:
        axes = list(dict.fromkeys([None, spec.vector_axis]))
    books = (codebook_node(x, axis, spec) for axis in axes)
    return [book for book in books if book is not None]


def decode(node: Node) -> Tensor:
    expect_parts(node, 2, 0)
    n = math.prod(node.shape)
    axis = check_axis(node.params.get("axis"), len(node.shape))
    book, idx = decode_node(node.children[0]), decode_node(node.children[1])
    dim = 1 if axis is None else node.shape[axis]
    if book.dim() != 2 or book.shape[1] != dim or book.dtype != FLOAT:
        raise FormatError(f"codebook has shape {list(book.shape)}, expected [K, {dim}]")
    check_shape(idx.shape, (n // dim if dim else 0,), "codebook indices")
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= book.shape[0]):
        raise FormatError("codebook index out of range")
    rows = book[idx]
    if axis is None:
        return rows.view(node.shape)
    moved = list(node.shape)
    moved.append(moved.pop(axis))
    return rows.view(moved).movedim(-1, axis).contiguous()


def describe(node: Node) -> str:
    cb = node.children[0]
    return f"codebook {cb.shape[0]}x{cb.shape[1]} [{node.children[1].describe()}]"


register_codec(Codec("vq", 4, encode, decode, describe, modes=("lossless", "quant")))
