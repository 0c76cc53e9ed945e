"""Codec 11, ``learned_context``: plane and line latents coded in two passes with a checkerboard
context model (``nerfzip.codec.context_model``).

The tensor is what codec 10 stores (``q * step[c]``, integer latents q per channel along
``axis``), over a 1-D or 2-D grid. The anchors (``(i + j)`` even; 1-D: ``i`` even) are
range-coded with the grid's factorized prior, exactly as codec 10 codes all the latents, or
stored as plain symbols (``anchors: symbols``); the other positions are range-coded with the
context model's tables, chosen from their decoded anchor neighbours. The writer offers this
coding beside codec 10's and keeps the smallest.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from nerfzip.codec.binary import FormatError
from nerfzip.codec.codecs.learned import (
    TABLE_PRECISIONS,
    LearnedSpec,
    decode_step,
    latents,
    latents_crc,
    read_tables,
    table_nodes,
)
from nerfzip.codec.codecs.symbols import symbols_node
from nerfzip.codec.context_model import (
    BUCKETS,
    FrozenContext,
    first_line,
    layout,
    spatial_shape,
)
from nerfzip.codec.entropy_model import MAX_SYMBOL, channels_back, dequantize_latent
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


def context_nodes(x: Tensor, prior: LearnedSpec, coders: tuple[str, ...]) -> list[Node]:
    """The candidates: the others coded with the context model (one stream, shared by the
    candidates), the anchors as plain symbols (small grids: tables would cost more than they
    save) or range-coded with the prior's tables at each of ``TABLE_PRECISIONS`` (the
    fits-in-range rule of codec 10)."""
    ctx: FrozenContext = prior.context
    t = prior.tables
    if x.dim() == 0 or not 0 <= prior.axis < x.dim() or x.shape[prior.axis] != t.channels or \
            ctx.channels != t.channels:
        raise ValueError(f"a {t.channels}-channel entropy model on axis {prior.axis} of a "
                         f"{list(x.shape)} tensor")
    if spatial_shape(tuple(x.shape), prior.axis) != tuple(ctx.spatial):
        raise ValueError(f"a context model of a {list(ctx.spatial)} grid for a "
                         f"{list(x.shape)} tensor")
    q = latents(x, prior.step, prior.axis)
    values = q.numpy()
    anchors = torch.from_numpy(values[:, layout(tuple(ctx.spatial)).anchors])
    stream, escapes = ctx.compress(values)
    step = encode_tensor(prior.step.detach().cpu().to(FLOAT).contiguous(),
                         TensorSpec(coders=coders, sparse=False))
    params = symbols_node(torch.from_numpy(ctx.params), coders)
    buckets = symbols_node(torch.from_numpy(ctx.buckets), coders)
    ctx_escapes = symbols_node(torch.from_numpy(escapes.astype(np.int64)), coders)
    crc = latents_crc(q)
    out = [Node("learned_context", FLOAT, tuple(x.shape),
                {"axis": prior.axis, "anchors": "symbols", "crc": crc},
                [step, symbols_node(anchors, coders), params, buckets, ctx_escapes], [stream])]
    for precision in TABLE_PRECISIONS:
        if 4 * (int(t.lengths.max()) + 1) > 1 << precision:
            continue
        tables = t.at_precision(precision)
        a_stream, a_escapes = tables.compress(anchors)
        out.append(Node("learned_context", FLOAT, tuple(x.shape),
                        {"axis": prior.axis, "anchors": "range", "precision": precision,
                         "crc": crc},
                        [step, *table_nodes(tables, coders),
                         symbols_node(torch.tensor(a_escapes, dtype=torch.int64), coders),
                         params, buckets, ctx_escapes],
                        [a_stream, stream]))
    return out


def encode(x: Tensor, spec: TensorSpec) -> list[Node]:
    prior = spec.prior
    if prior is None or getattr(prior, "context", None) is None or not x.numel():
        return []
    return context_nodes(x, prior, spec.coders)


def decode(node: Node) -> Tensor:
    axis = check_axis(node.params.get("axis"), len(node.shape))
    if axis is None:
        raise FormatError("learned_context node needs a channel axis")
    spatial = spatial_shape(tuple(node.shape), axis)
    if spatial is None or min(spatial) < 2:
        raise FormatError(f"learned_context needs a 1-D or 2-D grid besides the channels, "
                          f"not {list(node.shape)} with channels on axis {axis}")
    mode = node.params.get("anchors")
    if mode not in ("range", "symbols"):
        raise FormatError(f"learned_context: anchors coded as {mode!r} (range or symbols)")
    expect_parts(node, 7 if mode == "range" else 5, 2 if mode == "range" else 1)
    channels = node.shape[axis]
    n = math.prod(spatial)
    lay = layout(spatial)
    step = decode_step(node.children[0], channels)
    if mode == "range":
        support, deltas, a_escapes = (decode_node(c) for c in node.children[1:4])
        tables = read_tables(support, deltas, channels, node.params.get("precision"))
        if a_escapes.dim() != 1 or a_escapes.numel() > channels * n:
            raise FormatError("learned_context: anchor escapes must be 1-d, at most one a "
                              "latent")
    else:
        anchors = decode_node(node.children[1])
        check_shape(anchors.shape, (channels, lay.anchors.size), "anchor latents")
        if anchors.numel() and int(anchors.abs().max()) > MAX_SYMBOL:
            raise FormatError("a latent out of range")
    params, buckets, c_escapes = (decode_node(c) for c in node.children[-3:])
    if c_escapes.dim() != 1 or c_escapes.numel() > channels * n:
        raise FormatError("learned_context: context escapes must be 1-d, at most one a latent")
    if params.shape != (channels, 3) or buckets.shape != (BUCKETS,):
        raise FormatError(f"learned_context: context parameters [{channels}, 3] and "
                          f"[{BUCKETS}] expected, got {list(params.shape)} and "
                          f"{list(buckets.shape)}")
    ctx = FrozenContext(spatial, params.numpy().astype(np.int64),
                        buckets.numpy().astype(np.int64))
    q = np.zeros((channels, n), dtype=np.int64)
    if mode == "symbols":
        q[:, lay.anchors] = anchors.numpy()
    else:
        try:
            q[:, lay.anchors] = tables.decompress(node.blobs[0], a_escapes.tolist(),
                                                  lay.anchors.size).numpy()
        except (AssertionError, ValueError, RuntimeError) as e:
            raise FormatError(f"anchors' range-coded stream is corrupted ({first_line(e)})"
                              ) from e
    escapes = c_escapes.numpy().astype(np.int64)
    if escapes.size and int(np.abs(escapes).max()) > MAX_SYMBOL:
        raise FormatError("a latent out of range")
    ctx.decompress(node.blobs[-1], escapes, q)
    q = torch.from_numpy(q)
    if latents_crc(q) != node.params.get("crc"):
        raise FormatError("context-coded latents do not match their checksum (truncated or "
                          "corrupted stream)")
    return dequantize_latent(channels_back(q, tuple(node.shape), axis), step, axis)


def describe(node: Node) -> str:
    c = node.shape[node.params["axis"]]
    if node.params["anchors"] == "symbols":
        return (f"learned checkerboard context/{c} ch, anchors [{node.children[1].describe()}], "
                f"others range coded ({len(node.blobs[0])} B)")
    return (f"learned prior + checkerboard context/{c} ch/{node.params['precision']}b tables, "
            f"range coded ({len(node.blobs[0])} + {len(node.blobs[1])} B)")


register_codec(Codec("learned_context", 11, encode, decode, describe, modes=("learned",)))
