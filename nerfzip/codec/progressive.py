"""Decoding a progressive .nrz file layer by layer, as its bytes arrive.

A progressive file (``layers.py``; written after the ``progressive`` pass) is a base layer and
refinement layers, each a run of sections. ``ProgressiveReader`` builds the model as soon as
the base layer has arrived and refines that same model in place as each further layer
completes: a layer's sections are decoded once, when their bytes arrive, and copied into the
field's (so far zero) tensors; nothing decoded before is decoded again::

    reader = ProgressiveReader("lego.nrz")
    for chunk in chunks:
        for layer in reader.feed(chunk):            # the layers these bytes completed
            show(reader.model, layer.bytes)         # the same model object, refined
    reader.close()

``iter_layers`` does this over a file object; ``load_prefix`` decodes the model of the first
N bytes or the first K layers of a file (``nerfzip eval --bytes / --layers``). A file without
layers is one layer: the whole file.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch

from nerfzip.codec import ladder, model_io
from nerfzip.codec import layers as lay
from nerfzip.codec.container import FrameReader
from nerfzip.codec.nrz import (
    BUDGET_BASE,
    BUDGET_PER_BYTE,
    CHUNK,
    NrzStreamReader,
    read_chunks,
    stream_name,
)
from nerfzip.errors import NerfzipError
from nerfzip.rendering.model import RadianceModel

__all__ = ["LayerInfo", "ProgressiveReader", "iter_layers", "load_prefix"]


@dataclass
class LayerInfo:
    """A completed layer."""

    layer: int
    """0 for the base, then 1, 2, ..."""
    sections: int
    """Its sections."""
    bytes: int
    """File bytes up to its last section's end: what a reader needs for the model of the
    layers 0..``layer``."""
    seconds: float
    """Decoding it: its sections' decoding plus building (base) or refining the model, as
    measured by ``feed`` (bytes fed in one call that complete several layers are timed
    together and shared out by section)."""


class ProgressiveReader:
    """Feed a .nrz file's bytes in any pieces; ``model`` is the model of the completed layers
    (None before the base layer is complete), refined in place as layers complete. Errors are
    one ``NerfzipError`` line naming ``where``."""

    def __init__(self, where: str | Path = "<stream>"):
        self.reader = NrzStreamReader(where)
        self.model: RadianceModel | None = None
        self.layers: list[LayerInfo] = []
        """The completed layers, in order."""
        self._seconds = 0.0  # feeding time not yet given to a layer
        self._sections_seen = 0

    @property
    def where(self) -> str:
        return self.reader.where

    @property
    def layer_ends(self) -> list[int] | None:
        """Each layer's end offset in the file, once the section table has arrived."""
        return self.reader.layer_ends

    def feed(self, data: bytes | bytearray | memoryview) -> list[LayerInfo]:
        """Take the next bytes; returns the layers they completed."""
        t0 = time.perf_counter()
        self.reader.feed(data)
        return self._advance(t0)

    def close(self) -> list[LayerInfo]:
        """The file ended: the last layers, or an error if it is incomplete."""
        t0 = time.perf_counter()
        self.reader.close()
        return self._advance(t0)

    def _advance(self, t0: float) -> list[LayerInfo]:
        counts = self.reader.layer_counts
        done: list[LayerInfo] = []
        if counts is not None:
            first = len(self.layers)
            bounds = [sum(counts[:k + 1]) for k in range(len(counts))]
            while len(self.layers) < len(counts) and \
                    len(self.reader.sections) >= bounds[len(self.layers)]:
                k = len(self.layers)
                names = [s.info.name for s in self.reader.sections[bounds[k] - counts[k]:
                                                                   bounds[k]]]
                self._apply(k, names, bounds[k])
                assert self.layer_ends is not None
                self.layers.append(LayerInfo(k, counts[k], self.layer_ends[k], 0.0))
                done.append(self.layers[-1])
            if done:
                # The feeding time since the last completed layer, shared by section.
                total = self._seconds + time.perf_counter() - t0
                sections = sum(counts[first:first + len(done)])
                for info in done:
                    info.seconds = total * info.sections / sections
                self._seconds = 0.0
                return done
        self._seconds += time.perf_counter() - t0
        return done

    def _apply(self, k: int, names: list[str], upto: int) -> None:
        """Build the model from the base layer (``k`` = 0), or copy layer ``k``'s decoded
        tensors into it in place."""
        r = self.reader
        assert r.header is not None
        if k == 0:
            tensors = {s.info.name: s.tensor for s in r.sections[:upto]}
            limit = BUDGET_BASE + BUDGET_PER_BYTE * r.frame.received
            self.model = model_io.build_model(r.header, tensors, self.where,  # type: ignore
                                              partial=True, limit=limit)
            entries = r.frame.entries or []
            optional = self.model.field.optional_tensors()
            for e in entries[upto:]:
                base, k = ladder.split_name(e.name, self.where)
                if k and base.startswith("field.") and base in r.tensors:
                    continue  # a refinement of a tensor of the base
                if e.name[len("field."):] not in optional or not e.name.startswith("field."):
                    raise NerfzipError(f"{self.where}: section {e.name!r} is in a refinement "
                                       "layer but is not a refinement tensor of this field")
            return
        assert self.model is not None
        own = dict(self.model.field.named_parameters()) | dict(
            self.model.field.named_buffers())
        with torch.no_grad():
            for name in names:
                x = r.tensors[name]
                base, refinement = ladder.split_name(name, self.where)
                target = own[base[len("field."):]]
                if x.shape != target.shape or x.dtype != target.dtype:
                    raise NerfzipError(f"{self.where}: tensor {name!r} is "
                                       f"{str(x.dtype)[6:]} {list(x.shape)}, the header's "
                                       f"field has {str(target.dtype)[6:]} "
                                       f"{list(target.shape)}")
                if refinement:
                    target.add_(x)  # as ``ladder.fold`` adds it: the same sums, bit for bit
                else:
                    target.copy_(x)


