"""The .nrz byte layout: writing a 2.0 file and reading 1.x / 2.0 files as their bytes arrive.

This module knows framing only (preamble, header JSON, section table, payloads, trailer, their
checksums); what the header means and how payloads decode is ``nrz.py``'s business. Layout 2.0
(``docs/format.md`` is normative), every integer little-endian::

    preamble  magic "\\x89NRZ\\r\\n\\x1a\\n" | u16 major=2 | u16 minor | u16 family id | u16 flags
              | u32 header length | u32 table length | u32 CRC-32 of the preamble's 24 bytes
    header    UTF-8 JSON | u32 CRC-32 of it
    table     u32 count | per section: u16 name length, name, u16 codec id, u64 length,
              u32 CRC-32 of the payload | u32 CRC-32 of the table
    payloads  back to back, in table order
    trailer   u32 CRC-32 of every byte before it | end marker "NRZ-END\\n"

Everything a reader needs to check a part comes before that part, so ``FrameReader`` hands out
each section the moment its last byte arrives. 1.x files (payloads at arbitrary offsets, the
checks in file-size order) are buffered whole and checked as 1.x readers did, at ``close``.
"""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any

from nerfzip.codec.binary import FormatError, Reader, Writer
from nerfzip.codec.layout import (
    END,
    MAGIC,
    MAJOR,
    MAX_HEADER,
    MAX_TABLE,
    MINOR,
    PREAMBLE,
    PREAMBLE_BYTES,
    TRAILER_BYTES,
    Entry,
    RawSection,
    check_entries,
    crc,
    parse_json,
    read_entries,
)
from nerfzip.codec.legacy import parse_v1
from nerfzip.errors import NerfzipError


# --- writing ---------------------------------------------------------------------------------
def table_bytes(entries: list[tuple[str, int, bytes]]) -> bytes:
    """The section table for (name, codec id, payload) rows, in file order."""
    w = Writer()
    w.u32(len(entries))
    for name, codec_id, payload in entries:
        encoded = name.encode("utf-8")
        w.u16(len(encoded))
        w.raw(encoded)
        w.u16(codec_id)
        w.u64(len(payload))
        w.raw(crc(payload))
    return w.getvalue()


def write_v2(header: dict[str, Any], family_id: int, entries: list[tuple[str, int, bytes]],
             minor: int = MINOR) -> bytes:
    """The bytes of a 2.x file. Header JSON is compact with sorted keys, so equal inputs give
    equal bytes."""
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    table = table_bytes(entries)
    pre = PREAMBLE.pack(MAGIC, MAJOR, minor, family_id, 0, len(head), len(table))
    body = b"".join([pre, crc(pre), head, crc(head), table, crc(table)]
                    + [payload for _, _, payload in entries])
    return body + crc(body) + END


