"""Codec 10, ``learned``: latents coded with a learned entropy model.

A tensor whose values are ``q * step[c]`` (integers q, one step per channel along ``axis``;
what the ``entropy_model`` pass leaves) is stored as the steps, the model's frozen integer
tables (``nerfzip.codec.entropy_model.FrozenPrior``) and one range-coded stream of the q,
channel after channel, each channel with its own table; values outside a channel's support are
coded as its escape symbol and stored verbatim after the stream. The same latents may instead
be stored as plain symbols (``coder: symbols``) where that is smaller: the file keeps the
smaller of the two.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from nerfzip.codec.binary import FormatError
from nerfzip.codec.codecs.symbols import symbols_node
from nerfzip.codec.entropy_model import (
    MAX_SYMBOL,
    PRECISIONS,
    FrozenPrior,
    channels_back,
    channels_first,
    dequantize_latent,
)
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


@dataclass(frozen=True)
class LearnedSpec:
    """What ``TensorSpec.prior`` carries for mode ``learned``."""

    axis: int
    """Axis of the channels."""
    step: Tensor
    """Quantization step per channel [C] (float32)."""
    tables: FrozenPrior
    """The entropy model, frozen (``FactorizedPrior.update``)."""
    context: Any = None
    """A frozen checkerboard context model (``context_model.FrozenContext``) for a spatial
    grid: codec 11 (``learned_context``) then offers the context coding as well."""


def latents(x: Tensor, step: Tensor, axis: int) -> Tensor:
    """Integer latents [C, N] of ``x``: ``round(x / step)`` per channel."""
    v = channels_first(x.detach().cpu().to(FLOAT), axis)
    return torch.round(v / step.detach().cpu().to(FLOAT)[:, None]).to(torch.int64)


def latents_crc(q: Tensor) -> int:
    """CRC-32 of integer latents [C, N] as little-endian int64 (what a range-coded node
    checks its decoded symbols against: a damaged stream still decodes to something)."""
    return zlib.crc32(q.to(torch.int64).numpy().astype("<i8").tobytes())


TABLE_PRECISIONS = (16, 14, 12, 10)
"""Table precisions the encoder tries (the smallest file wins)."""


def table_nodes(tables: FrozenPrior, coders: tuple[str, ...]) -> tuple[Node, Node]:
    """The support [C, 2] and the frequencies' first differences of frozen tables."""
    support = symbols_node(torch.from_numpy(np.stack([tables.lo, tables.lengths], axis=1)),
                           coders)
    deltas = np.diff(tables.freqs, prepend=0)  # smooth tables: small differences
    return support, symbols_node(torch.from_numpy(deltas), coders)


def read_tables(support: Tensor, deltas: Tensor, channels: int, precision: object
                ) -> FrozenPrior:
    """The frozen tables ``table_nodes`` stored (checked: FormatError)."""
    if not isinstance(precision, int) or precision not in PRECISIONS:
        raise FormatError(f"bad entropy model table precision {precision!r}")
    check_shape(support.shape, (channels, 2), "entropy model supports")
    if deltas.dim() != 1:
        raise FormatError("entropy model frequencies must be 1-d")
    return FrozenPrior(support[:, 0].numpy().astype(np.int64),
                       support[:, 1].numpy().astype(np.int64),
                       np.cumsum(deltas.numpy().astype(np.int64)), precision)


def decode_step(node: Node, channels: int) -> Tensor:
    """The quantization steps [C] (checked)."""
    step = decode_node(node)
    check_shape(step.shape, (channels,), "quantization steps")
    if step.dtype != FLOAT or not bool(torch.isfinite(step).all()) or \
            bool((step <= 0).any()):
        raise FormatError("quantization steps must be finite and positive")
    return step


def learned_node(x: Tensor, prior: LearnedSpec, coders: tuple[str, ...]) -> list[Node]:
    """The candidates: the latents range-coded with the prior's tables at each of
    ``TABLE_PRECISIONS`` (coarser tables cost fewer bytes, finer ones code a little tighter),
    and the same latents as plain symbols (for a tensor with few values per channel, a VM
    line, the tables would cost more than they save)."""
    t = prior.tables
    if x.dim() == 0 or not 0 <= prior.axis < x.dim() or x.shape[prior.axis] != t.channels:
        raise ValueError(f"a {t.channels}-channel entropy model on axis {prior.axis} of a "
                         f"{list(x.shape)} tensor")
    q = latents(x, prior.step, prior.axis)
    exact = TensorSpec(coders=coders, sparse=False)
    step = encode_tensor(prior.step.detach().cpu().to(FLOAT).contiguous(), exact)
    out = [Node("learned", FLOAT, tuple(x.shape), {"axis": prior.axis, "coder": "symbols"},
                [step, symbols_node(q, coders)], [])]
    for precision in TABLE_PRECISIONS:
        if 4 * (int(t.lengths.max()) + 1) > 1 << precision:
            continue  # a quarter of the range or more would go to the at-least-1 floor
        tables = t.at_precision(precision)
        stream, escapes = tables.compress(q)
        out.append(Node("learned", FLOAT, tuple(x.shape),
                        {"axis": prior.axis, "coder": "range", "precision": precision,
                         "crc": latents_crc(q)},
                        [step, *table_nodes(tables, coders),
                         symbols_node(torch.tensor(escapes, dtype=torch.int64), coders)],
                        [stream]))
    return out


def encode(x: Tensor, spec: TensorSpec) -> list[Node]:
    if spec.prior is None or not x.numel():
        return []
    return learned_node(x, spec.prior, spec.coders)


def decode(node: Node) -> Tensor:
    axis = check_axis(node.params.get("axis"), len(node.shape))
    coder = node.params.get("coder")
    if axis is None or coder not in ("range", "symbols"):
        raise FormatError(f"learned node needs a channel axis and a coder (range or symbols), "
                          f"has {axis!r} and {coder!r}")
    channels = node.shape[axis]
    n = math.prod(node.shape) // max(1, channels)
    if coder == "range":
        expect_parts(node, 4, 1)
    else:
        expect_parts(node, 2, 0)
    step = decode_step(node.children[0], channels)
    if coder == "symbols":
        q = decode_node(node.children[1])
        check_shape(q.shape, (channels, n), "latents")
        if q.numel() and int(q.abs().max()) > MAX_SYMBOL:
            raise FormatError("a latent out of range")
        return dequantize_latent(channels_back(q, tuple(node.shape), axis), step, axis)
    support, deltas, escapes = (decode_node(c) for c in node.children[1:])
    tables = read_tables(support, deltas, channels, node.params.get("precision"))
    if escapes.dim() != 1:
        raise FormatError("entropy model frequencies and escapes must be 1-d")
    if escapes.numel() > math.prod(node.shape):
        raise FormatError("more escaped values than latents")
    q = tables.decompress(node.blobs[0], escapes.tolist(), n)
    if latents_crc(q) != node.params.get("crc"):
        raise FormatError("range-coded latents do not match their checksum (truncated or "
                          "corrupted stream)")
    return dequantize_latent(channels_back(q, tuple(node.shape), axis), step, axis)


def describe(node: Node) -> str:
    c = node.shape[node.params["axis"]]
    if node.params["coder"] == "symbols":
        return f"learned step/{c} ch, latents [{node.children[1].describe()}]"
    return (f"learned prior/{c} ch/{node.params['precision']}b tables, range coded "
            f"({len(node.blobs[0])} B)")


register_codec(Codec("learned", 10, encode, decode, describe, modes=("learned",)))
