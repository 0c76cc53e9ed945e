"""Tucker and CP fits with tensorly: of one tensor (what a ``tensor_decompose`` constraint
re-fits on every projection), and of a tensor that is itself a sum of rank-1 terms given by
its factors (what ``reduce_rank`` shrinks and ``convert`` builds), without forming it.

tensorly runs on its numpy backend, selected per call (``tl.backend_context``) so that no
global backend is changed; small fits run in float64, large dense ones in float32. Factors come
back as float32 torch tensors.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import tensorly as tl
import torch
from tensorly.decomposition import parafac, partial_tucker
from torch import Tensor

CORE_CAP = 1 << 22
"""Largest compressed core (elements) ``reduce_cp`` hands to parafac (32 MB in float64)."""


def _np(x: Tensor, dtype: type = np.float64) -> np.ndarray:
    return x.detach().cpu().numpy().astype(dtype)


def _torch(a: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def fit_tucker(x: Tensor, ranks: Sequence[int], init: list[Tensor] | None = None,
               iters: int = 10) -> list[Tensor]:
    """[core, U_m for each m with ranks[m] > 0] of ``x`` (modes with rank 0 stay whole; U_m
    [shape_m, ranks[m]] orthonormal). Truncated HOSVD, then ``iters`` HOOI sweeps (De Lathauwer,
    De Moor & Vandewalle 2000); from ``init`` (an earlier fit's parts) the sweeps start at its
    factors instead: a warm start, so re-fitting a slightly changed tensor is cheap."""
    modes = [m for m, r in enumerate(ranks) if r > 0]
    start: object = "svd"
    if init is not None:
        start = (_np(init[0]), [_np(u) for u in init[1:]])
    with tl.backend_context("numpy"):
        (core, factors), _ = partial_tucker(_np(x), [ranks[m] for m in modes], modes=modes,
                                            n_iter_max=iters, init=start, tol=1e-6)
    return [_torch(core)] + [_torch(u) for u in factors]


def fit_cp(x: Tensor, rank: int, init: list[Tensor] | None = None, iters: int = 50,
           dtype: type = np.float64) -> list[Tensor]:
    """CP factors [U_k] (U_k [shape_k, rank], one per mode of ``x``) by ALS (tensorly
    ``parafac``), from the SVD of the unfoldings or from ``init`` (warm start). Modes of size
    1 are left out of the fit and get a row of ones; column norms are balanced across modes."""
    keep = [k for k, n in enumerate(x.shape) if n > 1]
    start: object = "svd"
    if init is not None:
        start = (None, [_np(init[k], dtype) for k in keep])
    with tl.backend_context("numpy"), warnings.catch_warnings():
        # A CP rank above a mode's size is normal; tensorly then completes the SVD start with
        # seeded random columns, and says so.
        warnings.filterwarnings("ignore", "Trying to compute SVD", UserWarning)
        weights, factors = parafac(_np(x.reshape([x.shape[k] for k in keep]), dtype), rank,
                                   n_iter_max=iters, init=start, tol=1e-9, random_state=0)
    fitted = [torch.from_numpy(np.asarray(u, dtype=np.float64)) for u in factors]
    if weights is not None:
        fitted[0] = fitted[0] * torch.from_numpy(np.asarray(weights, dtype=np.float64))
    fitted = balanced(fitted)
    out, it = [], iter(fitted)
    for n in x.shape:
        out.append(next(it).float().contiguous() if n > 1 else torch.ones(1, rank))
    return out


def balanced(factors: list[Tensor], targets: Sequence[float] | None = None) -> list[Tensor]:
    """The same rank-1 terms with each term's column norms set to ``targets[k]`` times a common
    factor (equal norms without targets). Fine-tuning then sees factors at the scales the
    field had rather than one huge and one tiny factor per term."""
    norms = torch.stack([u.double().norm(dim=0) for u in factors])  # [N, R]
    size = norms.prod(dim=0)  # the norm of each rank-1 term
    n = len(factors)
    t = torch.tensor(targets if targets is not None else [1.0] * n, dtype=torch.float64)
    t = t / t.prod() ** (1.0 / n)
    out = []
    for k, u in enumerate(factors):
        scale = torch.where(norms[k] > 0, size ** (1.0 / n) * t[k] / norms[k].clamp(min=1e-300),
                            torch.zeros_like(size))
        out.append((u.double() * scale).to(u.dtype))
    return out


def cp_inner(a: list[Tensor], b: list[Tensor]) -> float:
    """``<[[a]], [[b]]>`` from the factors alone: sum_ij prod_k (A_k^T B_k)_ij."""
    g = torch.ones(a[0].shape[1], b[0].shape[1], dtype=torch.float64, device=a[0].device)
    for x, y in zip(a, b):
        g = g * (x.double().T @ y.double())
    return float(g.sum())


def cp_distance(a: list[Tensor], b: list[Tensor]) -> tuple[float, float]:
    """``(||[[a]] - [[b]]||, ||[[a]]||)`` (Frobenius) without forming either tensor."""
    aa = cp_inner(a, a)
    return math.sqrt(max(0.0, aa - 2 * cp_inner(a, b) + cp_inner(b, b))), math.sqrt(aa)


def strongest(factors: list[Tensor], rank: int) -> Tensor:
    """Indices of the ``rank`` terms with the largest norm (product of column norms)."""
    size = torch.stack([u.double().norm(dim=0) for u in factors]).prod(dim=0)
    return torch.sort(torch.topk(size, rank).indices).values


def reduce_cp(factors: list[Tensor], rank: int, iters: int = 100) -> list[Tensor]:
    """A rank-``rank`` approximation of the tensor ``[[factors]]`` (factors [n_k, C]), never
    formed. Each factor is QR-factorised, F_k = Q_k R_k, so the tensor is the small core
    ``[[R_1, ..., R_N]]`` multiplied by orthonormal Q_k: an approximation of the core, mapped
    back through the Q_k, is as good on the full tensor (CANDELINC: Carroll, Pruzansky & Kruskal
    1980; Bro & Andersson 1998).

    - Two factors (a matrix F_1 F_2^T): truncated SVD of the C x C core, the optimum
      (Eckart-Young), exact when the rank allows.
    - More, core up to ``CORE_CAP`` elements: parafac of the core warm-started from the
      ``rank`` strongest terms; ALS never increases the error, so this is never worse than
      keeping those terms.
    - Larger cores: the strongest terms, with the last factor (a field's appearance basis)
      re-solved by least squares given the others.
    """
    factors = [u.detach().cpu() for u in factors]  # tensorly's numpy backend: fit on the CPU
    c = factors[0].shape[1]
    if rank >= c:
        return [u.clone() for u in factors]
    qr = [torch.linalg.qr(u.double()) for u in factors]
    qs, rs = [q for q, _ in qr], [r for _, r in qr]
    keep = strongest(factors, rank)
    if len(factors) == 2:
        u, s, vh = torch.linalg.svd(rs[0] @ rs[1].T)
        root = s[:rank].sqrt()
        small = [u[:, :rank] * root, vh[:rank].T * root]
    elif math.prod(r.shape[0] for r in rs) <= CORE_CAP:
        core = torch.from_numpy(tl.cp_to_tensor((None, [r.numpy() for r in rs])))
        small = [u.double() for u in fit_cp(core, rank, [r[:, keep] for r in rs], iters)]
    else:
        small = [r[:, keep] for r in rs]
        small[-1] = least_squares_last(rs, small)
    return [(q @ m).float().contiguous() for q, m in zip(qs, balanced(small))]


def least_squares_last(full: list[Tensor], kept: list[Tensor]) -> Tensor:
    """The last factor B minimising ``||[[full]] - [[kept[:-1], B]]||``: B = F_N G H^-1 with
    G = *_k F_k^T K_k and H = *_k K_k^T K_k over the other modes (Hadamard products; the
    normal equations of one ALS step, Kolda & Bader 2009, sec. 3.4)."""
    g = torch.ones(full[0].shape[1], kept[0].shape[1], dtype=torch.float64,
                   device=full[0].device)
    h = torch.ones(kept[0].shape[1], kept[0].shape[1], dtype=torch.float64,
                   device=full[0].device)
    for f, k in zip(full[:-1], kept[:-1]):
        g = g * (f.double().T @ k.double())
        h = h * (k.double().T @ k.double())
    return full[-1].double() @ g @ torch.linalg.pinv(h)
