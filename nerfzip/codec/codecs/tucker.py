"""Codec 8 (format 1.1), ``tucker``: a core and one factor matrix per mode of ``modes``, fitted by
a compression pass and each coded under its own spec; decodes to ``core x_m U_m``."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from nerfzip.codec.binary import FormatError
from nerfzip.codec.codecs.products import fitted_children, tucker_to_tensor, tucker_work
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
    modes = list(spec.modes)
    children = fitted_children(x, spec, lambda p: tucker_to_tensor(p[0], p[1:], modes))
    return [Node("tucker", FLOAT, tuple(x.shape), {"modes": modes}, children, [])]


def checked_modes(node: Node) -> list[int]:
    modes: Any = node.params.get("modes")
    ndim = len(node.shape)
    if not isinstance(modes, list) or len(set(map(str, modes))) != len(modes) or not all(
            type(m) is int and 0 <= m < ndim for m in modes):
        raise FormatError(f"bad tucker modes {modes!r} for a {ndim}-d tensor")
    return modes


def decode(node: Node) -> Tensor:
    """Core and factors checked against the declared shape before the product: every rank at
    most its mode's size (so no intermediate outgrows the budgeted result) and bounded work."""
    modes = checked_modes(node)
    ndim = len(node.shape)
    expect_parts(node, 1 + len(modes), 0)
    core_node = node.children[0]
    if len(core_node.shape) != ndim or any(
            r > n or (r != n and m not in modes)
            for m, (r, n) in enumerate(zip(core_node.shape, node.shape))):
        raise FormatError(f"tucker core {list(core_node.shape)} does not fit "
                          f"{list(node.shape)} with factors on modes {modes}")
    if tucker_work(core_node.shape, node.shape, modes) > MAX_DECODE_WORK:
        raise FormatError("tucker node needs more work to decode than a reader allows")
    for m, child in zip(modes, node.children[1:]):
        check_shape(child.shape, (node.shape[m], core_node.shape[m]), f"tucker factor {m}")
    parts = [decode_node(c) for c in node.children]
    if any(p.dtype != FLOAT for p in parts):
        raise FormatError("tucker core and factors must be float32")
    return tucker_to_tensor(parts[0], parts[1:], modes)


def describe(node: Node) -> str:
    core = node.children[0]
    return f"tucker core {'x'.join(map(str, core.shape))} [{core.describe()}]"


register_codec(Codec("tucker", 8, encode, decode, describe, modes=("tucker",), minor=1))
