"""Layers of a progressive .nrz file: which sections make up the base and each refinement.

A progressive file is an ordinary 2.0 file whose sections are ordered base layer first, then
refinement layer 1, 2, ...; its header says how many sections each layer has::

    "progressive": {"layers": [n_0, n_1, ...]}      n_0 + n_1 + ... = the number of sections

so a reader knows every layer's last byte once the section table has arrived (each section's
length is in the table): layer k is complete, and the model can be built from it, when the
byte at ``layer_ends[k]`` has arrived. A file without the key is one layer. Which tensors a
field can do without (the refinement layers) is the family's ``Field.tensor_layers`` /
``optional_tensors``; a reader checks the two agree when it builds the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nerfzip.errors import NerfzipError

KEY = "progressive"
"""The header key of a progressive file."""
MAX_LAYERS = 64


def layer_counts(header: dict[str, Any], where: str) -> list[int] | None:
    """The header's sections per layer (None: not a progressive file); one-line error when
    the entry is not ``{"layers": [positive integers]}`` with 2 to ``MAX_LAYERS`` layers."""
    value = header.get(KEY)
    if value is None:
        return None
    counts = value.get("layers") if isinstance(value, dict) else None
    if not isinstance(counts, list) or not 2 <= len(counts) <= MAX_LAYERS or not all(
            isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 1 << 16
            for n in counts):
        raise NerfzipError(f"{where}: header: {KEY}.layers must be a list of 2 to "
                           f"{MAX_LAYERS} positive section counts")
    return list(counts)


def check_counts(counts: list[int] | None, sections: int, where: str) -> list[int]:
    """``counts`` checked against the table's number of sections ([sections] for a file
    without layers)."""
    if counts is None:
        return [sections]
    if sum(counts) != sections:
        raise NerfzipError(f"{where}: header: {KEY}.layers counts {sum(counts)} sections, the "
                           f"table has {sections}")
    return counts


def layer_index(counts: Sequence[int]) -> list[int]:
    """The layer of each section, in table order."""
    return [k for k, n in enumerate(counts) for _ in range(n)]


def layer_ends(section_ends: Sequence[int], counts: Sequence[int]) -> list[int]:
    """The file offset at which each layer's last section ends (``section_ends``: each
    section's, in table order)."""
    if len(counts) == 1:  # (1.x files store payloads in any order)
        return [max(section_ends, default=0)]
    out, i = [], 0
    for n in counts:
        i += n
        out.append(section_ends[i - 1])
    return out


def layered_order(names: Sequence[str], layers: dict[str, int]) -> tuple[list[str], list[int]]:
    """``names`` ordered by layer (``layers``: name -> layer; others are in the base), the
    order within a layer kept; and the number of sections of each layer."""
    depth = max(layers.values(), default=0)
    groups: list[list[str]] = [[] for _ in range(depth + 1)]
    for name in names:
        groups[layers.get(name, 0)].append(name)
    if any(not g for g in groups):
        raise NerfzipError("progressive: a layer without sections")
    return [n for g in groups for n in g], [len(g) for g in groups]
