"""The .nrz file: one self-contained, checksummed file per (compressed) radiance field.

Layout (all integers little-endian; ``docs/format.md`` is the normative description)::

    magic "\\x89NRZ\\r\\n\\x1a\\n" | u16 major | u16 minor | u16 field family id | u16 flags
    u32 header length | header (UTF-8 JSON) | u32 CRC-32 of magic .. header
    u32 section count | per section: u16 name length, name, u16 codec id, u64 offset,
                                     u64 length, u32 CRC-32 of the payload
    u32 CRC-32 of the section table
    payloads (one coded tensor each, ``tensors.py``)
    u32 CRC-32 of everything before it | end marker "NRZ-END\\n"

Reading validates everything before it allocates or decodes: bounds, checksums, versions,
declared shapes against a budget proportional to the file size. Nothing in a file is executed
(JSON and numbers only). Writing goes to a temporary name and is renamed when complete.
"""

from __future__ import annotations

import math
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from nerfzip.codec import symbols as sym
from nerfzip.codec.binary import FormatError, Reader, Writer
from nerfzip.codec.tensors import (
    CODEC_IDS,
    CODEC_MINOR,
    CODEC_NAMES,
    Budget,
    Node,
    TensorSpec,
    decode,
    encode_tensor,
    parse,
    serialize,
)
from nerfzip.errors import NerfzipError
from nerfzip.fields.base import Field, build_field, family_ids
from nerfzip.rendering.model import RadianceModel, SceneSpace
from nerfzip.rendering.occupancy import OccupancyGrid
from nerfzip.rendering.renderer import RenderConfig
from nerfzip.utils.io import atomic_path

MAGIC = b"\x89NRZ\r\n\x1a\n"
END = b"NRZ-END\n"
MAJOR, MINOR = 1, 1
"""The newest version this nerfzip reads and writes; a file is written with the lowest minor
version its codecs need (``needed_minor``), so a file without 1.1 codecs is a 1.0 file."""
MAX_SECTIONS = 1 << 16
MAX_NAME = 512
BUDGET_BASE, BUDGET_PER_BYTE = 1 << 24, 128
"""A file may declare at most BASE + PER_BYTE * (file bytes) decoded elements in total: far
above any real field (a 1 MB lego file decodes to ~13 M values), far below 2^40."""


@dataclass
class SaveOptions:
    """The precision a file is written at.

    ``mode``: ``lossless`` (every tensor bit-exact), ``half`` (float16) or ``quant`` (uniform
    ``bits``-bit, per output channel unless ``per_channel`` is off). Tensors smaller than
    ``min_lossy_elements`` (biases, small bases) stay lossless: they cost little and matter
    much. ``specs`` overrides the spec of named field tensors (what compression passes use).
    """

    mode: str = "lossless"
    bits: int = 8
    per_channel: bool = True
    min_lossy_elements: int = 4096
    coders: tuple[str, ...] = sym.CODERS
    specs: dict[str, TensorSpec] = field(default_factory=dict)

    def spec_for(self, name: str, x: Tensor) -> TensorSpec:
        if name in self.specs:
            return self.specs[name]
        if self.mode == "lossless" or not x.is_floating_point() \
                or x.numel() < self.min_lossy_elements:
            return TensorSpec(coders=self.coders)
        if self.mode == "half":
            return TensorSpec(mode="half", coders=self.coders)
        if self.mode == "quant":
            return TensorSpec(mode="quant", bits=self.bits, axis=channel_axis(x)
                              if self.per_channel else None, coders=self.coders)
        raise NerfzipError(f"unknown precision mode {self.mode!r} (lossless, half, quant)")


def channel_axis(x: Tensor) -> int | None:
    """The axis of per-channel ranges: the first axis longer than 1 of a multi-axis tensor
    (output neurons of a linear weight, components of a TensoRF plane or line)."""
    if x.dim() < 2:
        return None
    return next((i for i, s in enumerate(x.shape) if s > 1), None)


@dataclass
class SectionInfo:
    name: str
    shape: list[int]
    dtype: str
    codec: str
    bytes: int
    crc32: int

    @property
    def elements(self) -> int:
        return math.prod(self.shape)


@dataclass
class SaveReport:
    path: str
    bytes: int
    encode_seconds: float
    sections: list[SectionInfo]


