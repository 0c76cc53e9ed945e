"""The .nrz file: one self-contained, checksummed file per (compressed) radiance field.

Public API: ``save`` / ``SaveOptions`` (write a model), ``load`` (decode a file into a
renderable model), ``load_stream`` (the same from any file object), ``NrzStreamReader`` (feed
bytes as they arrive; sections are validated and decoded in file order, and a model can be
built from the sections received so far when its family allows it), ``read_nrz`` / ``info``
(structure without decoding), ``is_nrz``.

New files are written in format 2.0 (``container.py`` the byte layout, ``docs/format.md``
normative); 1.0 / 1.1 files keep reading. The model inside (header schema, tensor names) is
``model_io``'s, shared with the safetensors model files. Nothing in a file is executed: JSON
and numbers only, every header value checked against its dataclass, every declared shape
against a budget proportional to the bytes that carry it. Writing is atomic.
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from torch import Tensor

from nerfzip.codec import ladder, model_io
from nerfzip.codec import layers as lay
from nerfzip.codec import symbols as sym
from nerfzip.codec.binary import FormatError
from nerfzip.codec.container import END, MAGIC, MAJOR, MINOR, FrameReader, RawSection, write_v2
from nerfzip.codec.layout import TRAILER_BYTES as TRAILER
from nerfzip.codec.model_io import ModelHeader, first_line
from nerfzip.codec.tensors import (
    CODEC_IDS,
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
from nerfzip.fields.base import Field, family_ids
from nerfzip.rendering.model import RadianceModel
from nerfzip.utils.io import atomic_path

__all__ = ["END", "MAGIC", "MAJOR", "MINOR", "NrzFile", "NrzStreamReader", "SaveOptions",
           "SaveReport", "Section", "SectionInfo", "TensorSpec", "info", "is_nrz", "load",
           "load_stream", "read_nrz", "save"]

BUDGET_BASE, BUDGET_PER_BYTE = 1 << 24, 128
"""Sections may declare at most BASE + PER_BYTE * (file bytes up to the end of the section)
decoded elements in total (1.x: the whole file's bytes): far above any real field (a 1 MB lego
file decodes to ~13 M values), far below what would exhaust memory."""
CHUNK = 1 << 20
"""Bytes read at a time by ``load`` / ``load_stream``."""
PARSE_ERRORS = (FormatError, KeyError, TypeError, IndexError, ValueError, OverflowError)
DECODE_ERRORS = PARSE_ERRORS + (RuntimeError, ArithmeticError, MemoryError)
"""What a codec may raise on hostile bytes that its parser let through (torch's own errors
among them), each turned into a one-line error naming the section."""


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


# --- writing ---------------------------------------------------------------------------------
def model_sections(model: RadianceModel) -> dict[str, Tensor]:
    """The tensors a .nrz file stores for ``model``, by section name."""
    return model_io.model_tensors(model, density=False)


def nrz_header(model: RadianceModel) -> dict[str, Any]:
    """The .nrz header: the model header (``model_io``) plus the format name and writer."""
    from nerfzip import __version__

    return {"format": "nrz", "writer": f"nerfzip {__version__}",
            **model_io.model_header(model)}


def encode_model(model: RadianceModel, options: SaveOptions) -> tuple[bytes, list[SectionInfo]]:
    """The bytes of a .nrz file for ``model``. The header is checked as a reader would check
    it first, so a model that could not be read back is never written."""
    family = model.field.family
    if family not in family_ids():
        raise NerfzipError(f"field family {family!r} has no .nrz id yet")
    header = nrz_header(model)
    model_io.parse_header(header, f"{family} model")
    layers = {f"field.{k}": v for k, v in model.field.tensor_layers().items()}
    nodes: dict[str, Node] = {}
    for name, x in model_sections(model).items():
        key = name[len("field."):] if name.startswith("field.") else name
        spec = options.spec_for(key, x) if name.startswith("field.") else TensorSpec(
            coders=options.coders)
        if not spec.ladder:
            nodes[name] = encode_tensor(x, spec)
            continue
        if name in layers:
            raise NerfzipError(f"{name}: a tensor is split by components or by precision, "
                               "not both")
        for k, (value, layer_spec) in enumerate(ladder.ladder_layers(x, spec)):
            nodes[ladder.layer_name(name, k)] = encode_tensor(value, layer_spec)
            if k:
                layers[ladder.layer_name(name, k)] = spec.ladder_layers[k - 1] \
                    if spec.ladder_layers else k
    if layers:  # a progressive file: base layer first, then each refinement layer
        order, counts = lay.layered_order(list(nodes), layers)
        nodes = {name: nodes[name] for name in order}
        header[lay.KEY] = {"layers": counts}
    return assemble(header, family_ids()[family], nodes)


def assemble(header: dict[str, Any], family_id: int, nodes: dict[str, Node]
             ) -> tuple[bytes, list[SectionInfo]]:
    """A 2.0 file of ``header`` and one section per node, in the order given."""
    payloads = {name: serialize(node) for name, node in nodes.items()}
    data = write_v2(header, family_id, [(name, CODEC_IDS[nodes[name].codec], payload)
                                        for name, payload in payloads.items()])
    infos = [SectionInfo(name, list(node.shape), str(node.dtype).replace("torch.", ""),
                         node.describe(), len(payloads[name]), zlib.crc32(payloads[name]))
             for name, node in nodes.items()]
    return data, infos


def save(model: RadianceModel, path: str | Path, options: SaveOptions | None = None,
         **kwargs: Any) -> SaveReport:
    """Write ``model`` (field, occupancy grid, render settings, scene space, pipeline record)
    as one .nrz file, atomically. Keyword arguments fill ``SaveOptions``."""
    if isinstance(model, Field):
        raise NerfzipError("save() takes a RadianceModel (a field with its scene space and "
                           "occupancy grid): a bare field cannot be rendered on its own")
    options = options or SaveOptions(**kwargs)
    # A model held by a compression.Compressed lists its constrained tensors here; stored
    # without their specs they would go dense (factors, codebooks lost): refuse, in one line.
    pending = set(getattr(model, "pending_constraints", None) or ()) - set(options.specs)
    if pending:
        raise NerfzipError(f"{path}: {len(pending)} tensors of this model are under compression "
                           "constraints; save the Compressed instead (c.save(path) or "
                           "nerfzip.save(c, path))")
    t0 = time.perf_counter()
    data, infos = encode_model(model, options)
    seconds = time.perf_counter() - t0
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return SaveReport(str(path), len(data), seconds, infos)


# --- reading ---------------------------------------------------------------------------------
@dataclass
class Section:
    """A section that arrived: checksum matched, structure parsed against its budget, shape
    checked against the header, and (unless the reader only parses) decoded."""

    info: SectionInfo
    node: Node
    tensor: Tensor | None
    payload: bytes


class NrzStreamReader:
    """Reads a .nrz file from bytes fed in any pieces, validating and decoding each section as
    soon as its last byte arrives (2.0; a 1.x file is read whole at ``close``)::

        reader = NrzStreamReader("lego.nrz")
        for chunk in chunks:
            for section in reader.feed(chunk):
                ...                                  # section.info.name, section.tensor
            if reader.can_build():
                preview = reader.model(partial=True)
        reader.close()
        model = reader.model()

    Every error is one ``NerfzipError`` line naming ``where``; after one the reader is dead.
    ``decode=False`` parses sections without decoding them (``info``).
    """

    def __init__(self, where: str | Path = "<stream>", decode: bool = True):
        self.where = str(where)
        self.decode = decode
        self.frame = FrameReader(self.where)
        self.header: ModelHeader | None = None
        """The validated header, once it arrived."""
        self.sections: list[Section] = []
        self.tensors: dict[str, Tensor] = {}
        self.layer_ends: list[int] | None = None
        """Progressive files: the file offset at which each layer's last section ends, base
        first (a file without layers is one layer), once the section table arrived."""
        self._layer_counts: list[int] | None = None
        self._table_checked = False
        self._spent = 0

    @property
    def complete(self) -> bool:
        """Whether the whole file arrived and every checksum matched."""
        return self.frame.complete

    def fail(self, msg: str) -> NerfzipError:
        return self.frame.fail(msg)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Section]:
        """Take the next bytes of the file; returns the sections they completed."""
        return self._accept(self.frame.feed(data))

    def close(self) -> list[Section]:
        """The file ended: the last sections, or an error if it is incomplete."""
        return self._accept(self.frame.close())

    def _accept(self, raws: list[RawSection]) -> list[Section]:
        try:
            self._check_header()
            out = [self._section(raw) for raw in raws]
        except NerfzipError:
            self.frame.dead = True  # a reader that failed once accepts nothing more
            raise
        self.sections.extend(out)
        return out

    def _check_header(self) -> None:
        frame = self.frame
        if self.header is None and frame.header is not None:
            ids = family_ids()
            if frame.family_id not in ids.values():
                raise self.fail(f"unknown field family id {frame.family_id} (written by a "
                                "newer nerfzip?)")
            header = model_io.parse_header(frame.header, self.where)
            if ids.get(header.family) != frame.family_id:
                raise self.fail(f"header field family {header.family!r} does not match "
                                f"family id {frame.family_id}")
            self._layer_counts = lay.layer_counts(frame.header, self.where)
            self.header = header
        if not self._table_checked and self.header is not None and frame.entries is not None:
            # Names are checked now; field tensor shapes once the field is built.
            occupancy = self.header.occupancy_tensors()
            for e in frame.entries:
                if not (e.name.startswith("field.") and len(e.name) > 6) and \
                        e.name not in occupancy:
                    raise self.fail(f"section {e.name!r} is not part of a "
                                    f"{self.header.family} model with this header")
            if self.header.occupancy is not None and model_io.OCCUPIED not in {
                    e.name for e in frame.entries}:
                raise self.fail(f"no section {model_io.OCCUPIED!r} (the header has an "
                                "occupancy grid)")
            try:
                counts = lay.check_counts(self._layer_counts, len(frame.entries), self.where)
            except NerfzipError as e:
                raise self.fail(str(e).removeprefix(f"{self.where}: ")) from None
            self._layer_counts = counts
            self.layer_ends = lay.layer_ends([e.offset + e.length for e in frame.entries],
                                             counts)
            self._table_checked = True

    def _section(self, raw: RawSection) -> Section:
        name, h = raw.entry.name, self.header
        assert h is not None
        limit = BUDGET_BASE + BUDGET_PER_BYTE * raw.budget_bytes - self._spent
        budget = Budget(max(0, limit))
        try:
            node = parse(raw.payload, budget)
            described = node.describe()
        except PARSE_ERRORS as e:
            raise self.fail(f"section {name!r}: {first_line(e)}") from None
        self._spent += max(0, limit) - budget.left
        if CODEC_IDS.get(node.codec) != raw.entry.codec_id:
            raise self.fail(f"section {name!r}: the table says codec "
                            f"{CODEC_NAMES[raw.entry.codec_id]!r}, the payload holds "
                            f"{node.codec!r}")
        model_io.check_declared(name, tuple(node.shape), node.dtype, h, self.where)
        info = SectionInfo(name, list(node.shape), str(node.dtype).replace("torch.", ""),
                           described, len(raw.payload), raw.entry.crc32)
        tensor = None
        if self.decode:
            try:
                tensor = decode(node)
            except DECODE_ERRORS as e:
                raise self.fail(f"section {name!r}: {first_line(e)}") from None
            tensor = model_io.check_tensor(name, tensor, h, self.where)
            self.tensors[name] = tensor
        return Section(info, node, tensor, raw.payload)

    @property
    def layer_counts(self) -> list[int] | None:
        """Sections per layer, base first, once the section table arrived."""
        return self._layer_counts if self._table_checked else None

    def can_build(self) -> bool:
        """Whether a partial model may be asked for: header and table checked and, when the
        header has an occupancy grid, the grid arrived (which field tensors the family can do
        without is known only once it is built: ``model(partial=True)`` says)."""
        return self.header is not None and self._table_checked and (
            self.header.occupancy is None or model_io.OCCUPIED in self.tensors)

    def model(self, partial: bool = False) -> RadianceModel:
        """The model of the decoded sections: the whole file, or (``partial``) the sections
        received so far, the family's optional tensors that have not arrived taken as zeros
        (the field may then allocate what the bytes received so far vouch for)."""
        if self.header is None or not self.decode:
            raise NerfzipError(f"{self.where}: no decoded model (header not received yet, or "
                               "a reader that only parses)")
        if not partial and not self.complete:
            raise NerfzipError(f"{self.where}: the file has not arrived completely "
                               "(close() the reader, or ask for a partial model)")
        limit = BUDGET_BASE + BUDGET_PER_BYTE * self.frame.received if partial else None
        return model_io.build_model(self.header, self.tensors, self.where, partial=partial,
                                    limit=limit)


def stream_name(fileobj: BinaryIO, where: str | Path | None) -> str:
    """How errors name a stream: ``where``, else the file object's name."""
    return str(where if where is not None else getattr(fileobj, "name", "<stream>"))


