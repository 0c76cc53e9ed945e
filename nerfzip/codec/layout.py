"""The pieces of the .nrz byte layout that every version shares: magic, end marker, limits,
section-table rows (``read_entries``), checksums and untrusted-JSON parsing.

``container.py`` (2.0 reading and writing) and ``legacy.py`` (1.x reading) are built on these;
``docs/format.md`` is the normative description.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from typing import Any

from nerfzip.codec.binary import FormatError, Reader

MAGIC = b"\x89NRZ\r\n\x1a\n"
END = b"NRZ-END\n"
MAJOR, MINOR = 2, 0
PREAMBLE = struct.Struct("<8sHHHHII")
"""magic, major, minor, family id, flags, header length, table length (then its CRC)."""
PREAMBLE_BYTES = PREAMBLE.size + 4
TRAILER_BYTES = 4 + len(END)
MAX_SECTIONS = 1 << 16
MAX_NAME = 512
MAX_HEADER = 1 << 20
MAX_TABLE = 4 + MAX_SECTIONS * (2 + MAX_NAME + 2 + 8 + 4)


@dataclass
class Entry:
    """One row of the section table."""

    name: str
    codec_id: int
    length: int
    crc32: int
    offset: int = 0
    """Where the payload starts in the file."""


@dataclass
class RawSection:
    """A section whose bytes arrived and whose checksum matched."""

    index: int
    entry: Entry
    payload: bytes
    budget_bytes: int
    """File bytes that vouch for this section's decoded size: through its end (2.0), the
    whole file (1.x)."""


def crc(data: bytes | memoryview) -> bytes:
    return zlib.crc32(data).to_bytes(4, "little")


def parse_json(raw: bytes | memoryview) -> Any:
    """JSON from untrusted bytes; ``FormatError`` on anything malformed (deep nesting too)."""
    try:
        return json.loads(bytes(raw).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise FormatError(f"malformed JSON ({str(e).splitlines()[0][:120]})") from None


def read_entries(r: Reader, offsets: bool) -> list[Entry]:
    """The rows of a section table (1.x rows carry an offset, 2.0 rows do not)."""
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
        codec_id = r.u16()
        offset = r.u64() if offsets else 0
        entries.append(Entry(name, codec_id, r.u64(), r.u32(), offset))
    return entries


def check_entries(entries: list[Entry], fail: Any) -> list[Entry]:
    """Names unique and codec ids known (each codec is checked again when parsed)."""
    from nerfzip.codec.tensors import CODEC_NAMES

    seen: set[str] = set()
    for e in entries:
        if e.name in seen:
            raise fail(f"section {e.name!r} appears twice")
        seen.add(e.name)
        if e.codec_id not in CODEC_NAMES:
            raise fail(f"section {e.name!r}: unknown codec id {e.codec_id} (written by a "
                       "newer nerfzip?)")
    return entries
