"""Per-tensor codecs: how one tensor becomes a tree of coded nodes, and back.

A *node* is a codec id, the decoded dtype and shape, small JSON parameters, child nodes and
byte blobs. Codecs compose through children: a quantized tensor's integer symbols are a
``symbols`` child coded by the smallest of the symbol coders (``symbols.py``); a sparse tensor's
non-zero values are a child coded by any float codec; a codebook is a child like any tensor;
a Tucker or CP decomposition stores its core and factors as children.

``encode_tensor`` tries every representation allowed by the requested precision (a
``TensorSpec``) and keeps the smallest. ``lossless`` finds exact structure by itself: exact
zeros (sparse), few distinct values (a palette), repeated feature vectors (an exact codebook),
and otherwise the float bytes, byte-shuffled and compressed where that wins. ``half`` and
``quant`` are lossy, and decode to exactly the values ``dequantize`` gives (which is what the
compression passes use), so a field loaded from a file renders exactly like the field saved.

The codec ids are part of the file format (``docs/format.md``): never renumber them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from nerfzip.codec import symbols as sym
from nerfzip.codec.binary import FormatError, Reader, Writer

CODEC_IDS = {"raw": 1, "half": 2, "quant": 3, "vq": 4, "sparse": 5, "lowrank": 6, "symbols": 7,
             "tucker": 8, "cp": 9}
CODEC_NAMES = {v: k for k, v in CODEC_IDS.items()}
CODEC_MINOR = {"tucker": 1, "cp": 1}
"""The format minor version that introduced a codec (absent: 1.0). A file is written with the
lowest minor version its codecs need, so files without the newer codecs stay 1.0 files."""
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

    ``mode``: ``lossless`` (bit-exact), ``half`` (float16), ``quant`` (uniform ``bits``-bit
    integers, per channel along ``axis`` or per tensor when ``axis`` is None, with ranges from
    the tensor's min / max or from a given ``grid``), ``lowrank`` (a [m, n] matrix stored as
    rank-``rank`` factors), ``tucker`` / ``cp`` (the given ``parts``: core and factors over
    ``modes``, or CP factors, each with its own spec; a compression pass made the fit, and the
    tensor must be exactly their product). ``vector_axis`` names the axis of feature vectors,
    so that an exact codebook of repeated vectors is tried (what vector quantization leaves
    behind).
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


@dataclass
class Node:
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
        p = self.params
        if self.codec == "symbols":
            return f"{p['coder']}" + (f"/{p['bits']}b" if p["coder"] == "pack" else "")
        if self.codec in ("raw", "half"):
            name = "f32" if self.codec == "raw" and self.dtype == FLOAT else (
                "f16" if self.codec == "half" else str(self.dtype).replace("torch.", ""))
            extra = "+" + p["compress"] if p.get("compress", "none") != "none" else ""
            return name + ("+shuffle" if p.get("shuffle") else "") + extra
        if self.codec == "quant":
            where = "tensor" if p["axis"] is None else f"axis {p['axis']}"
            return f"quant {p['bits']}b/{where} [{self.children[2].describe()}]"
        if self.codec == "vq":
            cb = self.children[0]
            return f"codebook {cb.shape[0]}x{cb.shape[1]} [{self.children[1].describe()}]"
        if self.codec == "sparse":
            return (f"sparse {p['positions']} [{self.children[0].describe()}] values "
                    f"[{self.children[1].describe()}]")
        if self.codec == "lowrank":
            return f"rank {self.children[0].shape[1]} [{self.children[0].describe()}]"
        if self.codec == "tucker":
            core = self.children[0]
            return f"tucker core {'x'.join(map(str, core.shape))} [{core.describe()}]"
        if self.codec == "cp":
            return f"cp rank {self.children[0].shape[1]} [{self.children[0].describe()}]"
        return self.codec


# --- quantization shared with the compression passes ---
def channel_view(x: Tensor, axis: int | None) -> Tensor:
    """``x`` as [C, rest] with channels along ``axis`` (C = 1 per tensor)."""
    if axis is None:
        return x.reshape(1, -1)
    return x.movedim(axis, 0).reshape(x.shape[axis], -1)


def quant_grid(x: Tensor, bits: int, axis: int | None) -> tuple[Tensor, Tensor]:
    """Min / max calibrated grid with zero exactly on it: ``lo`` and ``scale`` per channel,
    float32 [C]. Zero is exact (``lo = -(z * scale)``, so ``lo + z * scale == 0`` in float32)
    so that pruned entries stay exactly zero whatever they are quantized with."""
    v = channel_view(x.detach().to(FLOAT), axis)
    lo = torch.clamp(v.amin(dim=1), max=0.0)
    hi = torch.clamp(v.amax(dim=1), min=0.0)
    scale = (hi - lo) / float((1 << bits) - 1)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    zero = torch.round(-lo / scale).clamp(0, (1 << bits) - 1)
    return -(zero * scale), scale


def quantize(x: Tensor, bits: int, axis: int | None, lo: Tensor, scale: Tensor) -> Tensor:
    """Integer symbols in [0, 2^bits) of ``x`` on the grid ``lo + q * scale`` (shape of x)."""
    shape = [1] * x.dim()
    if axis is not None:
        shape[axis] = -1
    q = torch.round((x.detach().to(FLOAT) - lo.view(shape)) / scale.view(shape))
    return q.clamp(0, (1 << bits) - 1).to(torch.int64)


def dequantize(q: Tensor, axis: int | None, lo: Tensor, scale: Tensor) -> Tensor:
    """The grid values of symbols ``q``; the one formula every quantized value goes through."""
    shape = [1] * q.dim()
    if axis is not None:
        shape[axis] = -1
    return lo.view(shape).to(FLOAT) + q.to(FLOAT) * scale.view(shape).to(FLOAT)


def fake_quantize(x: Tensor, bits: int, axis: int | None,
                  grid: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """``x`` replaced by its nearest grid values (what ``quant`` stores and decodes to)."""
    lo, scale = grid if grid is not None else quant_grid(x, bits, axis)
    return dequantize(quantize(x, bits, axis, lo, scale), axis, lo, scale)


# --- encoding ---
def _bytes_of(x: Tensor) -> bytes:
    return x.detach().cpu().contiguous().numpy().tobytes()


def _shuffle(raw: bytes, width: int) -> bytes:
    """Byte planes of ``width``-byte values (exponent bytes of floats compress together)."""
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, width).T.tobytes()


def _unshuffle(raw: bytes, width: int) -> bytes:
    return np.frombuffer(raw, dtype=np.uint8).reshape(width, -1).T.tobytes()


def symbols_node(values: Tensor, coders: tuple[str, ...], dtype: torch.dtype = torch.int64
                 ) -> Node:
    params, blobs = sym.encode_symbols(values.detach().cpu().numpy().reshape(-1), coders)
    return Node("symbols", dtype, tuple(values.shape), params, [], blobs)


def raw_candidates(x: Tensor, coders: tuple[str, ...]) -> list[Node]:
    """The tensor's own bytes (float32 or integer), plain, compressed, byte-shuffled."""
    raw = _bytes_of(x)
    width = x.element_size()
    out = [Node("raw", x.dtype, tuple(x.shape), {"compress": "none", "shuffle": False}, [],
                [raw])]
    for method in ("zstd", "lzma"):
        if method not in coders or (method == "lzma" and len(raw) > sym.LZMA_MAX_BYTES):
            continue
        for shuffle in ((False, True) if width > 1 else (False,)):
            data = _shuffle(raw, width) if shuffle else raw
            out.append(Node("raw", x.dtype, tuple(x.shape),
                            {"compress": method, "shuffle": shuffle}, [],
                            [sym.compress_bytes(data, method)]))
    return out


