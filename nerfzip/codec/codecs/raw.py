"""Codec 1, ``raw``: a tensor's own bytes (float32 or integer), plain or zstd / lzma compressed,
optionally byte-shuffled; the lossless fallback every float tensor has."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from nerfzip.codec import symbols as sym
from nerfzip.codec.binary import FormatError
from nerfzip.codec.node import FLOAT, Codec, Node, TensorSpec, expect_parts, register_codec

COMPRESSORS = ("none", "zstd", "lzma")


def bytes_of(x: Tensor) -> bytes:
    return x.detach().cpu().contiguous().numpy().tobytes()


def shuffle(raw: bytes, width: int) -> bytes:
    """Byte planes of ``width``-byte values (exponent bytes of floats compress together)."""
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, width).T.tobytes()


def unshuffle(raw: bytes, width: int) -> bytes:
    return np.frombuffer(raw, dtype=np.uint8).reshape(width, -1).T.tobytes()


def raw_candidates(x: Tensor, coders: tuple[str, ...]) -> list[Node]:
    """The tensor's own bytes (float32 or integer), plain, compressed, byte-shuffled."""
    raw = bytes_of(x)
    width = x.element_size()
    out = [Node("raw", x.dtype, tuple(x.shape), {"compress": "none", "shuffle": False}, [],
                [raw])]
    for method in ("zstd", "lzma"):
        if method not in coders or (method == "lzma" and len(raw) > sym.LZMA_MAX_BYTES):
            continue
        for shuffled in ((False, True) if width > 1 else (False,)):
            data = shuffle(raw, width) if shuffled else raw
            out.append(Node("raw", x.dtype, tuple(x.shape),
                            {"compress": method, "shuffle": shuffled}, [],
                            [sym.compress_bytes(data, method)]))
    return out


def encode(x: Tensor, spec: TensorSpec) -> list[Node]:
    # Quant mode reaches here only for an empty tensor, which has no grid: stored as it is.
    if spec.mode == "lossless" or not x.numel():
        return raw_candidates(x, spec.coders)
    return []


def stored_bytes(node: Node, stored: torch.dtype) -> bytes:
    """The decompressed, unshuffled bytes of a ``raw`` or ``half`` node's values."""
    expect_parts(node, 0, 1)
    n = math.prod(node.shape)
    width = torch.empty((), dtype=stored).element_size()
    method = node.params.get("compress")
    if method not in COMPRESSORS:
        raise FormatError(f"unknown byte compressor {method!r}")
    raw = sym.decompress_bytes(memoryview(node.blobs[0]), method, n * width)
    return unshuffle(raw, width) if node.params.get("shuffle") else raw


def float_tensor(raw: bytes, dtype: torch.dtype, shape: tuple[int, ...]) -> Tensor:
    np_dtype = {torch.float32: "<f4", torch.float16: "<f2"}[dtype]
    return torch.from_numpy(np.frombuffer(raw, dtype=np_dtype).copy()).view(shape)


def decode(node: Node) -> Tensor:
    raw = stored_bytes(node, node.dtype)
    if node.dtype.is_floating_point:
        return float_tensor(raw, node.dtype, node.shape)
    np_dtype = {torch.uint8: "<u1", torch.bool: "<u1", torch.int32: "<i4",
                torch.int64: "<i8"}[node.dtype]
    arr = np.frombuffer(raw, dtype=np_dtype).copy()
    return torch.from_numpy(arr).to(node.dtype).view(node.shape)


def describe_bytes(name: str, node: Node) -> str:
    """``name`` plus the byte transforms of a ``raw`` or ``half`` node (``f32+shuffle+zstd``)."""
    p = node.params
    extra = "+" + p["compress"] if p.get("compress", "none") != "none" else ""
    return name + ("+shuffle" if p.get("shuffle") else "") + extra


def describe(node: Node) -> str:
    name = "f32" if node.dtype == FLOAT else str(node.dtype).replace("torch.", "")
    return describe_bytes(name, node)


register_codec(Codec("raw", 1, encode, decode, describe, modes=("lossless", "quant"),
                     float_only=False))
