"""The ``tensor_decompose`` pass (tensorly): every tensor with three or more modes longer than
1 (a TensoRF VM feature-plane stack ``planes.{m}`` [1, C, H, W], or any dense feature grid) is
held to a Tucker product, over its spatial modes (Tucker-2, the channel mode stays whole) or
over all of them, or to a CP sum, by a ``Factorized`` constraint: the field keeps its shapes,
fine-tuning runs through a re-fit, and the .nrz file stores core and factors. Matrices are
left alone: the Tucker decomposition of a matrix is its truncated SVD, which ``low_rank``
already does for linear layers (and ``reduce_rank`` for the lines of a TensoRF). Its siblings
``reduce_rank`` (fewer components) and ``convert`` (VM <-> CP) change the field itself; they are
passes of their own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from nerfzip.compression.compressed import Compressed
from nerfzip.compression.constraints import Factorized
from nerfzip.compression.registry import PassContext, register_pass
from nerfzip.errors import NerfzipError
from nerfzip.rendering.model import RadianceModel
from nerfzip.utils.schema import limits

METHODS = ("tucker", "cp")


# --- tensor_decompose ---------------------------------------------------------------------
def long_modes(x: Tensor) -> list[int]:
    return [m for m, n in enumerate(x.shape) if n > 1]


def tucker_size(shape: tuple[int, ...], ranks: list[int]) -> int:
    """Values stored by a Tucker product: the core plus one [n_m, r_m] factor per ranked mode."""
    core = math.prod(r or n for n, r in zip(shape, ranks))
    return core + sum(n * r for n, r in zip(shape, ranks))


def tucker_ranks(shape: tuple[int, ...], modes: list[int], keep: float, rank: int) -> list[int]:
    """Per-mode ranks (0: no factor): ``rank`` on every mode of ``modes``, or the same share
    of each mode's size, the largest whose product stores at most ``keep`` of the values."""
    def at(share: float) -> list[int]:
        return [max(1, min(n, round(share * n))) if m in modes else 0
                for m, n in enumerate(shape)]

    if rank:
        return [min(rank, n) if m in modes else 0 for m, n in enumerate(shape)]
    lo, hi = 0.0, 1.0
    for _ in range(40):  # bisection: the stored size grows with the share
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if tucker_size(shape, at(mid)) <= keep * math.prod(shape) \
            else (lo, mid)
    return at(lo)


def cp_rank(shape: tuple[int, ...], keep: float, rank: int) -> int:
    """``rank``, or the one whose factors store about ``keep`` of the values."""
    long = [n for n in shape if n > 1]
    return rank or max(1, int(keep * math.prod(shape) / sum(long)))


def plan(name: str, x: Tensor, method: str, keep: float, rank: int, full: bool
         ) -> Factorized | None:
    """The constraint for tensor ``name``, or None when its factors would not be smaller."""
    long = long_modes(x)
    shape = tuple(x.shape)
    if method == "tucker":
        ranks = tucker_ranks(shape, long if full else long[1:], keep, rank)
        stored = tucker_size(shape, ranks)
        f = Factorized("tucker", tuple(ranks))
    else:
        r = cp_rank(shape, keep, rank)
        limit = math.prod(shape) // max(shape)
        if r > limit:
            raise NerfzipError(f"tensor_decompose: CP rank {r} of {name} {list(shape)} exceeds "
                               f"the {limit} any tensor of that shape needs")
        stored = r * sum(shape)
        f = Factorized("cp", (r,))
    return f if stored < x.numel() else None


def no_target_error(c: Compressed, include: str, matched: dict[str, Tensor]) -> NerfzipError:
    matrices = sorted(n for n, x in matched.items() if len(long_modes(x)) == 2)
    hint = (f"; the {len(matrices)} matching matrices ({matrices[0]}, ...) are left to "
            "low_rank (linear layers) and reduce_rank (TensoRF lines): a matrix's Tucker "
            "decomposition is its truncated SVD" if matrices else "")
    return NerfzipError(f"tensor_decompose: no tensor of {c.model.field.family} with three or "
                        f"more modes longer than 1 matches include={include!r} (the feature-"
                        f"plane stacks of a TensoRF VM field are){hint}")