def read_chunks(fileobj: BinaryIO, where: str, chunk: int = CHUNK) -> Iterator[bytes]:
    """The bytes of ``fileobj`` in pieces of at most ``chunk``; a failing read is one error
    line naming ``where``."""
    while True:
        try:
            data = fileobj.read(chunk)
        except OSError as e:
            raise NerfzipError(f"{where}: cannot read ({first_line(e)})") from None
        if not data:
            return
        yield data


def load_stream(fileobj: BinaryIO, where: str | Path | None = None,
                chunk: int = CHUNK) -> RadianceModel:
    """Decode a .nrz file from a binary file object, section by section as it is read;
    ``model.meta["decode"]`` holds the file size and the decode time."""
    where = stream_name(fileobj, where)
    t0 = time.perf_counter()
    reader = NrzStreamReader(where)
    for data in read_chunks(fileobj, where, chunk):
        reader.feed(data)
    reader.close()
    model = reader.model()
    model.meta["decode"] = {"file_bytes": reader.frame.size,
                            "seconds": time.perf_counter() - t0}
    return model


def load(path: str | Path) -> RadianceModel:
    """Decode a .nrz file into a renderable model; ``model.meta["decode"]`` holds the file
    size and the decode time."""
    path = Path(path)
    if not path.is_file():
        raise NerfzipError(f"{path}: file not found")
    with path.open("rb") as f:
        return load_stream(f, path)