# --- writing ---
def model_sections(model: RadianceModel) -> dict[str, Tensor]:
    out = {f"field.{k}": v for k, v in model.field.named_tensors().items()}
    if model.occupancy is not None:
        out["occupancy.occupied"] = model.occupancy.occupied
    return {k: v.detach().cpu().contiguous() for k, v in out.items()}


def model_header(model: RadianceModel) -> dict[str, Any]:
    from nerfzip import __version__

    occ = model.occupancy
    return {"format": "nrz", "writer": f"nerfzip {__version__}",
            "field": model.field.config_dict(), "render": asdict(model.render),
            "space": model.space.to_dict(),
            "occupancy": None if occ is None else {"resolution": occ.resolution,
                                                   "aabb": occ.aabb.tolist()},
            "pipeline": list(model.meta.get("pipeline", [])),
            "meta": {k: v for k, v in model.meta.items() if k not in ("pipeline", "decode")}}


def encode_model(model: RadianceModel, options: SaveOptions) -> tuple[bytes, list[SectionInfo]]:
    """The bytes of a .nrz file for ``model``."""
    family = model.field.family
    if family not in family_ids():
        raise NerfzipError(f"field family {family!r} has no .nrz id yet")
    tensors = model_sections(model)
    nodes: dict[str, Node] = {}
    for name, x in tensors.items():
        key = name[len("field."):] if name.startswith("field.") else name
        spec = options.spec_for(key, x) if name.startswith("field.") else TensorSpec(
            coders=options.coders)
        nodes[name] = encode_tensor(x, spec)
    return assemble(model_header(model), family_ids()[family], nodes)


def needed_minor(nodes: list[Node]) -> int:
    """The lowest 1.x minor version whose codecs include every codec in ``nodes`` (recursive)."""
    return max([CODEC_MINOR.get(n.codec, 0) for n in nodes]
               + [needed_minor(n.children) for n in nodes if n.children] + [0])


def assemble(header: dict[str, Any], family_id: int, nodes: dict[str, Node]
             ) -> tuple[bytes, list[SectionInfo]]:
    pre = Writer()
    pre.raw(MAGIC)
    pre.u16(MAJOR)
    pre.u16(needed_minor(list(nodes.values())))
    pre.u16(family_id)
    pre.u16(0)
    pre.json(header)
    pre_bytes = pre.getvalue()
    pre_bytes += zlib.crc32(pre_bytes).to_bytes(4, "little")

    payloads = {name: serialize(node) for name, node in nodes.items()}
    entry_size = sum(2 + len(n.encode("utf-8")) + 2 + 8 + 8 + 4 for n in payloads)
    offset = len(pre_bytes) + 4 + entry_size + 4
    table = Writer()
    table.u32(len(payloads))
    infos = []
    for name, payload in payloads.items():
        crc = zlib.crc32(payload)
        encoded = name.encode("utf-8")
        table.u16(len(encoded))
        table.raw(encoded)
        table.u16(CODEC_IDS[nodes[name].codec])
        table.u64(offset)
        table.u64(len(payload))
        table.u32(crc)
        node = nodes[name]
        infos.append(SectionInfo(name, list(node.shape), str(node.dtype).replace("torch.", ""),
                                 node.describe(), len(payload), crc))
        offset += len(payload)
    table_bytes = table.getvalue()
    body = pre_bytes + table_bytes + zlib.crc32(table_bytes).to_bytes(4, "little") + b"".join(
        payloads.values())
    return body + zlib.crc32(body).to_bytes(4, "little") + END, infos


def save(model: RadianceModel, path: str | Path, options: SaveOptions | None = None,
         **kwargs: Any) -> SaveReport:
    """Write ``model`` (field, occupancy grid, render settings, scene space, pipeline record)
    as one .nrz file, atomically. Keyword arguments fill ``SaveOptions``."""
    if isinstance(model, Field):
        raise NerfzipError("save() takes a RadianceModel (a field with its scene space and "
                           "occupancy grid): a bare field cannot be rendered on its own")
    options = options or SaveOptions(**kwargs)
    t0 = time.perf_counter()
    data, infos = encode_model(model, options)
    seconds = time.perf_counter() - t0
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return SaveReport(str(path), len(data), seconds, infos)


