"""Coders for arrays of integer symbols (quantized values, codebook indices, masks, run lengths).

Each coder turns a flat int64 array into parameters plus byte blobs and back:

- ``pack``: fixed-width bit packing at the smallest width that holds the range;
- ``ans``: an asymmetric-numeral-systems coder (``constriction``) with a categorical model fitted
  to the symbols' histogram, which is stored with the data (within a fraction of a percent of
  the empirical entropy for large arrays);
- ``zstd`` and ``lzma``: generic byte compressors over the narrowest integer dtype, which win
  where symbols have structure a memoryless model misses (runs, repeats).

``encode_symbols`` tries the coders and keeps the smallest. Decoders validate every declared
length against the bytes present before allocating anything.
"""

from __future__ import annotations

import io
import lzma
from typing import Any

import constriction
import numpy as np
import zstandard

from nerfzip.codec.binary import FormatError

CODERS = ("pack", "ans", "zstd", "lzma")
MAX_ALPHABET = 1 << 16
"""Largest alphabet the ``ans`` coder models (its histogram is stored in the file)."""
LZMA_MAX_BYTES = 1 << 24
"""The (slow) ``lzma`` candidate is only tried on arrays up to this many bytes."""
ZSTD_LEVEL = 12


def bits_for(alphabet: int) -> int:
    """Bits per symbol of a fixed-width code for ``alphabet`` values."""
    return max(0, int(alphabet - 1).bit_length())


def narrow_dtype(bits: int) -> np.dtype:
    return np.dtype("<u1" if bits <= 8 else "<u2" if bits <= 16 else "<u4")


def empirical_entropy_bits(symbols: np.ndarray) -> float:
    """Total bits of ``symbols`` under their own histogram (the bound a fitted memoryless
    model can reach)."""
    if symbols.size == 0:
        return 0.0
    _, counts = np.unique(symbols, return_counts=True)
    p = counts / counts.sum()
    return float(-(counts * np.log2(p)).sum())


# --- pack ---
def pack(values: np.ndarray, bits: int) -> bytes:
    """Little-endian fixed-width bit packing of non-negative ``values`` < 2**bits."""
    if bits == 0 or values.size == 0:
        return b""
    if bits in (8, 16, 32):
        return values.astype(narrow_dtype(bits)).tobytes()
    # Chunks of a multiple of 8 symbols keep every chunk byte-aligned and memory bounded.
    chunk = 1 << 20
    shifts = np.arange(bits, dtype=np.uint64)
    parts = []
    for i in range(0, values.size, chunk):
        v = values[i:i + chunk].astype(np.uint64)
        planes = ((v[:, None] >> shifts) & 1).astype(np.uint8)
        parts.append(np.packbits(planes.reshape(-1), bitorder="little").tobytes())
    return b"".join(parts)


def unpack(data: memoryview | bytes, bits: int, n: int) -> np.ndarray:
    expected = (n * bits + 7) // 8
    if len(data) != expected:
        raise FormatError(f"packed symbols: {len(data)} bytes where {n} x {bits} bits need "
                          f"{expected}")
    if bits == 0:
        return np.zeros(n, dtype=np.int64)
    if bits in (8, 16, 32):
        return np.frombuffer(data, dtype=narrow_dtype(bits)).astype(np.int64)
    raw = np.frombuffer(data, dtype=np.uint8)
    weights = (np.int64(1) << np.arange(bits, dtype=np.int64))
    out = np.empty(n, dtype=np.int64)
    chunk = 1 << 20  # symbols per chunk: a multiple of 8, so chunks start on byte boundaries
    for i in range(0, n, chunk):
        m = min(chunk, n - i)
        part = raw[i * bits // 8:(i * bits + m * bits + 7) // 8]
        planes = np.unpackbits(part, count=m * bits, bitorder="little").reshape(m, bits)
        out[i:i + m] = planes.astype(np.int64) @ weights
    return out


# --- ans ---
def _model(counts: np.ndarray) -> Any:
    return constriction.stream.model.Categorical(counts.astype(np.float64), perfect=False)


def ans_encode(values: np.ndarray, alphabet: int) -> tuple[bytes, bytes]:
    counts = np.bincount(values, minlength=alphabet).astype("<u4")
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(values.astype(np.int32), _model(counts))
    words = coder.get_compressed().astype("<u4")
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(counts.tobytes()), words.tobytes()


def ans_decode(table: memoryview, words: memoryview, alphabet: int, n: int) -> np.ndarray:
    counts = np.frombuffer(zstd_decompress(table, 4 * alphabet), dtype="<u4")
    if counts.sum() != n:
        raise FormatError(f"entropy model counts {int(counts.sum())} symbols, section has {n}")
    if len(words) % 4:
        raise FormatError("entropy-coded stream is not a whole number of 32-bit words")
    coder = constriction.stream.stack.AnsCoder(np.frombuffer(words, dtype="<u4").copy())
    out = coder.decode(_model(counts), n).astype(np.int64)
    if not coder.is_empty():
        raise FormatError("entropy-coded stream has data left after the last symbol")
    return out


# --- generic byte compressors ---
def zstd_decompress(data: memoryview | bytes, size: int) -> bytes:
    """Decompress a zstd frame that must hold exactly ``size`` bytes (never allocates more)."""
    try:
        # A bounded streaming read: a hostile frame cannot make us allocate past ``size``.
        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(bytes(data))) as reader:
            parts, got = [], 0
            while got <= size:
                block = reader.read(size + 1 - got)
                if not block:
                    break
                parts.append(block)
                got += len(block)
        out = b"".join(parts)
    except zstandard.ZstdError as e:
        raise FormatError(f"zstd stream is corrupt ({e})") from None
    if len(out) != size:
        raise FormatError(f"zstd stream holds {len(out)} bytes, expected {size}")
    return out