def is_nrz(path: str | Path) -> bool:
    """Whether ``path`` is a file that starts with the .nrz magic bytes."""
    path = Path(path)
    if not path.is_file():
        return False
    with path.open("rb") as f:
        return f.read(len(MAGIC)) == MAGIC


@dataclass
class NrzFile:
    """A read (validated, not decoded) .nrz file: header, sections and their parsed nodes."""

    path: Path
    size: int
    version: tuple[int, int]
    family_id: int
    header: dict[str, Any]
    sections: list[SectionInfo]
    payloads: dict[str, bytes]
    nodes: dict[str, Node] = field(default_factory=dict)


def parse_nrz(data: bytes, path: str | Path) -> NrzFile:
    """Validate a whole file's bytes (structure, checksums, header, section shapes)."""
    reader = NrzStreamReader(path, decode=False)
    reader.feed(data)
    reader.close()
    f = reader.frame
    assert f.version is not None and f.family_id is not None and f.size is not None
    return NrzFile(Path(path), f.size, f.version, f.family_id, f.header,
                   [s.info for s in reader.sections],
                   {s.info.name: s.payload for s in reader.sections},
                   {s.info.name: s.node for s in reader.sections})


def read_nrz(path: str | Path) -> NrzFile:
    """Read and validate a .nrz file's structure, checksums and header (payloads parsed, not
    decoded)."""
    path = Path(path)
    if not path.is_file():
        raise NerfzipError(f"{path}: file not found")
    return parse_nrz(path.read_bytes(), path)