# --- reading ---
@dataclass
class NrzFile:
    """A parsed (validated, not yet decoded) .nrz file."""

    path: Path
    size: int
    version: tuple[int, int]
    family_id: int
    header: dict[str, Any]
    sections: list[SectionInfo]
    payloads: dict[str, memoryview]


def _fail(path: Path, msg: str) -> NerfzipError:
    return NerfzipError(f"{path}: {msg}")


def read_nrz(path: str | Path) -> NrzFile:
    """Read and validate a .nrz file's structure and checksums (payloads stay undecoded)."""
    path = Path(path)
    if not path.is_file():
        raise _fail(path, "file not found")
    data = path.read_bytes()
    return parse_nrz(data, path)


def parse_nrz(data: bytes, path: Path) -> NrzFile:
    view = memoryview(data)
    if len(data) < len(MAGIC) or bytes(view[:len(MAGIC)]) != MAGIC:
        raise _fail(path, "not a .nrz file (wrong magic bytes)")
    r = Reader(view, len(MAGIC))
    try:
        major, minor, family_id, _flags = r.u16(), r.u16(), r.u16(), r.u16()
    except FormatError:
        raise _fail(path, "truncated in the preamble") from None
    if major > MAJOR:
        raise _fail(path, f"written in .nrz format {major}.{minor}, newer than this nerfzip "
                          f"reads ({MAJOR}.x); upgrade nerfzip")
    if major < 1:
        raise _fail(path, f"unknown .nrz format version {major}.{minor}")
    try:
        header = r.json()
        header_end = r.pos
        if r.u32() != zlib.crc32(view[:header_end]):
            raise _fail(path, "header checksum mismatch (the file is corrupted)")
    except FormatError as e:
        raise _fail(path, f"header: {e}") from None
    if not isinstance(header, dict) or header.get("format") != "nrz":
        raise _fail(path, "header is not a .nrz header")
    if family_id not in family_ids().values():
        raise _fail(path, f"unknown field family id {family_id} (written by a newer nerfzip?)")
    family = header.get("field", {}).get("family") if isinstance(header.get("field"),
                                                                   dict) else None
    if family_ids().get(family) != family_id:
        raise _fail(path, f"header field family {family!r} does not match family id "
                          f"{family_id}")
    sections, payloads = read_table(view, r, path)
    trailer = len(data) - len(END) - 4
    if bytes(view[-len(END):]) != END or trailer < r.pos:
        raise _fail(path, "truncated or incomplete file (no end marker)")
    for s in sections:
        if zlib.crc32(payloads[s.name]) != s.crc32:
            raise _fail(path, f"section {s.name!r}: checksum mismatch (the file is corrupted)")
    if int.from_bytes(view[trailer:trailer + 4], "little") != zlib.crc32(view[:trailer]):
        raise _fail(path, "file checksum mismatch (the file is corrupted)")
    return NrzFile(path, len(data), (major, minor), family_id, header, sections, payloads)


def read_table(view: memoryview, r: Reader, path: Path
               ) -> tuple[list[SectionInfo], dict[str, memoryview]]:
    table_start = r.pos
    payload_end = len(view) - len(END) - 4
    sections: list[SectionInfo] = []
    payloads: dict[str, memoryview] = {}
    try:
        count = r.u32()
        if count > MAX_SECTIONS:
            raise FormatError(f"{count} sections (at most {MAX_SECTIONS})")
        entries = []
        for i in range(count):
            n = r.u16()
            if n > MAX_NAME:
                raise FormatError(f"section {i} has a {n}-byte name (at most {MAX_NAME})")
            try:
                name = bytes(r.take(n)).decode("utf-8")
            except UnicodeDecodeError:
                raise FormatError(f"section {i} has a name that is not UTF-8") from None
            entries.append((name, r.u16(), r.u64(), r.u64(), r.u32()))
        table_end = r.pos
        if r.u32() != zlib.crc32(view[table_start:table_end]):
            raise FormatError("checksum mismatch (the file is corrupted)")
    except FormatError as e:
        raise _fail(path, f"section table: {e}") from None
    for name, codec_id, offset, length, crc in entries:
        if name in payloads:
            raise _fail(path, f"section {name!r} appears twice")
        if codec_id not in CODEC_NAMES:
            raise _fail(path, f"section {name!r}: unknown codec id {codec_id} (written by a "
                              "newer nerfzip?)")
        if offset < r.pos or offset + length > payload_end:
            raise _fail(path, f"section {name!r}: extends past the end of the file "
                              f"(offset {offset}, length {length}; truncated?)")
        payloads[name] = view[offset:offset + length]
        sections.append(SectionInfo(name, [], "", CODEC_NAMES[codec_id], length, crc))
    return sections, payloads


