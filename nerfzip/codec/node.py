"""The generic part of the per-tensor codecs: the coded node, its bytes, the codec registry and
the choice of the smallest coding a ``TensorSpec`` allows.

A *node* is a codec id, the decoded dtype and shape, small JSON parameters, child nodes and
byte blobs. Each codec is one module of ``nerfzip.codec.codecs`` that registers a ``Codec``:
its stable file id, the format minor version that introduced it, the precision modes it offers
candidates for, and its encode (candidates), decode (validated) and describe functions. This
module knows no codec by name; import ``nerfzip.codec.tensors`` (which loads every codec) to
use them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from nerfzip.codec import symbols as sym
from nerfzip.codec.binary import FormatError, Reader, Writer

DTYPE_IDS = {torch.float32: 1, torch.float16: 2, torch.uint8: 3, torch.bool: 4, torch.int32: 5,
             torch.int64: 6}
DTYPES = {v: k for k, v in DTYPE_IDS.items()}
MAX_DEPTH = 4
MAX_NDIM = 8
MAX_PARTS = 8
MAX_DECODE_WORK = 1 << 34
"""Multiply-adds a decoder may spend rebuilding one Tucker or CP node (seconds of CPU): a
hostile file declaring a huge rank is refused rather than decoded for hours."""
FLOAT = torch.float32


@dataclass(frozen=True)
class TensorSpec:
    """The precision requested for one tensor.

    ``mode``: ``lossless`` (bit-exact, except that -0.0 may decode as 0.0: codebooks and sparse
    forms compare values, and -0.0 == 0.0), ``half`` (float16), ``quant`` (uniform ``bits``-bit
    integers, per channel along ``axis`` or per tensor when ``axis`` is None, with ranges from
    the tensor's min / max or from a given ``grid``), ``lowrank`` (a [m, n] matrix stored as
    rank-``rank`` factors), ``tucker`` / ``cp`` (the given ``parts``: core and factors over
    ``modes``, or CP factors, each with its own spec; a compression pass made the fit, and the
    tensor must be exactly their product), ``learned`` (integer latents ``round(x / step)`` per
    channel, range-coded with a learned entropy model's frozen tables: ``prior``).
    ``vector_axis`` names the axis of feature vectors, so that an exact codebook of repeated
    vectors is tried (what vector quantization leaves behind). The modes are those the
    registered codecs offer (``known_modes``).
    """

    mode: str = "lossless"
    bits: int = 8
    axis: int | None = None
    grid: tuple[Tensor, Tensor] | None = field(default=None, compare=False)
    rank: int = 0
    vector_axis: int | None = None
    coders: tuple[str, ...] = sym.CODERS
    sparse: bool = True
    """Try storing exact zeros by position (off inside a sparse node's values)."""
    parts: tuple[tuple[Tensor, TensorSpec], ...] | None = field(default=None, compare=False)
    """Tucker: (core, spec), then (U_m, spec) per mode of ``modes``; CP: (U_k, spec) per mode."""
    modes: tuple[int, ...] = ()
    """Tucker: the modes that have a factor (the others are kept whole in the core)."""
    prior: Any = field(default=None, compare=False)
    """``learned``: the frozen entropy model and quantization step the latents are coded with
    (``codecs.learned.LearnedSpec``)."""
    ladder: tuple[Tensor, ...] = field(default=(), compare=False)
    """``quant`` with a ``grid``: store the tensor as nested layers (``codec/ladder.py``), the
    k-th with step ``ladder[k] * scale`` per channel (int64 [C], the last all ones); the .nrz
    writer puts each in its own layer of a progressive file."""
    ladder_layers: tuple[int, ...] = ()
    """The file layer of each refinement (``ladder[1:]``); empty: refinement k in layer k."""


@dataclass
class Node:
    """One coded tensor: what ``serialize`` writes and ``parse`` reads back."""

    codec: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    params: dict[str, Any]
    children: list[Node]
    blobs: list[bytes]

    def nbytes(self) -> int:
        return len(serialize(self))

    def describe(self) -> str:
        """A short human-readable description of the coding (for ``nerfzip info``)."""
        codec = REGISTRY.get(self.codec)
        return codec.describe(self) if codec is not None else self.codec


# --- the registry ---
@dataclass(frozen=True)
class Codec:
    """One tensor codec, as it registers itself."""

    name: str
    """The name nodes carry (``Node.codec``) and ``nerfzip info`` shows."""
    id: int
    """The id stored in files: stable forever, never reused (docs/format.md)."""
    encode: Callable[[Tensor, TensorSpec], list[Node]]
    """Candidate codings of a float32 tensor (integer tensors for an ``integer`` codec) under
    the spec; empty where this codec has nothing to offer for it."""
    decode: Callable[[Node], Tensor]
    """The tensor a parsed node stands for, every parameter and child checked (FormatError)."""
    describe: Callable[[Node], str]
    """A few words on the coding, children included."""
    modes: tuple[str, ...] = ()
    """The ``TensorSpec.mode`` values whose candidates this codec proposes."""
    minor: int = 0
    """The format minor version that introduced it (a file needs the highest of its codecs)."""
    integer: bool = False
    """Codes integer and boolean tensors (whatever the mode); the others code float32 only."""
    float_only: bool = True
    """Its nodes must declare float32 (checked before ``decode`` is called)."""


REGISTRY: dict[str, Codec] = {}
"""Every codec by name, filled once as ``nerfzip.codec.codecs`` is imported."""


def register_codec(codec: Codec) -> Codec:
    """Add a codec; its name and id must be new (an id means one thing in every file)."""
    if codec.name in REGISTRY:
        raise ValueError(f"codec {codec.name!r} is already registered")
    taken = {c.id: c.name for c in REGISTRY.values()}
    if not 1 <= codec.id < 1 << 16 or codec.id in taken:
        raise ValueError(f"codec id {codec.id} of {codec.name!r} is out of range or taken "
                         f"(by {taken.get(codec.id)!r})")
    REGISTRY[codec.name] = codec
    return codec


def unregister_codec(name: str) -> None:
    """Remove a codec (tests and plugins that register one for a while)."""
    del REGISTRY[name]


def codecs_by_id() -> list[Codec]:
    """The codecs in id order: the order candidates are tried in, so that ties between equal
    sizes go to the same codec whatever order the modules were imported in."""
    return sorted(REGISTRY.values(), key=lambda c: c.id)


def known_modes() -> tuple[str, ...]:
    return tuple(dict.fromkeys(m for c in codecs_by_id() for m in c.modes))


class _RegistryView(Mapping):
    """A read-only dict view of the registry (kept for the names other modules import)."""

    def __init__(self, items: Callable[[], dict]):
        self._items = items

    def __getitem__(self, key: Any) -> Any:
        return self._items()[key]

    def __iter__(self) -> Iterator:
        return iter(self._items())

    def __len__(self) -> int:
        return len(self._items())

    def __repr__(self) -> str:
        return repr(self._items())


CODEC_IDS: Mapping[str, int] = _RegistryView(lambda: {c.name: c.id for c in codecs_by_id()})
CODEC_NAMES: Mapping[int, str] = _RegistryView(lambda: {c.id: c.name for c in codecs_by_id()})
CODEC_MINOR: Mapping[str, int] = _RegistryView(
    lambda: {c.name: c.minor for c in codecs_by_id() if c.minor})
"""The format minor version that introduced a codec (absent: 1.0). A file is written with the
lowest minor version its codecs need, so files without the newer codecs stay 1.0 files."""


# --- encoding ---
def encode_tensor(x: Tensor, spec: TensorSpec = TensorSpec()) -> Node:
    """The smallest coding of ``x`` that meets ``spec``: every registered codec proposes its
    candidates (integer tensors: the integer codecs, whatever the mode) and the smallest in
    serialized bytes wins, the lowest codec id on a tie."""
    x = x.detach().cpu().contiguous()
    if x.dtype not in DTYPE_IDS:
        raise ValueError(f"cannot store dtype {x.dtype}")
    if x.is_floating_point():
        x = x.to(FLOAT)
        pool = [c for c in codecs_by_id() if spec.mode in c.modes]
        if not pool:
            raise ValueError(f"unknown precision mode {spec.mode!r}")
    else:
        pool = [c for c in codecs_by_id() if c.integer]
    candidates = [node for codec in pool for node in codec.encode(x, spec)]
    if not candidates:
        raise ValueError(f"no codec can store a {list(x.shape)} {x.dtype} tensor in mode "
                         f"{spec.mode!r}")
    if len(candidates) == 1:  # (no need to serialise it to know it is the smallest)
        return candidates[0]
    return min(candidates, key=Node.nbytes)


# --- serialisation ---
def serialize(node: Node) -> bytes:
    w = Writer()
    w.u16(REGISTRY[node.codec].id)
    w.u8(DTYPE_IDS[node.dtype])
    w.u8(len(node.shape))
    for s in node.shape:
        w.u64(s)
    w.json(node.params)
    w.u8(len(node.children))
    for child in node.children:
        w.blob(serialize(child))
    w.u8(len(node.blobs))
    for b in node.blobs:
        w.blob(b)
    return w.getvalue()


class Budget:
    """Elements a decoder may still allocate (bounded by the file's plausible content)."""

    def __init__(self, elements: int):
        self.left = elements

    def spend(self, n: int, shape: tuple[int, ...]) -> None:
        if n > self.left:
            raise FormatError(f"declared shape {list(shape)} ({n} elements) exceeds what a "
                              f"file of this size can plausibly hold")
        self.left -= n


def parse(data: memoryview | bytes, budget: Budget, depth: int = 0) -> Node:
    """Parse (not decode) a node, validating its structure and sizes."""
    if depth > MAX_DEPTH:
        raise FormatError("codec nesting deeper than allowed")
    r = Reader(data)
    codec_id, dtype_id, ndim = r.u16(), r.u8(), r.u8()
    names = CODEC_NAMES
    if codec_id not in names:
        raise FormatError(f"unknown codec id {codec_id}")
    if dtype_id not in DTYPES:
        raise FormatError(f"unknown dtype id {dtype_id}")
    if ndim > MAX_NDIM:
        raise FormatError(f"{ndim} dimensions (at most {MAX_NDIM})")
    shape = tuple(r.u64() for _ in range(ndim))
    budget.spend(math.prod(shape), shape)
    params = r.json()
    if not isinstance(params, dict):
        raise FormatError("codec parameters are not a JSON object")
    n_children = r.u8()
    if n_children > MAX_PARTS:
        raise FormatError(f"{n_children} child nodes (at most {MAX_PARTS})")
    children = [parse(r.blob(), budget, depth + 1) for _ in range(n_children)]
    n_blobs = r.u8()
    if n_blobs > MAX_PARTS:
        raise FormatError(f"{n_blobs} data blobs (at most {MAX_PARTS})")
    blobs = [bytes(r.blob()) for _ in range(n_blobs)]
    r.expect_end()
    return Node(names[codec_id], DTYPES[dtype_id], shape, params, children, blobs)


# --- decoding ---
def decode(node: Node) -> Tensor:
    """The tensor a node stands for (validated at every step by its codec)."""
    codec = REGISTRY.get(node.codec)
    if codec is None:
        raise FormatError(f"codec {node.codec} cannot be decoded here")
    if codec.float_only and node.dtype != FLOAT:
        raise FormatError(f"{node.codec} node must decode to float32")
    return codec.decode(node)


def expect_parts(node: Node, children: int, blobs: int) -> None:
    if len(node.children) != children or len(node.blobs) != blobs:
        raise FormatError(f"{node.codec} node needs {children} children and {blobs} blobs, "
                          f"has {len(node.children)} and {len(node.blobs)}")


def check_shape(got: tuple[int, ...], want: tuple[int, ...], what: str) -> None:
    if tuple(got) != tuple(want):
        raise FormatError(f"{what} has shape {list(got)}, expected {list(want)}")


def check_axis(value: Any, ndim: int) -> int | None:
    """A node's ``axis`` parameter: None or a valid dimension."""
    if value is None:
        return None
    # bool is an int to Python: JSON's true would pass as axis 1
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < ndim:
        raise FormatError(f"bad axis {value!r} for a {ndim}-d tensor")
    return value
