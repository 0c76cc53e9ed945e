"""Low-rank factorisation of linear layers: truncated SVD, each layer replaced by two thinner
ones (``LowRankLinear``), which is both smaller and faster when the rank is low enough.

The rank of each layer is the smallest that keeps ``energy`` of its squared singular values,
or ``ratio`` of its full rank, or is chosen for all layers together under a size ``budget``
(the share of the layers' weights the factors may have): singular values are taken greedily by
the share of their layer's energy they carry per weight they cost (``r (m + n)`` for an m x n
layer), which for these concave per-layer gains is the best allocation up to one singular
value. Layers where the factors would not be smaller than the matrix are left alone. The field
records which layers are factorised (its config), so the .nrz file rebuilds them. Fine-tune
afterwards (``finetune``) to recover the loss.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nerfzip.compression.compressed import Compressed
from nerfzip.errors import NerfzipError
from nerfzip.rendering.model import RadianceModel

MIN_SIDE = 16


def choose_rank(s: torch.Tensor, energy: float | None, ratio: float | None) -> int:
    if ratio is not None:
        return max(1, int(round(ratio * s.numel())))
    cum = torch.cumsum(s * s, 0)
    return int(torch.searchsorted(cum, energy * cum[-1])) + 1


def budget_ranks(svals: list[torch.Tensor], shapes: list[tuple[int, int]], budget: float
                 ) -> list[int]:
    """Ranks (at least 1, at most where the factors stay smaller than the matrix) whose factors
    hold at most ``budget`` of the layers' weights, taken greedily by relative energy per
    weight: gain ``s_k^2 / sum(s^2)`` of layer i at cost ``m_i + n_i``."""
    caps = [max(1, min(s.numel(), (m * n - 1) // (m + n))) for s, (m, n) in zip(svals, shapes)]
    ranks = [1] * len(svals)
    spent = sum(m + n for m, n in shapes)
    allowed = budget * sum(m * n for m, n in shapes)
    gains = []
    for i, (s, (m, n)) in enumerate(zip(svals, shapes)):
        rel = (s * s / (s * s).sum()).tolist()
        gains += [(rel[k] / (m + n), i) for k in range(1, caps[i])]
    for _, i in sorted(gains, key=lambda g: -g[0]):
        m, n = shapes[i]
        if spent + m + n > allowed:
            continue  # a cheaper layer's next value may still fit
        ranks[i] += 1
        spent += m + n
    return ranks


def low_rank(model: RadianceModel | Compressed, energy: float = 0.95,
             ratio: float | None = None, include: str = "", budget: float | None = None
             ) -> tuple[Compressed, dict[str, Any]]:
    """Factorise the linear layers of a copy of ``model`` (names containing ``include``), each
    at the rank of ``energy`` or ``ratio``, or all under the weight ``budget`` together."""
    if not 0.0 < energy <= 1.0 or (ratio is not None and not 0.0 < ratio <= 1.0):
        raise NerfzipError(f"low_rank: energy and ratio must be in (0, 1] (got {energy}, "
                           f"{ratio})")
    if budget is not None and not 0.0 < budget < 1.0:
        raise NerfzipError(f"low_rank: budget must be in (0, 1), got {budget}")
    c = Compressed.of(model)
    field = c.model.field
    targets = [(n, m) for n, m in field.named_modules()
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
        ranks = [choose_rank(s, energy, ratio) for _, s, _ in svds]
    layers: dict[str, Any] = {}
    before = after = 0
    for (name, lin), (u, s, vh), r in zip(targets, svds, ranks):
        w = lin.weight.detach()
        full = w.numel()
        if r * (w.shape[0] + w.shape[1]) >= full:
            continue
        bias = lin.bias.detach().clone() if lin.bias is not None else None
        new = field.factorize_(name, r)
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
        raise NerfzipError("low_rank: no linear layer would get smaller at this energy / ratio")
    report = {"layers": layers, "weights_before": before, "weights_after": after}
    args = {"energy": energy, "ratio": ratio, "include": include}
    if budget is not None:  # recorded only when used: older records stay as they were
        args["budget"] = budget
    c.record("low_rank", args,
             {"weights_before": before, "weights_after": after, "layers": len(layers)})
    return c, report