# --- reading ---------------------------------------------------------------------------------
class FrameReader:
    """Checks a .nrz file's framing as bytes are fed, handing out each checksummed section.

    ``feed(data)`` returns the sections completed by ``data``; ``close()`` says the stream
    ended (a 1.x file is checked and its sections handed out then) and raises on an incomplete
    file. Errors are one-line ``NerfzipError`` naming ``where``; after one, the reader is dead.
    """

    def __init__(self, where: str):
        self.where = where
        self.version: tuple[int, int] | None = None
        self.family_id: int | None = None
        self.header: Any = None
        self.entries: list[Entry] | None = None
        self.size: int | None = None
        """Total file bytes, once the table (2.0) or the end (1.x) says so."""
        self.complete = False
        self._buf = bytearray()
        self._pos = 0  # file offset of _buf[0]
        self._crc = 0  # running CRC-32 of the consumed bytes (2.0)
        self._next = 0  # next section index (2.0)
        self._legacy = False
        self.dead = False

    @property
    def received(self) -> int:
        """Bytes fed so far."""
        return self._pos + len(self._buf)

    def fail(self, msg: str) -> NerfzipError:
        self.dead = True
        return NerfzipError(f"{self.where}: {msg}")

    # --- byte bookkeeping
    def _take(self, n: int) -> bytes | None:
        if len(self._buf) < n:
            return None
        out = bytes(self._buf[:n])
        del self._buf[:n]
        self._pos += n
        self._crc = zlib.crc32(out, self._crc)
        return out

    def feed(self, data: bytes | bytearray | memoryview) -> list[RawSection]:
        if self.dead:
            raise NerfzipError(f"{self.where}: the stream reader already failed")
        self._buf += data
        if self._legacy:
            return []
        out: list[RawSection] = []
        while self._step(out):
            pass
        return out

    def _step(self, out: list[RawSection]) -> bool:
        """Advance by one part if its bytes are here; False when waiting for more."""
        if self.version is None:
            return self._read_version()
        if self.complete:
            if self._buf:
                raise self.fail(f"{len(self._buf)} unexpected bytes after the end marker")
            return False
        if self.header is None:
            return self._read_header()
        if self.entries is None:
            return self._read_table()
        if self._next < len(self.entries):
            return self._read_section(out)
        return self._read_trailer()

    def _read_version(self) -> bool:
        head = bytes(self._buf[:len(MAGIC)])
        if head != MAGIC[:len(head)]:
            raise self.fail("not a .nrz file (wrong magic bytes)")
        if len(self._buf) < len(MAGIC) + 4:
            return False
        major, minor = struct.unpack_from("<HH", self._buf, len(MAGIC))
        if major > MAJOR:
            raise self.fail(f"written in .nrz format {major}.{minor}, newer than this nerfzip "
                            f"reads ({MAJOR}.x); upgrade nerfzip")
        if major < 1:
            raise self.fail(f"unknown .nrz format version {major}.{minor}")
        if major == 1:
            self._legacy = True
            return False
        if len(self._buf) < PREAMBLE_BYTES:
            return False
        pre = self._take(PREAMBLE_BYTES)
        assert pre is not None
        if pre[-4:] != crc(pre[:-4]):
            raise self.fail("preamble checksum mismatch (the file is corrupted)")
        _, major, minor, family_id, flags, self._header_len, self._table_len = \
            PREAMBLE.unpack(pre[:-4])
        if flags:
            raise self.fail(f"unknown flags {flags:#06x} (written by a newer nerfzip?)")
        if self._header_len > MAX_HEADER:
            raise self.fail(f"header of {self._header_len} bytes (at most {MAX_HEADER})")
        if not 4 <= self._table_len <= MAX_TABLE:
            raise self.fail(f"section table of {self._table_len} bytes "
                            f"(4 to {MAX_TABLE})")
        self.version, self.family_id = (major, minor), family_id
        return True

    def _read_header(self) -> bool:
        raw = self._take(self._header_len + 4) if len(self._buf) >= self._header_len + 4 \
            else None
        if raw is None:
            return False
        if raw[-4:] != crc(raw[:-4]):
            raise self.fail("header checksum mismatch (the file is corrupted)")
        try:
            header = parse_json(raw[:-4])
        except FormatError as e:
            raise self.fail(f"header: {e}") from None
        if not isinstance(header, dict) or header.get("format") != "nrz":
            raise self.fail("header is not a .nrz header")
        self.header = header
        return True

    def _read_table(self) -> bool:
        raw = self._take(self._table_len + 4) if len(self._buf) >= self._table_len + 4 \
            else None
        if raw is None:
            return False
        if raw[-4:] != crc(raw[:-4]):
            raise self.fail("section table: checksum mismatch (the file is corrupted)")
        try:
            r = Reader(raw[:-4])
            entries = read_entries(r, offsets=False)
            r.expect_end()
        except FormatError as e:
            raise self.fail(f"section table: {e}") from None
        offset = self._pos
        for e in entries:
            e.offset = offset
            offset += e.length
        self.size = offset + TRAILER_BYTES
        self.entries = check_entries(entries, self.fail)
        return True

    def _read_section(self, out: list[RawSection]) -> bool:
        assert self.entries is not None
        entry = self.entries[self._next]
        payload = self._take(entry.length)
        if payload is None:
            return False
        if zlib.crc32(payload) != entry.crc32:
            raise self.fail(f"section {entry.name!r}: checksum mismatch (the file is "
                            "corrupted)")
        out.append(RawSection(self._next, entry, payload, self._pos))
        self._next += 1
        return True

    def _read_trailer(self) -> bool:
        if len(self._buf) < TRAILER_BYTES:
            return False
        expected = self._crc.to_bytes(4, "little")
        trailer = self._take(TRAILER_BYTES)
        assert trailer is not None
        if trailer[4:] != END:
            raise self.fail("no end marker after the last section (the file is corrupted)")
        if trailer[:4] != expected:
            raise self.fail("file checksum mismatch (the file is corrupted)")
        self.complete = True
        return True

    def close(self) -> list[RawSection]:
        """The stream ended: the remaining (1.x) sections, or an error naming what is
        missing."""
        if self.dead:
            raise NerfzipError(f"{self.where}: the stream reader already failed")
        if self._legacy:
            return self._close_legacy()
        if self.complete:
            return []
        if self.version is None:
            raise self.fail("not a .nrz file (wrong magic bytes)" if len(self._buf) <
                            len(MAGIC) else "truncated in the preamble")
        if self.header is None:
            raise self.fail("truncated in the header")
        if self.entries is None:
            raise self.fail("truncated in the section table")
        if self._next < len(self.entries):
            e = self.entries[self._next]
            raise self.fail(f"section {e.name!r}: extends past the end of the file (it ends "
                            f"at byte {e.offset + e.length}, the file has "
                            f"{self._pos + len(self._buf)}; truncated?)")
        raise self.fail("truncated or incomplete file (no end marker)")

    def _close_legacy(self) -> list[RawSection]:
        data = bytes(self._buf)
        self._buf = bytearray()
        try:
            v1 = parse_v1(data)
        except FormatError as e:
            raise self.fail(str(e)) from None
        self.version, self.family_id, self.header = v1.version, v1.family_id, v1.header
        self.entries = check_entries(v1.entries, self.fail)
        self.size, self.complete = len(data), True
        return [RawSection(i, e, data[e.offset:e.offset + e.length], len(data))
                for i, e in enumerate(self.entries)]