def half_candidates(x: Tensor, coders: tuple[str, ...]) -> list[Node]:
    raw = _bytes_of(x.to(torch.float16))
    out = [Node("half", FLOAT, tuple(x.shape), {"compress": "none", "shuffle": False}, [],
                [raw])]
    if "zstd" in coders:
        out.append(Node("half", FLOAT, tuple(x.shape), {"compress": "zstd", "shuffle": True},
                        [], [sym.compress_bytes(_shuffle(raw, 2), "zstd")]))
    return out


def codebook_node(x: Tensor, axis: int | None, spec: TensorSpec) -> Node | None:
    """An exact codebook of the distinct values (axis None) or feature vectors along ``axis``,
    when there are few enough of them to pay off."""
    rows = x.reshape(-1, 1) if axis is None else x.movedim(axis, -1).reshape(-1, x.shape[axis])
    limit = min(1 << 16, rows.shape[0] // 4)
    if rows.shape[0] < 16:
        return None
    # A sample with too many distinct rows already rules the codebook out (cheap for the
    # continuous-valued tensors of an uncompressed field).
    sample = rows[:: max(1, rows.shape[0] // 200_000)]
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


def sparse_node(x: Tensor, spec: TensorSpec) -> Node | None:
    """Positions of the non-zeros (a bitmask or the gaps between them, whichever codes smaller)
    plus the non-zero values coded under the same spec."""
    flat = x.reshape(-1)
    nz = flat != 0
    if flat.numel() < 64 or float(nz.float().mean()) > 0.75:
        return None
    where = nz.nonzero()[:, 0]
    gaps = torch.diff(where, prepend=torch.tensor([-1])) - 1
    mask = symbols_node(nz.to(torch.int64), spec.coders)
    gap = symbols_node(gaps, spec.coders) if where.numel() else mask
    positions, kind = (mask, "mask") if mask.nbytes() <= gap.nbytes() else (gap, "gaps")
    values = flat[nz]
    # The values are a flat list: feature vectors along ``vector_axis`` do not survive.
    inner_spec = replace(spec, sparse=False, vector_axis=None)
    return Node("sparse", x.dtype, tuple(x.shape), {"positions": kind},
                [positions, encode_tensor(values, inner_spec)], [])


def quant_node(x: Tensor, spec: TensorSpec) -> Node:
    if not 1 <= spec.bits <= 16:
        raise ValueError(f"quantization to {spec.bits} bits (1-16 supported)")
    # The grid may come from a pass that ran on a GPU; coding happens on the CPU.
    lo, scale = ((g.detach().cpu() for g in spec.grid) if spec.grid is not None
                 else quant_grid(x, spec.bits, spec.axis))
    q = quantize(x, spec.bits, spec.axis, lo, scale)
    exact = TensorSpec(coders=spec.coders, sparse=False)
    children = [encode_tensor(lo.to(FLOAT).contiguous(), exact),
                encode_tensor(scale.to(FLOAT).contiguous(), exact),
                symbols_node(q, spec.coders)]
    return Node("quant", FLOAT, tuple(x.shape), {"bits": spec.bits, "axis": spec.axis},
                children, [])


def lowrank_node(x: Tensor, spec: TensorSpec) -> Node:
    if x.dim() != 2 or spec.rank < 1:
        raise ValueError(f"low-rank coding needs a matrix and a rank >= 1 (got shape "
                         f"{tuple(x.shape)}, rank {spec.rank})")
    u, s, vh = torch.linalg.svd(x.to(FLOAT), full_matrices=False)
    r = min(spec.rank, s.numel())
    exact = TensorSpec(coders=spec.coders)
    children = [encode_tensor((u[:, :r] * s[:r]).contiguous(), exact),
                encode_tensor(vh[:r].contiguous(), exact)]
    return Node("lowrank", FLOAT, tuple(x.shape), {}, children, [])


# --- Tucker and CP products, shared with the compression passes ---
def tucker_to_tensor(core: Tensor, factors: list[Tensor], modes: list[int]) -> Tensor:
    """``core x_m U_m`` for m in ``modes`` (U_m [shape_m, rank_m]; Kolda & Bader 2009, eq. 4.1),
    accumulated in float64 and rounded once to float32: the pass that fits the factors and the
    decoder call this same function, so a file decodes to the values the field had."""
    out = core.double()
    for m, u in zip(modes, factors):
        out = torch.movedim(torch.tensordot(u.double(), out, dims=([1], [m])), 0, m)
    return out.to(FLOAT).contiguous()


def khatri_rao(factors: list[Tensor], width: int) -> Tensor:
    """Column-wise Kronecker product of [n_k, width] matrices -> [prod n_k, width] in float64
    (row-major: the last factor's index varies fastest); ones [1, width] for no factor."""
    out = torch.ones(1, width, dtype=torch.float64)
    for u in factors:
        out = (out[:, None, :] * u.double()[None, :, :]).reshape(-1, width)
    return out


def cp_to_tensor(factors: list[Tensor]) -> Tensor:
    """``sum_r prod_k U_k[i_k, r]`` (U_k [shape_k, R]; Kolda & Bader 2009, eq. 3.1) in float64,
    rounded once to float32. The components go in chunks no wider than the longest mode, so no
    intermediate is larger than the result, whatever the rank."""
    shape = [u.shape[0] for u in factors]
    rank = factors[0].shape[1]
    lead = max(range(len(shape)), key=lambda k: shape[k])
    first = factors[lead].double()
    rest = [u for k, u in enumerate(factors) if k != lead]
    out = torch.zeros(shape[lead], math.prod(shape) // max(1, shape[lead]), dtype=torch.float64)
    step = max(1, shape[lead])
    for lo in range(0, rank, step):
        chunk = first[:, lo:lo + step]
        out += chunk @ khatri_rao([u[:, lo:lo + step] for u in rest], chunk.shape[1]).T
    moved = [shape[lead]] + [n for k, n in enumerate(shape) if k != lead]
    return out.view(moved).movedim(0, lead).to(FLOAT).contiguous()


def tucker_work(core_shape: tuple[int, ...], shape: tuple[int, ...], modes: list[int]) -> int:
    """Multiply-adds of ``tucker_to_tensor`` applying the factors of ``modes`` in order."""
    current, work = list(core_shape), 0
    for m in modes:
        work += math.prod(current) * shape[m]
        current[m] = shape[m]
    return work


def factor_node(x: Tensor, spec: TensorSpec) -> Node:
    """A Tucker or CP node from the fit in ``spec.parts``, each part coded under its own spec.
    Refused unless the parts, as they decode, rebuild ``x`` exactly: the file must decode to
    the tensor that was saved."""
    if not spec.parts:
        raise ValueError(f"{spec.mode} coding needs the fitted parts (a compression pass's)")
    children = [encode_tensor(p.contiguous(), s) for p, s in spec.parts]
    parts = [decode(child) for child in children]
    if spec.mode == "tucker":
        params: dict[str, Any] = {"modes": list(spec.modes)}
        y = tucker_to_tensor(parts[0], parts[1:], list(spec.modes))
    else:
        params = {}
        y = cp_to_tensor(parts)
    if y.shape != x.shape or not torch.equal(y, x):
        raise ValueError(f"the {spec.mode} factors do not rebuild the {list(x.shape)} tensor "
                         "exactly (was the field changed after its constraints were applied?)")
    return Node(spec.mode, FLOAT, tuple(x.shape), params, children, [])


def encode_tensor(x: Tensor, spec: TensorSpec = TensorSpec()) -> Node:
    """The smallest coding of ``x`` that meets ``spec``."""
    x = x.detach().cpu().contiguous()
    if x.dtype not in DTYPE_IDS:
        raise ValueError(f"cannot store dtype {x.dtype}")
    if not x.is_floating_point():
        return symbols_node(x.to(torch.int64), spec.coders, x.dtype)
    if x.dtype != FLOAT:
        x = x.to(FLOAT)
    candidates: list[Node] = []
    if spec.mode == "lowrank":
        return lowrank_node(x, spec)
    if spec.mode in ("tucker", "cp"):
        return factor_node(x, spec)
    if spec.mode == "quant" and x.numel():
        candidates.append(quant_node(x, spec))
        if spec.vector_axis is not None:
            book = codebook_node(x, spec.vector_axis, spec)
            if book is not None:
                candidates.append(book)
    elif spec.mode == "half":
        candidates += half_candidates(x, spec.coders)
    elif spec.mode in ("lossless", "quant"):  # (an empty tensor is stored as it is)
        candidates += raw_candidates(x, spec.coders)
        for axis in dict.fromkeys([None, spec.vector_axis]):
            book = codebook_node(x, axis, spec) if x.numel() else None
            if book is not None:
                candidates.append(book)
    else:
        raise ValueError(f"unknown precision mode {spec.mode!r}")
    # Sparse quantized values must land on the tensor's own grid: only a given per-tensor grid
    # guarantees that (a grid of the non-zeros alone would give different values).
    sparse_ok = spec.mode != "quant" or (spec.grid is not None and spec.axis is None)
    if spec.sparse and sparse_ok:
        sparse = sparse_node(x, spec)
        if sparse is not None:
            candidates.append(sparse)
    return min(candidates, key=Node.nbytes)


# --- serialisation ---
def serialize(node: Node) -> bytes:
    w = Writer()
    w.u16(CODEC_IDS[node.codec])
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
    if codec_id not in CODEC_NAMES:
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
    return Node(CODEC_NAMES[codec_id], DTYPES[dtype_id], shape, params, children, blobs)


# --- decoding ---
def _expect(node: Node, children: int, blobs: int) -> None:
    if len(node.children) != children or len(node.blobs) != blobs:
        raise FormatError(f"{node.codec} node needs {children} children and {blobs} blobs, "
                          f"has {len(node.children)} and {len(node.blobs)}")


def _check_shape(got: tuple[int, ...], want: tuple[int, ...], what: str) -> None:
    if tuple(got) != tuple(want):
        raise FormatError(f"{what} has shape {list(got)}, expected {list(want)}")


def _axis(value: Any, ndim: int) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or not 0 <= value < ndim:
        raise FormatError(f"bad axis {value!r} for a {ndim}-d tensor")
    return value


def _float_tensor(raw: bytes, dtype: torch.dtype, shape: tuple[int, ...]) -> Tensor:
    np_dtype = {torch.float32: "<f4", torch.float16: "<f2"}[dtype]
    return torch.from_numpy(np.frombuffer(raw, dtype=np_dtype).copy()).view(shape)


def decode(node: Node) -> Tensor:
    """The tensor a node stands for (validated at every step)."""
    n = math.prod(node.shape)
    p = node.params
    if node.codec == "symbols":
        _expect(node, 0, len(node.blobs))
        values = sym.decode_symbols(p, [memoryview(b) for b in node.blobs], n)
        if node.dtype.is_floating_point:
            raise FormatError("symbols node with a float dtype")
        if node.dtype == torch.bool and values.size and (values.min() < 0 or values.max() > 1):
            raise FormatError("boolean tensor holds values other than 0 and 1")
        return torch.from_numpy(values).to(node.dtype).view(node.shape)
    if node.codec in ("raw", "half"):
        _expect(node, 0, 1)
        stored = node.dtype if node.codec == "raw" else torch.float16
        if node.codec == "half" and node.dtype != FLOAT:
            raise FormatError("half node must decode to float32")
        width = torch.empty((), dtype=stored).element_size()
        method = p.get("compress")
        if method not in ("none", "zstd", "lzma"):
            raise FormatError(f"unknown byte compressor {method!r}")
        raw = sym.decompress_bytes(memoryview(node.blobs[0]), method, n * width)
        if p.get("shuffle"):
            raw = _unshuffle(raw, width)
        if stored.is_floating_point:
            return _float_tensor(raw, stored, node.shape).to(node.dtype)
        np_dtype = {torch.uint8: "<u1", torch.bool: "<u1", torch.int32: "<i4",
                    torch.int64: "<i8"}[stored]
        arr = np.frombuffer(raw, dtype=np_dtype).copy()
        return torch.from_numpy(arr).to(stored).view(node.shape)
    if node.dtype != FLOAT:
        raise FormatError(f"{node.codec} node must decode to float32")
    if node.codec == "quant":
        _expect(node, 3, 0)
        bits = p.get("bits")
        if not isinstance(bits, int) or not 1 <= bits <= 16:
            raise FormatError(f"bad quantization bits {bits!r}")
        axis = _axis(p.get("axis"), len(node.shape))
        channels = 1 if axis is None else node.shape[axis]
        lo, scale, q = (decode(c) for c in node.children)
        _check_shape(lo.shape, (channels,), "quantization offsets")
        _check_shape(scale.shape, (channels,), "quantization scales")
        _check_shape(q.shape, node.shape, "quantized symbols")
        if q.numel() and (int(q.min()) < 0 or int(q.max()) >= 1 << bits):
            raise FormatError(f"quantized symbol outside {bits} bits")
        return dequantize(q, axis, lo, scale)
    if node.codec == "vq":
        _expect(node, 2, 0)
        axis = _axis(p.get("axis"), len(node.shape))
        book, idx = decode(node.children[0]), decode(node.children[1])
        dim = 1 if axis is None else node.shape[axis]
        if book.dim() != 2 or book.shape[1] != dim or book.dtype != FLOAT:
            raise FormatError(f"codebook has shape {list(book.shape)}, expected [K, {dim}]")
        _check_shape(idx.shape, (n // dim if dim else 0,), "codebook indices")
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= book.shape[0]):
            raise FormatError("codebook index out of range")
        rows = book[idx]
        if axis is None:
            return rows.view(node.shape)
        moved = list(node.shape)
        moved.append(moved.pop(axis))
        return rows.view(moved).movedim(-1, axis).contiguous()
    if node.codec == "sparse":
        _expect(node, 2, 0)
        kind = p.get("positions")
        pos, values = decode(node.children[0]), decode(node.children[1])
        if kind == "mask":
            _check_shape(pos.shape, (n,), "sparsity mask")
            mask = pos.reshape(-1)
            if mask.numel() and (int(mask.min()) < 0 or int(mask.max()) > 1):
                raise FormatError("sparsity mask holds values other than 0 and 1")
            where = mask.nonzero()[:, 0]
        elif kind == "gaps":
            if pos.dim() != 1 or (pos.numel() and int(pos.min()) < 0):
                raise FormatError("bad gap list of a sparse tensor")
            where = torch.cumsum(pos + 1, 0) - 1
            if where.numel() and int(where[-1]) >= n:
                raise FormatError("sparse position past the end of the tensor")
        else:
            raise FormatError(f"unknown sparse positions {kind!r}")
        _check_shape(values.shape, (where.numel(),), "sparse values")
        out = torch.zeros(n, dtype=FLOAT)
        out[where] = values.to(FLOAT)
        return out.view(node.shape)
    if node.codec == "lowrank":
        _expect(node, 2, 0)
        u, v = decode(node.children[0]), decode(node.children[1])
        if len(node.shape) != 2 or u.dim() != 2 or v.dim() != 2 or u.shape[1] != v.shape[0] \
                or (u.shape[0], v.shape[1]) != node.shape:
            raise FormatError(f"low-rank factors {list(u.shape)} x {list(v.shape)} do not "
                              f"make {list(node.shape)}")
        return u @ v
    if node.codec == "tucker":
        return decode_tucker(node)
    if node.codec == "cp":
        return decode_cp(node)
    raise FormatError(f"codec {node.codec} cannot be decoded here")


def decode_tucker(node: Node) -> Tensor:
    """Core and factors checked against the declared shape before the product: every rank at
    most its mode's size (so no intermediate outgrows the budgeted result) and bounded work."""
    modes = node.params.get("modes")
    ndim = len(node.shape)
    if not isinstance(modes, list) or len(set(map(str, modes))) != len(modes) or not all(
            type(m) is int and 0 <= m < ndim for m in modes):
        raise FormatError(f"bad tucker modes {modes!r} for a {ndim}-d tensor")
    _expect(node, 1 + len(modes), 0)
    core_node = node.children[0]
    if len(core_node.shape) != ndim or any(
            r > n or (r != n and m not in modes)
            for m, (r, n) in enumerate(zip(core_node.shape, node.shape))):
        raise FormatError(f"tucker core {list(core_node.shape)} does not fit "
                          f"{list(node.shape)} with factors on modes {modes}")
    if tucker_work(core_node.shape, node.shape, modes) > MAX_DECODE_WORK:
        raise FormatError("tucker node needs more work to decode than a reader allows")
    for m, child in zip(modes, node.children[1:]):
        _check_shape(child.shape, (node.shape[m], core_node.shape[m]), f"tucker factor {m}")
    parts = [decode(c) for c in node.children]
    if any(p.dtype != FLOAT for p in parts):
        raise FormatError("tucker core and factors must be float32")
    return tucker_to_tensor(parts[0], parts[1:], modes)


def decode_cp(node: Node) -> Tensor:
    """One factor [shape_k, R] per mode; R at most the largest rank any tensor of this shape
    has (numel / longest mode) and bounded work."""
    ndim = len(node.shape)
    if ndim < 1:
        raise FormatError("cp node needs at least one mode")
    _expect(node, ndim, 0)
    rank = node.children[0].shape[1] if len(node.children[0].shape) == 2 else -1
    for k, child in enumerate(node.children):
        _check_shape(child.shape, (node.shape[k], rank), f"cp factor {k}")
    n = math.prod(node.shape)
    if rank > max(1, n // max(1, max(node.shape))) or rank * n > MAX_DECODE_WORK:
        raise FormatError(f"cp rank {rank} is more than a {list(node.shape)} tensor needs")
    parts = [decode(c) for c in node.children]
    if any(p.dtype != FLOAT for p in parts):
        raise FormatError("cp factors must be float32")
    return cp_to_tensor(parts)
