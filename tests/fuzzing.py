"""Test helper: damage serialized bytes under Hypothesis's control (the codecs' fuzz tests
share it), and the one outcome a damaged node may have."""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from nerfzip.codec.binary import FormatError
from nerfzip.codec.tensors import Budget, decode, parse

KINDS = ("flip", "set", "insert", "delete", "truncate")


def mutate(data: st.DataObject, buf: bytearray, count: int,
           kinds: tuple[str, ...] = KINDS) -> bytearray:
    """``count`` drawn mutations of ``buf`` in place: a bit flipped, a byte set, up to 8 bytes
    inserted or deleted, or the tail cut off."""
    for _ in range(count):
        kind = data.draw(st.sampled_from(kinds))
        pos = data.draw(st.integers(0, max(0, len(buf) - 1)))
        if kind == "flip" and buf:
            buf[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "set" and buf:
            buf[pos] = data.draw(st.integers(0, 255))
        elif kind == "insert":
            buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del buf[pos:pos + data.draw(st.integers(1, 8))]
        elif kind == "truncate":
            del buf[pos:]
    return buf


def refused_or_shaped(buf: bytes, shape: tuple[int, ...]) -> None:
    """A damaged node is refused with a one-line FormatError, or decodes to a float32 tensor
    of the declared ``shape``."""
    try:
        out = decode(parse(buf, Budget(1 << 20)))
    except FormatError as e:
        assert str(e) and "\n" not in str(e)
        return
    assert out.dtype == torch.float32 and tuple(out.shape) == tuple(shape)
