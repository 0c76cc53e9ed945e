"""Little-endian binary writing and bounds-checked reading, the only parser of untrusted bytes.

``Reader`` never reads past the end of its buffer and never trusts a declared length: every
read checks the bytes left, and a violation raises ``FormatError`` (turned into a one-line
``NerfzipError`` naming the section by the container). Hand-written rather than ``construct``
or similar because the format is a handful of fixed-width integers and length prefixes, and a
small explicit reader is easier to audit against hostile input.
"""

from __future__ import annotations

import json
import struct
from typing import Any


class FormatError(ValueError):
    """Bytes that do not follow the .nrz format (truncated, inconsistent, out of bounds)."""


MAX_JSON = 1 << 20
"""Largest JSON document (header or codec parameters) a reader accepts, in bytes."""


class Writer:
    """Accumulates little-endian fields into one ``bytes`` object."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def u8(self, v: int) -> None:
        self.parts.append(struct.pack("<B", v))

    def u16(self, v: int) -> None:
        self.parts.append(struct.pack("<H", v))

    def u32(self, v: int) -> None:
        self.parts.append(struct.pack("<I", v))

    def u64(self, v: int) -> None:
        self.parts.append(struct.pack("<Q", v))

    def raw(self, b: bytes) -> None:
        self.parts.append(bytes(b))

    def blob(self, b: bytes) -> None:
        """A u64 length prefix, then the bytes."""
        self.u64(len(b))
        self.raw(b)

    def json(self, obj: Any) -> None:
        """A u32 length prefix, then compact, key-sorted UTF-8 JSON (deterministic bytes)."""
        data = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("utf-8")
        self.u32(len(data))
        self.raw(data)

    def getvalue(self) -> bytes:
        return b"".join(self.parts)


class Reader:
    """Bounds-checked reads from a bytes-like buffer."""

    def __init__(self, data: bytes | memoryview, pos: int = 0):
        self.data = memoryview(data)
        self.pos = pos

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> memoryview:
        if n < 0 or n > self.remaining():
            raise FormatError(f"needs {n} bytes at offset {self.pos}, "
                              f"only {self.remaining()} left")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def _unpack(self, fmt: str, n: int) -> int:
        return struct.unpack(fmt, self.take(n))[0]

    def u8(self) -> int:
        return self._unpack("<B", 1)

    def u16(self) -> int:
        return self._unpack("<H", 2)

    def u32(self) -> int:
        return self._unpack("<I", 4)

    def u64(self) -> int:
        return self._unpack("<Q", 8)

    def blob(self) -> memoryview:
        return self.take(self.u64())

    def json(self) -> Any:
        n = self.u32()
        if n > MAX_JSON:
            raise FormatError(f"JSON document of {n} bytes is larger than allowed ({MAX_JSON})")
        raw = bytes(self.take(n))
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:  # JSONDecodeError, huge integers
            raise FormatError(f"malformed JSON ({str(e).splitlines()[0][:120]})") from None
        except RecursionError:
            raise FormatError("malformed JSON (nested too deeply)") from None

    def expect_end(self) -> None:
        if self.remaining():
            raise FormatError(f"{self.remaining()} unexpected trailing bytes")
