"""The tensor codec registry: stable file ids, and a codec added by one module of its own (here a
toy one defined in this test) taking part in encoding, parsing, decoding and description."""

from __future__ import annotations

import struct

import pytest
import torch

from nerfzip.codec.binary import FormatError
from nerfzip.codec.node import REGISTRY
from nerfzip.codec.tensors import (
    CODEC_IDS,
    CODEC_MINOR,
    CODEC_NAMES,
    FLOAT,
    Budget,
    Codec,
    Node,
    TensorSpec,
    decode,
    encode_tensor,
    parse,
    register_codec,
    serialize,
    unregister_codec,
)

STABLE_IDS = {"raw": 1, "half": 2, "quant": 3, "vq": 4, "sparse": 5, "lowrank": 6, "symbols": 7,
              "tucker": 8, "cp": 9, "learned": 10,
              "learned_context": 11}


def test_file_ids_and_minor_versions_never_change():
    assert dict(CODEC_IDS) == STABLE_IDS
    assert dict(CODEC_NAMES) == {v: k for k, v in STABLE_IDS.items()}
    assert dict(CODEC_MINOR) == {"tucker": 1, "cp": 1}


def test_a_taken_name_or_id_is_refused():
    raw = REGISTRY["raw"]
    with pytest.raises(ValueError, match="already registered"):
        register_codec(raw)
    with pytest.raises(ValueError, match="taken"):
        register_codec(Codec("raw2", 1, raw.encode, raw.decode, raw.describe))


# --- a toy codec, exactly as a new codec module would define it ---
def fill_encode(x: torch.Tensor, spec: TensorSpec) -> list[Node]:
    """A tensor whose entries are all the same float32 value: that one value."""
    flat = x.reshape(-1)
    if not flat.numel() or not bool((flat.view(torch.int32) == flat[0:1].view(torch.int32)).all()):
        return []
    return [Node("fill", FLOAT, tuple(x.shape), {}, [], [struct.pack("<f", float(flat[0]))])]


def fill_decode(node: Node) -> torch.Tensor:
    if node.children or len(node.blobs) != 1 or len(node.blobs[0]) != 4:
        raise FormatError("fill node needs one 4-byte blob")
    (value,) = struct.unpack("<f", node.blobs[0])
    return torch.full(node.shape, value, dtype=FLOAT)


FILL = Codec("fill", 250, fill_encode, fill_decode, lambda node: "fill", modes=("lossless",),
             minor=2)


@pytest.fixture
def fill_codec():
    register_codec(FILL)
    yield FILL
    unregister_codec("fill")


def test_a_registered_codec_competes_and_round_trips(fill_codec):
    x = torch.full((40, 30), -1.25)
    node = encode_tensor(x)
    assert node.codec == "fill" and node.describe() == "fill"
    data = serialize(node)
    assert struct.unpack_from("<H", data)[0] == 250  # its own id, in the file
    assert torch.equal(decode(parse(data, Budget(1 << 20))), x)
    assert CODEC_IDS["fill"] == 250 and CODEC_NAMES[250] == "fill" and CODEC_MINOR["fill"] == 2
    # Where it has nothing to offer, the other codecs code the tensor as before.
    y = torch.arange(12.0).reshape(3, 4)
    assert encode_tensor(y).codec != "fill" and torch.equal(decode(encode_tensor(y)), y)


def test_a_registered_codec_validates_its_nodes(fill_codec):
    bad = Node("fill", FLOAT, (3,), {}, [], [b"\0\0"])
    with pytest.raises(FormatError, match="4-byte blob"):
        decode(parse(serialize(bad), Budget(1 << 20)))
    with pytest.raises(FormatError, match="must decode to float32"):
        decode(Node("fill", torch.int64, (3,), {}, [], [b"\0" * 4]))


def test_an_unregistered_codec_id_is_an_unknown_id(fill_codec):
    data = serialize(encode_tensor(torch.full((5, 5), 2.0)))
    unregister_codec("fill")
    try:
        with pytest.raises(FormatError, match="unknown codec id 250"):
            parse(data, Budget(1 << 20))
        assert "fill" not in CODEC_IDS
    finally:
        register_codec(FILL)  # (the fixture removes it again)


def test_an_unknown_mode_names_itself():
    with pytest.raises(ValueError, match="unknown precision mode 'nope'"):
        encode_tensor(torch.ones(3), TensorSpec(mode="nope"))