@dataclass
class Config:
    """Tucker / CP decomposition of 3+-mode tensors."""

    method: str = field(default="tucker", metadata=limits(choices=METHODS))
    """tucker (core and factors) or cp (a sum of rank-1 terms)."""
    keep: float = field(default=0.5, metadata=limits(0.0, 1.0))
    """Share of each tensor's values its core and factors store (below 1; unless rank)."""
    rank: int = field(default=0, metadata=limits(0))
    """Instead of keep: the rank per mode (Tucker) or in total (CP)."""
    full: bool = False
    """Tucker: factor the channel mode too (default: the spatial modes only)."""
    include: str = "grids"
    """Only tensors whose name contains this text."""


@register_pass("tensor_decompose", Config, renames={"ratio": "keep"})
def tensor_decompose(model: RadianceModel | Compressed, cfg: Config, ctx: PassContext
                     ) -> tuple[Compressed, dict[str, Any]]:
    """Tensors held to a Tucker product or CP sum; the file stores core and factors.

    Every tensor of 3+ modes whose name contains ``include`` is held to a Tucker product
    (``method="tucker"``: factors on the spatial modes, and on the channel mode too when
    ``full``) or a CP sum (``"cp"``) whose core and factors store about ``keep`` of the tensor's
    values (or of ``rank`` per mode / in total). Tucker fits are the truncated HOSVD refined by
    HOOI (the optimum at that multilinear rank, to the precision of the iteration); CP fits are
    ALS. The file stores core and factors; a later ``quant`` quantizes them instead of the
    tensor. The channel mode is the first mode longer than 1.
    """
    method, keep, rank, full, include = cfg.method, cfg.keep, cfg.rank, cfg.full, cfg.include
    if not rank and not 0.0 < keep < 1.0:
        raise NerfzipError(f"tensor_decompose: give a keep in (0, 1) or a rank >= 1 (got "
                           f"keep={keep}, rank={rank})")
    c = Compressed.of(model)
    matched = {n: x for n, x in c.tensors().items() if include in n and x.is_floating_point()}
    targets = {n: x for n, x in matched.items() if len(long_modes(x)) >= 3}
    if not targets:
        raise no_target_error(c, include, matched)
    for name in targets:
        kinds = [type(k).__name__ for k in c.constraints.get(name, [])
                 if k.slot != Factorized.slot]
        if kinds:
            raise NerfzipError(f"tensor_decompose: {name} is already constrained "
                               f"({', '.join(kinds)}): decompose before prune / quant / vq")
    before = {n: x.detach().clone() for n, x in targets.items()}
    tensors: dict[str, Any] = {}
    planned = {name: plan(name, x, method, keep, rank, full) for name, x in targets.items()}
    planned = {name: f for name, f in planned.items() if f is not None}
    for name, f in planned.items():
        c.add(name, f)
    c.project()  # fits each plan's parts
    for name, f in planned.items():
        x = before[name]
        y = c.tensors()[name].detach()
        tensors[name] = {"shape": list(x.shape), "ranks": list(f.ranks),
                         "values": x.numel(), "factor_values": sum(p.numel() for p in f.parts),
                         "rel_error": float((y - x).norm() / x.norm().clamp(min=1e-30))}
    if not tensors:
        raise NerfzipError("tensor_decompose: no tensor would get smaller at this keep / rank")
    report = {"method": method, "tensors": tensors,
              "values_before": sum(t["values"] for t in tensors.values()),
              "values_after": sum(t["factor_values"] for t in tensors.values()),
              "max_rel_error": max(t["rel_error"] for t in tensors.values())}
    c.record("tensor_decompose", {"method": method, "keep": keep, "rank": rank, "full": full,
                                  "include": include},
             {k: v for k, v in report.items() if k != "tensors"})
    return c, report
