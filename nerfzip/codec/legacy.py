"""The .nrz 1.x layout, read only (files written before 2.0 keep loading).

1.x put the header length inside the header's own checksummed run and let the section table
give each payload an offset anywhere in the file, so nothing could be trusted before the whole
file was there: this parser takes the complete bytes and checks, in 1.x order, magic, version,
header CRC and JSON, the table's bounds and CRC, each payload's bounds, the end marker, each
payload's CRC, then the file CRC. ``docs/format.md`` keeps the 1.x description.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

from nerfzip.codec.binary import FormatError, Reader
from nerfzip.codec.layout import END, MAGIC, Entry, parse_json, read_entries


@dataclass
class V1File:
    version: tuple[int, int]
    family_id: int
    header: Any
    entries: list[Entry]


def parse_v1(data: bytes) -> V1File:
    """Check a complete 1.x file; ``FormatError`` with a one-line message on any fault."""
    view = memoryview(data)
    if bytes(view[:len(MAGIC)]) != MAGIC:
        raise FormatError("not a .nrz file (wrong magic bytes)")
    r = Reader(view, len(MAGIC))
    try:
        major, minor, family_id, _flags = r.u16(), r.u16(), r.u16(), r.u16()
    except FormatError:
        raise FormatError("truncated in the preamble") from None
    try:
        n = r.u32()
        if n > 1 << 20:
            raise FormatError(f"JSON document of {n} bytes is larger than allowed")
        header = parse_json(r.take(n))
        header_end = r.pos
        if r.u32() != zlib.crc32(view[:header_end]):
            raise FormatError("header checksum mismatch (the file is corrupted)")
    except FormatError as e:
        raise FormatError(f"header: {e}" if "checksum" not in str(e) else str(e)) from None
    if not isinstance(header, dict) or header.get("format") != "nrz":
        raise FormatError("header is not a .nrz header")
    entries = read_table(view, r)
    trailer = len(data) - len(END) - 4
    if bytes(view[-len(END):]) != END or trailer < r.pos:
        raise FormatError("truncated or incomplete file (no end marker)")
    for e in entries:
        if zlib.crc32(view[e.offset:e.offset + e.length]) != e.crc32:
            raise FormatError(f"section {e.name!r}: checksum mismatch (the file is corrupted)")
    if int.from_bytes(view[trailer:trailer + 4], "little") != zlib.crc32(view[:trailer]):
        raise FormatError("file checksum mismatch (the file is corrupted)")
    return V1File((major, minor), family_id, header, entries)


def read_table(view: memoryview, r: Reader) -> list[Entry]:
    """The 1.x section table, each payload within the file's payload area."""
    table_start = r.pos
    payload_end = len(view) - len(END) - 4
    try:
        entries = read_entries(r, offsets=True)
        if r.u32() != zlib.crc32(view[table_start:r.pos - 4]):
            raise FormatError("checksum mismatch (the file is corrupted)")
    except FormatError as e:
        raise FormatError(f"section table: {e}") from None
    for e in entries:
        if e.offset < r.pos or e.offset + e.length > payload_end:
            raise FormatError(f"section {e.name!r}: extends past the end of the file "
                              f"(offset {e.offset}, length {e.length}; truncated?)")
    return entries