def parsed_nodes(nrz: NrzFile):
    """Each section with its parsed node (shapes and codec filled in), against the file's
    element budget; errors name the section."""
    budget = Budget(BUDGET_BASE + BUDGET_PER_BYTE * nrz.size)
    for s in nrz.sections:
        try:
            node = parse(nrz.payloads[s.name], budget)
            s.codec = node.describe()
        except (FormatError, KeyError, TypeError, IndexError) as e:
            raise _fail(nrz.path, f"section {s.name!r}: {e}") from None
        s.shape, s.dtype = list(node.shape), str(node.dtype).replace("torch.", "")
        yield s, node


def decode_sections(nrz: NrzFile) -> dict[str, Tensor]:
    """Decode every section."""
    out: dict[str, Tensor] = {}
    for s, node in parsed_nodes(nrz):
        try:
            out[s.name] = decode(node)
        except (FormatError, ValueError, IndexError, KeyError, TypeError, OverflowError,
                RuntimeError) as e:
            raise _fail(nrz.path, f"section {s.name!r}: {e}") from None
    return out


def model_from_nrz(nrz: NrzFile, tensors: dict[str, Tensor]) -> RadianceModel:
    from nerfzip.training.checkpoint import dataclass_from

    h = nrz.header
    field_tensors = {k[len("field."):]: v for k, v in tensors.items() if k.startswith("field.")}
    try:
        fld = build_field(h["field"], field_tensors)
        occupancy = None
        if h.get("occupancy"):
            occ = h["occupancy"]
            occupancy = OccupancyGrid(torch.tensor(occ["aabb"], dtype=torch.float32),
                                      int(occ["resolution"]))
            occupancy.occupied.copy_(tensors["occupancy.occupied"])
        meta = dict(h.get("meta") or {})
        meta["pipeline"] = list(h.get("pipeline") or [])
        return RadianceModel(fld, dataclass_from(RenderConfig, h["render"]),
                             dataclass_from(SceneSpace, h["space"]), occupancy, meta)
    except NerfzipError as e:
        raise _fail(nrz.path, f"header and sections disagree: {e}") from None
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
        raise _fail(nrz.path, f"header and sections disagree ({type(e).__name__}: {e})") \
            from None


def load(path: str | Path) -> RadianceModel:
    """Decode a .nrz file into a renderable model; ``model.meta["decode"]`` holds the file
    size and the decode time."""
    t0 = time.perf_counter()
    nrz = read_nrz(path)
    model = model_from_nrz(nrz, decode_sections(nrz))
    model.meta["decode"] = {"file_bytes": nrz.size, "seconds": time.perf_counter() - t0}
    return model


def is_nrz(path: str | Path) -> bool:
    """Whether ``path`` is a file that starts with the .nrz magic bytes."""
    path = Path(path)
    if not path.is_file():
        return False
    with path.open("rb") as f:
        return f.read(len(MAGIC)) == MAGIC


def info(path: str | Path) -> dict[str, Any]:
    """The header and a table of sections (name, shape, codec, bytes, bits per parameter,
    share of the file), without decoding the data."""
    nrz = read_nrz(path)
    for _ in parsed_nodes(nrz):  # fills shapes and codec descriptions
        pass
    rows = [{"name": s.name, "shape": s.shape, "dtype": s.dtype, "codec": s.codec,
             "bytes": s.bytes, "bits_per_param": 8 * s.bytes / max(1, s.elements),
             "share": s.bytes / nrz.size} for s in nrz.sections]
    return {"path": str(nrz.path), "bytes": nrz.size,
            "version": f"{nrz.version[0]}.{nrz.version[1]}", "family_id": nrz.family_id,
            "header": nrz.header, "sections": rows}
