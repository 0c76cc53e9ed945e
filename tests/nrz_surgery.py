"""Test helper: take a .nrz 2.0 file apart and put it back together with every length and
checksum recomputed, so that tests reach the layers behind the checksums (header values,
codec parsers, decoders). Written from docs/format.md independently of nerfzip's writer, so
``join(split(f)) == f`` also checks the writer against the document.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

PRE = struct.Struct("<8sHHHHII")
END = b"NRZ-END\n"


@dataclass
class Parts:
    """A 2.0 file's fields: preamble numbers, header JSON bytes, sections in file order."""

    magic: bytes
    major: int
    minor: int
    family_id: int
    flags: int
    header: bytes
    sections: list[list] = field(default_factory=list)
    """[name (str), codec id (int), payload (bytes)] per section."""


def crc(b: bytes) -> bytes:
    return struct.pack("<I", zlib.crc32(b))


def split(data: bytes) -> Parts:
    magic, major, minor, family_id, flags, hlen, tlen = PRE.unpack_from(data, 0)
    pos = PRE.size + 4
    header = data[pos:pos + hlen]
    pos += hlen + 4
    table = data[pos:pos + tlen]
    pos += tlen + 4
    (count,), t = struct.unpack_from("<I", table, 0), 4
    parts = Parts(magic, major, minor, family_id, flags, header)
    for _ in range(count):
        (n,) = struct.unpack_from("<H", table, t)
        name = table[t + 2:t + 2 + n].decode("utf-8")
        t += 2 + n
        codec_id, length, _crc = struct.unpack_from("<HQI", table, t)
        t += 14
        parts.sections.append([name, codec_id, data[pos:pos + length]])
        pos += length
    return parts


def join(p: Parts) -> bytes:
    table = struct.pack("<I", len(p.sections))
    for name, codec_id, payload in p.sections:
        raw = name.encode("utf-8")
        table += struct.pack("<H", len(raw)) + raw + struct.pack("<HQ", codec_id, len(payload))
        table += crc(payload)
    pre = PRE.pack(p.magic, p.major, p.minor, p.family_id, p.flags, len(p.header), len(table))
    body = pre + crc(pre) + p.header + crc(p.header) + table + crc(table) + b"".join(
        s[2] for s in p.sections)
    return body + crc(body) + END


def rechecksum(data: bytes | bytearray) -> bytes:
    """Every checksum of a file whose lengths are intact recomputed."""
    return join(split(bytes(data)))


def section_span(data: bytes, name: str) -> tuple[int, int]:
    """Offset and length of section ``name``'s payload in the file."""
    p = split(data)
    pos = len(data) - 12 - sum(len(s[2]) for s in p.sections)
    for s_name, _, payload in p.sections:
        if s_name == name:
            return pos, len(payload)
        pos += len(payload)
    raise KeyError(name)


def table_offset(data: bytes) -> int:
    """Where the section table starts (after preamble, header and their checksums)."""
    hlen = PRE.unpack_from(data, 0)[5]
    return PRE.size + 4 + hlen + 4
