"""The ``low_rank`` pass: low-rank factorisation of linear layers: truncated SVD, each layer
replaced by two thinner ones (``LowRankLinear``), which is both smaller and faster when the
rank is low enough.

The rank of each layer is the smallest that keeps ``energy`` of its squared singular values,
or ``keep`` of its full rank, or is chosen for all layers together under a size ``budget``
(the share of the layers' weights the factors may have) by the allocator every budgeted pass
shares (``compression.allocate``): each layer's options are its ranks, at ``r (m + n)`` weights
for an m x n layer and the share of its energy the truncation drops as distortion; a budget
below rank 1 in every layer is refused. Layers where the factors would not be smaller than the
matrix are left alone. The field records which layers are factorised (its config), so the .nrz
file rebuilds them. Fine-tune afterwards (``finetune``) to recover the loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nerfzip.compression.allocate import Option, Unit, allocate
from nerfzip.compression.compressed import Compressed
from nerfzip.compression.registry import PassContext, register_pass
from nerfzip.errors import NerfzipError
from nerfzip.rendering.model import RadianceModel
from nerfzip.utils.schema import limits

MIN_SIDE = 16


def choose_rank(s: torch.Tensor, energy: float, keep: float | None) -> int:
    if keep is not None:
        return max(1, int(round(keep * s.numel())))
    cum = torch.cumsum(s * s, 0)
    return int(torch.searchsorted(cum, energy * cum[-1])) + 1


def budget_ranks(svals: list[torch.Tensor], shapes: list[tuple[int, int]], budget: float
                 ) -> list[int]:
    """Ranks (at least 1, at most where the factors stay smaller than the matrix) whose factors
    hold at most ``budget`` of the layers' weights, chosen by the shared allocator
    (``compression.allocate``): layer i at rank r costs ``r (m_i + n_i)`` weights and loses
    ``sum_{k > r} s_k^2 / sum s^2`` of its energy (the relative squared Frobenius error of
    the truncation, Eckart-Young)."""
    units = []
    for i, (s, (m, n)) in enumerate(zip(svals, shapes)):
        cap = max(1, min(s.numel(), (m * n - 1) // (m + n)))
        energy = (s.double() ** 2).tolist()
        total = sum(energy) or 1.0
        tail = [sum(energy[r:]) / total for r in range(cap + 1)]
        units.append(Unit(str(i), tuple(Option(r, r * (m + n), tail[r])
                                        for r in range(1, cap + 1))))
    weights = sum(m * n for m, n in shapes)
    try:
        alloc = allocate(units, budget * weights)
    except NerfzipError:
        floor = sum(m + n for m, n in shapes) / weights
        raise NerfzipError(f"low_rank: budget {budget:g} is below rank 1 in every layer "
                           f"({floor:.3g} of the weights)") from None
    return [int(alloc.choice[str(i)].value) for i in range(len(svals))]


@dataclass
class Config:
    """The ``low_rank`` pass: low-rank factorisation of linear layers."""

    energy: float = field(default=0.95, metadata=limits(0.0, 1.0, lo_open=True))
    """Each layer's rank keeps this share of its squared singular values."""
    keep: float | None = field(default=None, metadata=limits(0.0, 1.0, lo_open=True))
    """Instead: each layer keeps this share of its full rank."""
    include: str = ""
    """Only layers whose name contains this text (e.g. fine.layers)."""
    budget: float | None = field(default=None, metadata=limits(0.0, 1.0, lo_open=True))
    """Instead: ranks chosen for all layers together, the factors holding at most this share
    of the layers' weights (below 1)."""


@register_pass("low_rank", Config, renames={"ratio": "keep"})
def low_rank(model: RadianceModel | Compressed, cfg: Config, ctx: PassContext
             ) -> tuple[Compressed, dict[str, Any]]:
    """Truncated SVD of linear layers, each replaced by two thinner ones."""
    energy, keep, include, budget = cfg.energy, cfg.keep, cfg.include, cfg.budget
    if budget is not None and not budget < 1.0:
        raise NerfzipError(f"low_rank: budget must be in (0, 1), got {budget}")
    c = Compressed.of(model)
    net = c.model.field
    targets = [(n, m) for n, m in net.named_modules()
               if isinstance(m, nn.Linear) and include in n
               and min(m.in_features, m.out_features) >= MIN_SIDE]
    for name, _ in targets:
        if any(name.startswith(k + ".") or name == k for k in c.constraints):
            raise NerfzipError(f"low_rank: layer {name} is already constrained (pruned, "
                               "quantized); factorise before those passes")
    svds = [torch.linalg.svd(lin.weight.detach(), full_matrices=False) for _, lin in targets]
    if budget is not None:
        ranks = budget_ranks([s for _, s, _ in svds],
                             [tuple(lin.weight.shape) for _, lin in targets], budget)
    else:
        ranks = [choose_rank(s, energy, keep) for _, s, _ in svds]
    layers: dict[str, Any] = {}
    before = after = 0
    for (name, lin), (u, s, vh), r in zip(targets, svds, ranks):
        w = lin.weight.detach()
        full = w.numel()
        if r * (w.shape[0] + w.shape[1]) >= full:
            continue
        bias = lin.bias.detach().clone() if lin.bias is not None else None
        new = net.factorize_(name, r)
        root = s[:r].sqrt()
        with torch.no_grad():
            new.down.weight.copy_(root[:, None] * vh[:r])
            new.up.weight.copy_(u[:, :r] * root[None, :])
            if bias is not None:
                new.up.bias.copy_(bias)
        kept = float((s[:r] ** 2).sum() / (s ** 2).sum())
        layers[name] = {"shape": list(w.shape), "rank": r, "energy": kept}
        before += full
        after += r * (w.shape[0] + w.shape[1])
    if not layers:
        raise NerfzipError("low_rank: no linear layer would get smaller at this energy / keep")
    report = {"layers": layers, "weights_before": before, "weights_after": after}
    args = {"energy": energy, "keep": keep, "include": include}
    if budget is not None:  # recorded only when used: older records stay as they were
        args["budget"] = budget
    c.record("low_rank", args,
             {"weights_before": before, "weights_after": after, "layers": len(layers)})
    return c, report
