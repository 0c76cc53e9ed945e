"""Low-rank factorisation of linear layers: truncated SVD, each layer replaced by two thinner
ones (``LowRankLinear``), which is both smaller and faster when the rank is low enough.

The rank of each layer is the smallest that keeps ``energy`` of its squared singular values,
or ``ratio`` of its full rank; layers where the factors would not be smaller than the matrix
are left alone. The field records which layers are factorised (its config), so the .nrz file
rebuilds them. Fine-tune afterwards (``finetune``) to recover the loss.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nerfzip.compression.state import Compressed
from nerfzip.errors import NerfzipError
from nerfzip.rendering.model import RadianceModel

MIN_SIDE = 16


def choose_rank(s: torch.Tensor, energy: float | None, ratio: float | None) -> int:
    if ratio is not None:
        return max(1, int(round(ratio * s.numel())))
    cum = torch.cumsum(s * s, 0)
    return int(torch.searchsorted(cum, energy * cum[-1])) + 1


def low_rank(model: RadianceModel | Compressed, energy: float = 0.95,
             ratio: float | None = None, include: str = "") -> tuple[Compressed, dict[str, Any]]:
    """Factorise the linear layers of a copy of ``model`` (names containing ``include``)."""
    if not 0.0 < energy <= 1.0 or (ratio is not None and not 0.0 < ratio <= 1.0):
        raise NerfzipError(f"low_rank: energy and ratio must be in (0, 1] (got {energy}, "
                           f"{ratio})")
    c = Compressed.of(model)
    field = c.model.field
    targets = [(n, m) for n, m in field.named_modules()
               if isinstance(m, nn.Linear) and include in n
               and min(m.in_features, m.out_features) >= MIN_SIDE]
    layers: dict[str, Any] = {}
    before = after = 0
    for name, lin in targets:
        if any(name.startswith(k + ".") or name == k for k in c.constraints):
            raise NerfzipError(f"low_rank: layer {name} is already constrained (pruned, "
                               "quantized); factorise before those passes")
        w = lin.weight.detach()
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        r = choose_rank(s, energy, ratio)
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
    c.record("low_rank", {"energy": energy, "ratio": ratio, "include": include},
             {"weights_before": before, "weights_after": after, "layers": len(layers)})
    return c, report