def lzma_decompress(data: memoryview | bytes, size: int) -> bytes:
    dec = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    try:
        out = dec.decompress(bytes(data), max_length=size + 1)
    except lzma.LZMAError as e:
        raise FormatError(f"lzma stream is corrupt ({e})") from None
    if len(out) != size or not dec.eof:
        raise FormatError(f"lzma stream does not hold exactly {size} bytes")
    return out


def compress_bytes(data: bytes, method: str) -> bytes:
    if method == "zstd":
        return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data)
    if method == "lzma":
        return lzma.compress(data, format=lzma.FORMAT_XZ, preset=6)
    if method == "none":
        return data
    raise ValueError(f"unknown byte compressor {method!r}")


def decompress_bytes(data: memoryview, method: str, size: int) -> bytes:
    if method == "zstd":
        return zstd_decompress(data, size)
    if method == "lzma":
        return lzma_decompress(data, size)
    if method == "none":
        if len(data) != size:
            raise FormatError(f"raw data has {len(data)} bytes, expected {size}")
        return bytes(data)
    raise FormatError(f"unknown byte compressor {method!r}")


# --- choose and decode ---
def encode_symbols(values: np.ndarray, coders: tuple[str, ...] = CODERS
                   ) -> tuple[dict[str, Any], list[bytes]]:
    """The smallest coding of integer ``values`` among ``coders``: (params, blobs)."""
    values = np.asarray(values, dtype=np.int64).reshape(-1)
    lo = int(values.min()) if values.size else 0
    hi = int(values.max()) if values.size else 0
    shifted = values - lo
    alphabet = hi - lo + 1
    bits = bits_for(alphabet)
    if bits > 32:
        raise ValueError(f"symbol range {lo}..{hi} is wider than 32 bits")
    base = {"lo": lo, "bits": bits}
    candidates: list[tuple[dict[str, Any], list[bytes]]] = []
    if "pack" in coders or bits == 0:
        candidates.append(({**base, "coder": "pack"}, [pack(shifted, bits)]))
    if bits > 0:
        if "ans" in coders and alphabet <= MAX_ALPHABET:
            table, words = ans_encode(shifted, alphabet)
            candidates.append(({**base, "coder": "ans", "alphabet": alphabet}, [table, words]))
        narrow = shifted.astype(narrow_dtype(bits)).tobytes()
        for method in ("zstd", "lzma"):
            if method in coders and (method != "lzma" or len(narrow) <= LZMA_MAX_BYTES):
                candidates.append(({**base, "coder": method}, [compress_bytes(narrow, method)]))
    if not candidates:  # e.g. only ``ans`` asked for, alphabet too wide for it
        candidates.append(({**base, "coder": "pack"}, [pack(shifted, bits)]))
    return min(candidates, key=lambda c: sum(len(b) for b in c[1]))


def decode_symbols(params: dict[str, Any], blobs: list[memoryview], n: int) -> np.ndarray:
    """Inverse of ``encode_symbols`` for ``n`` symbols (validated against the blobs)."""
    coder, lo, bits = params.get("coder"), params.get("lo"), params.get("bits")
    if not isinstance(lo, int) or not isinstance(bits, int) or not 0 <= bits <= 32 \
            or abs(lo) > 1 << 40:
        raise FormatError(f"bad symbol parameters lo={lo!r} bits={bits!r}")
    expected_blobs = {"pack": 1, "ans": 2, "zstd": 1, "lzma": 1}
    if not isinstance(coder, str) or coder not in expected_blobs:  # (a list is unhashable)
        raise FormatError(f"unknown symbol coder {coder!r}")
    if len(blobs) != expected_blobs[coder]:
        raise FormatError(f"symbol coder {coder} needs {expected_blobs[coder]} blobs, "
                          f"found {len(blobs)}")
    if coder == "pack":
        values = unpack(blobs[0], bits, n)
    elif coder == "ans":
        alphabet = params.get("alphabet")
        if not isinstance(alphabet, int) or not 1 <= alphabet <= min(MAX_ALPHABET, 1 << bits):
            raise FormatError(f"bad entropy-model alphabet {alphabet!r} for {bits}-bit symbols")
        values = ans_decode(blobs[0], blobs[1], alphabet, n)
    else:
        dtype = narrow_dtype(bits)
        raw = decompress_bytes(blobs[0], coder, n * dtype.itemsize)
        values = np.frombuffer(raw, dtype=dtype).astype(np.int64)
    if bits and values.size and int(values.max()) >= 1 << bits:
        raise FormatError(f"symbol out of its {bits}-bit range")
    return values + lo