def iter_layers(fileobj: BinaryIO, where: str | Path | None = None, chunk: int = CHUNK
                ) -> Iterator[tuple[LayerInfo, RadianceModel]]:
    """Read a .nrz file from a binary file object and yield, as each layer completes, that
    layer and the model of the layers so far (one model object, refined in place: copy it
    to keep a layer's state). The whole file is checked (trailer, file CRC) at the end."""
    where = stream_name(fileobj, where)
    reader = ProgressiveReader(where)
    for data in read_chunks(fileobj, where, chunk):
        for info in reader.feed(data):
            assert reader.model is not None
            yield info, reader.model
    for info in reader.close():
        assert reader.model is not None
        yield info, reader.model


def file_layer_ends(data: bytes, where: str) -> list[int]:
    """The layer ends of a whole file's bytes (structure and checksums checked, nothing
    decoded)."""
    frame = FrameReader(where)
    frame.feed(data)
    frame.close()
    assert frame.entries is not None and frame.header is not None
    counts = lay.check_counts(lay.layer_counts(frame.header, where), len(frame.entries), where)
    return lay.layer_ends([e.offset + e.length for e in frame.entries], counts)


def load_prefix(path: str | Path, nbytes: int | None = None, layers: int | None = None
                ) -> tuple[RadianceModel, list[LayerInfo]]:
    """The model decoded from the first ``nbytes`` bytes of a .nrz file (the layers complete
    within them), or from its first ``layers`` layers (1: the base alone); the layers used.
    A prefix without the whole base layer is a one-line error giving the bytes it needs."""
    path = Path(path)
    if not path.is_file():
        raise NerfzipError(f"{path}: file not found")
    data = path.read_bytes()
    if (nbytes is None) == (layers is None):
        raise NerfzipError("give either a byte count or a layer count")
    if layers is not None:
        ends = file_layer_ends(data, str(path))
        if not 1 <= layers <= len(ends):
            raise NerfzipError(f"--layers {layers}: {path} has {len(ends)} layer"
                               f"{'s' if len(ends) != 1 else ''} (1: the base alone)")
        nbytes = ends[layers - 1]
    assert nbytes is not None
    if nbytes < 0:
        raise NerfzipError(f"--bytes {nbytes}: expected a byte count >= 0")
    reader = ProgressiveReader(path)
    reader.feed(data[:nbytes])
    if nbytes >= len(data):
        reader.close()
    if reader.model is None:
        base = file_layer_ends(data, str(path))[0]
        raise NerfzipError(f"{path}: the first {nbytes:,} bytes do not hold the base layer, "
                           f"which needs {base:,} bytes")
    return reader.model, list(reader.layers)