def parsed_nodes(nrz: NrzFile) -> Iterator[tuple[SectionInfo, Node]]:
    """Each section with its parsed node."""
    for s in nrz.sections:
        yield s, nrz.nodes[s.name]


def decode_sections(nrz: NrzFile) -> dict[str, Tensor]:
    """Decode every section of a read file (errors name the section)."""
    out: dict[str, Tensor] = {}
    for s, node in parsed_nodes(nrz):
        try:
            out[s.name] = decode(node)
        except DECODE_ERRORS as e:
            raise NerfzipError(f"{nrz.path}: section {s.name!r}: {first_line(e)}") from None
    return out


def model_from_nrz(nrz: NrzFile, tensors: dict[str, Tensor]) -> RadianceModel:
    """The model of a read file and its decoded sections, every value validated."""
    return model_io.model_from(nrz.header, tensors, str(nrz.path))


def info(path: str | Path) -> dict[str, Any]:
    """The header and a table of sections (name, shape, codec, bytes, bits per parameter,
    share of the file), without decoding the data."""
    nrz = read_nrz(path)
    rows = [{"name": s.name, "shape": s.shape, "dtype": s.dtype, "codec": s.codec,
             "bytes": s.bytes, "bits_per_param": 8 * s.bytes / max(1, s.elements),
             "share": s.bytes / nrz.size} for s in nrz.sections]
    return {"path": str(nrz.path), "bytes": nrz.size,
            "version": f"{nrz.version[0]}.{nrz.version[1]}", "family_id": nrz.family_id,
            "header": nrz.header, "sections": rows, "layers": layer_rows(nrz)}


def layer_rows(nrz: NrzFile) -> list[dict[str, Any]]:
    """Per layer (base first; a file without layers is one): its sections, the bytes a reader
    needs to build the model of the layers up to it, their share of the file, and the share
    of the field's component energy they hold (as the ``progressive`` pass reported it)."""
    counts = lay.check_counts(lay.layer_counts(nrz.header, str(nrz.path)), len(nrz.sections),
                              str(nrz.path))
    payloads = sum(s.bytes for s in nrz.sections)
    first = nrz.size - TRAILER - payloads
    ends, pos = [], first
    for s in nrz.sections:
        pos += s.bytes
        ends.append(pos)
    ends = lay.layer_ends(ends, counts)
    report = next((s.get("report") for s in nrz.header.get("pipeline", [])
                   if isinstance(s, dict) and s.get("step") == "progressive"), None)
    rows = [{"layer": k, "sections": n, "bytes": end, "share": end / nrz.size}
            for k, (n, end) in enumerate(zip(counts, ends))]
    for key in ("energy", "appearance_energy"):
        values = report.get(key) if isinstance(report, dict) else None
        if isinstance(values, list) and len(values) == len(rows):
            for row, v in zip(rows, values):
                row[key] = v
    return rows
