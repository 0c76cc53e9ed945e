"""Per-tensor codecs, the names the rest of nerfzip uses: how one tensor becomes a tree of coded
nodes, and back.

The generic part (``Node``, ``serialize`` / ``parse``, ``Budget``, the registry and the choice
of the smallest candidate) is ``nerfzip.codec.node``; each codec is one module of
``nerfzip.codec.codecs`` registered under its stable file id. Codecs compose through
children: a quantized tensor's integer symbols are a ``symbols`` child coded by the smallest of
the symbol coders (``symbols.py``); a sparse tensor's non-zero values are a child coded by any
float codec; a codebook is a child like any tensor; a Tucker or CP decomposition stores its
core and factors as children.

``encode_tensor`` tries every representation allowed by the requested precision (a
``TensorSpec``) and keeps the smallest. ``lossless`` finds exact structure by itself: exact
zeros (sparse), few distinct values (a palette), repeated feature vectors (an exact codebook),
and otherwise the float bytes, byte-shuffled and compressed where that wins. ``half`` and
``quant`` are lossy, and decode to exactly the values ``dequantize`` gives (which is what the
compression passes use), so a field loaded from a file renders exactly like the field saved.

The codec ids are part of the file format (``docs/format.md``): never renumber them.
"""

from __future__ import annotations

import nerfzip.codec.codecs  # noqa: F401  (registers every codec)
from nerfzip.codec.codecs.products import cp_to_tensor, khatri_rao, tucker_to_tensor, tucker_work
from nerfzip.codec.codecs.quant import (
    channel_view,
    dequantize,
    fake_quantize,
    quant_grid,
    quantize,
)
from nerfzip.codec.codecs.symbols import symbols_node
from nerfzip.codec.node import (
    CODEC_IDS,
    CODEC_MINOR,
    CODEC_NAMES,
    DTYPE_IDS,
    DTYPES,
    FLOAT,
    MAX_DECODE_WORK,
    Budget,
    Codec,
    Node,
    TensorSpec,
    decode,
    encode_tensor,
    known_modes,
    parse,
    register_codec,
    serialize,
    unregister_codec,
)

__all__ = [
    "CODEC_IDS", "CODEC_MINOR", "CODEC_NAMES", "DTYPE_IDS", "DTYPES", "FLOAT", "MAX_DECODE_WORK",
    "Budget", "Codec", "Node", "TensorSpec", "channel_view", "cp_to_tensor", "decode",
    "dequantize", "encode_tensor", "fake_quantize", "khatri_rao", "known_modes", "parse",
    "quant_grid", "quantize", "register_codec", "serialize", "symbols_node", "tucker_to_tensor",
    "tucker_work", "unregister_codec",
]
