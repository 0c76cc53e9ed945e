"""Codec 10, ``learned``: latents coded with a learned entropy model.

A tensor whose values are ``q * step[c]`` (integers q, one step per channel along ``axis``;
what the ``entropy_model`` pass leaves) is stored as the steps, the model's frozen integer
tables (``nerfzip.codec.entropy_model.FrozenPrior``) and one range-coded stream of the q,
channel after channel, each channel with its own table; values outside a channel's support are
coded as its escape symbol and stored verbatim after the stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from nerfzip.codec.binary import FormatError
from nerfzip.codec.codecs.symbols import symbols_node
from nerfzip.codec.entropy_model import (
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


def latents(x: Tensor, step: Tensor, axis: int) -> Tensor:
    """Integer latents [C, N] of ``x``: ``round(x / step)`` per channel."""
    v = channels_first(x.detach().cpu().to(FLOAT), axis)
    return torch.round(v / step.detach().cpu().to(FLOAT)[:, None]).to(torch.int64)


def learned_node(x: Tensor, prior: LearnedSpec, coders: tuple[str, ...]) -> Node:
    t = prior.tables
    if x.dim() == 0 or not 0 <= prior.axis < x.dim() or x.shape[prior.axis] != t.channels:
        raise ValueError(f"a {t.channels}-channel entropy model on axis {prior.axis} of a "
                         f"{list(x.shape)} tensor")
    q = latents(x, prior.step, prior.axis)
    stream, escapes = t.compress(q)
    exact = TensorSpec(coders=coders, sparse=False)
    support = torch.from_numpy(np.stack([t.lo, t.lengths], axis=1))
    children = [encode_tensor(prior.step.detach().cpu().to(FLOAT).contiguous(), exact),
                symbols_node(support, coders),
                symbols_node(torch.from_numpy(t.freqs), coders),
                symbols_node(torch.tensor(escapes, dtype=torch.int64), coders)]
    return Node("learned", FLOAT, tuple(x.shape), {"axis": prior.axis}, children, [stream])


def encode(x: Tensor, spec: TensorSpec) -> list[Node]:
    if spec.prior is None or not x.numel():
        return []
    return [learned_node(x, spec.prior, spec.coders)]


def decode(node: Node) -> Tensor:
    expect_parts(node, 4, 1)
    axis = check_axis(node.params.get("axis"), len(node.shape))
    if axis is None:
        raise FormatError("learned node needs a channel axis")
    channels = node.shape[axis]
    n = math.prod(node.shape) // max(1, channels)
    step, support, freqs, escapes = (decode_node(c) for c in node.children)
    check_shape(step.shape, (channels,), "quantization steps")
    if step.dtype != FLOAT or not bool(torch.isfinite(step).all()) or \
            bool((step <= 0).any()):
        raise FormatError("quantization steps must be finite and positive")
    check_shape(support.shape, (channels, 2), "entropy model supports")
    if freqs.dim() != 1 or escapes.dim() != 1:
        raise FormatError("entropy model frequencies and escapes must be 1-d")
    if escapes.numel() > math.prod(node.shape):
        raise FormatError("more escaped values than latents")
    tables = FrozenPrior(support[:, 0].numpy().astype(np.int64),
                         support[:, 1].numpy().astype(np.int64),
                         freqs.numpy().astype(np.int64))
    q = tables.decompress(node.blobs[0], escapes.tolist(), n)
    return dequantize_latent(channels_back(q, tuple(node.shape), axis), step, axis)


def describe(node: Node) -> str:
    c = node.shape[node.params["axis"]]
    return f"learned prior/{c} ch, range coded ({len(node.blobs[0])} B)"


register_codec(Codec("learned", 10, encode, decode, describe, modes=("learned",)))
