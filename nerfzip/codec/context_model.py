"""A checkerboard spatial context model for plane (and line) latents: He, Zheng, Sun, Wang, Qin,
"Checkerboard Context Model for Efficient Learned Image Compression" (CVPR 2021), adapted to
TensoRF factors [C, H, W] (2-D) and [C, L] (1-D), in two passes.

- *Anchors*, the positions with ``(i + j)`` even (1-D: ``i`` even), are coded first with the
  grid's factorized prior (``nerfzip.codec.entropy_model``).
- *Non-anchors* are coded next, each with a discretized Laplace density whose mean and scale
  come from its decoded anchor neighbours (4 in 2-D, 2 in 1-D; borders reflect, which keeps
  the parity, so every neighbour is an anchor), in the same channel:

      mu    = alpha_c * mean(neighbours) + beta_c
      b     = SCALE_MIN * 2^(clamp(t_c + u_k, 0, SCALES - 1) / SCALE_STEPS)
      p(q)  = Laplace(mu, b) mass over [q - 1/2, q + 1/2]

  with ``k = bit_length(max - min of the neighbours)`` (capped at ``BUCKETS - 1``): the
  neighbours' spread picks a learned scale offset ``u_k`` shared by the channels, ``t_c`` is
  the channel's own. Five learned numbers a channel plus ``BUCKETS`` a grid.

While training (``CheckerboardContext``), the latents carry additive uniform noise and the
neighbours are the rounded latents (what a decoder sees, straight-through), so the rate is
differentiable in the latents and the context parameters. ``update`` freezes the parameters
into integers (``FrozenContext``): ``A_c = round(alpha_c 2^MEAN_BITS / k)``, ``B_c =
round(beta_c 2^MEAN_BITS)`` (k neighbours), ``T_c = round(t_c)``, ``U_k = round(u_k)``. The
coder predicts, from integers only, the mean ``mu = (A_c * sum(neighbours) + B_c) /
2^MEAN_BITS`` in fixed point, codes ``q - round(mu)`` and picks one of ``SCALES x FRACTIONS``
integer frequency tables by the scale index ``clamp(T_c + U_k)`` and the fraction of ``mu``
(in 1/``FRACTIONS``). The tables are a fixed function of the two indices, computed with
IEEE-754 double additions, subtractions, multiplications, divisions and floors in a fixed order
(the exponential by range reduction, a Taylor polynomial and repeated squaring, never the
platform's ``exp``), then made integer with integer arithmetic: every step is correctly rounded
by IEEE 754, so every machine computes the same tables and decoding is bit-exact. The symbols
are grouped by table (a stable sort on the table index, which the decoder recomputes from the
anchors) so that each group is one vectorised call of the range coder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import constriction
import numpy as np
import torch
from torch import Tensor, nn

from nerfzip.codec.binary import FormatError
from nerfzip.codec.entropy_model import LIKELIHOOD_BOUND, minimise

MEAN_BITS = 12
"""Fixed-point bits of the predicted mean."""
FRACTIONS = 8
"""Fractions of the predicted mean the tables distinguish (the mean is coded to 1/16 steps)."""
SCALES = 104
"""Scale indices: b = SCALE_MIN * 2^(s / SCALE_STEPS), s in [0, SCALES)."""
SCALE_STEPS = 8
"""Scale indices per octave."""
SCALE_MIN = 1.0 / 32
"""Smallest Laplace scale (in quantization steps)."""
BUCKETS = 12
"""Classes of the neighbours' spread (max - min): 0, 1, 2-3, 4-7, ..., >= 2^(BUCKETS - 2)."""
PRECISION = 16
"""Bits of the context tables' frequencies."""
TAIL_WIDTH = 9.25
"""A table's support reaches TAIL_WIDTH scales past 1/2 (its tails: about e^-9.25 = 1e-4)."""
MAX_RADIUS = 4095
"""Largest |q - round(mu)| a table holds (wider residuals are escaped)."""
ALPHA_MAX = 4.0
BETA_MAX = float(1 << 20)
INDEX_MIN, INDEX_MAX = -SCALES, 2 * SCALES
"""Range of the frozen per-channel and per-bucket scale offsets."""
LN2 = 0.6931471805599453
WEIGHT_BITS = 40
"""Bits of the integer weights the table masses are floored to before normalisation."""


def first_line(e: BaseException) -> str:
    """The first line of a coder's error message (at most 160 characters)."""
    lines = str(e).strip().splitlines()
    return (lines[0] if lines else type(e).__name__)[:160]


# --- layout ---------------------------------------------------------------------------------
def spatial_shape(shape: tuple[int, ...], axis: int) -> tuple[int, ...] | None:
    """The spatial shape of a grid of ``shape`` with channels along ``axis``: its other axes
    longer than 1 (row-major order, as ``channels_first`` flattens them); None unless there
    are one or two of them."""
    dims = tuple(int(s) for i, s in enumerate(shape) if i != axis and s > 1)
    return dims if 1 <= len(dims) <= 2 else None


@dataclass(frozen=True)
class Layout:
    """Positions (flat, row-major over the spatial shape) of the anchors [Na] and the others
    [M], and of each other position's neighbours [k, M] (all anchors)."""

    anchors: np.ndarray
    others: np.ndarray
    neighbours: np.ndarray


def reflect(i: np.ndarray, n: int) -> np.ndarray:
    """Index i in [-1, n] reflected into [0, n) (-1 -> 1, n -> n - 2: the parity is kept)."""
    return np.where(i < 0, -i, np.where(i >= n, 2 * (n - 1) - i, i))


@lru_cache(maxsize=32)
def layout(spatial: tuple[int, ...]) -> Layout:
    """The checkerboard of ``spatial`` (1-D: even / odd positions)."""
    if len(spatial) == 1:
        (n,) = spatial
        pos = np.arange(n, dtype=np.int64)
        others = pos[1::2]
        nb = np.stack([reflect(others - 1, n), reflect(others + 1, n)])
        return Layout(pos[0::2], others, nb)
    h, w = spatial
    i, j = np.divmod(np.arange(h * w, dtype=np.int64), w)
    anchor = (i + j) % 2 == 0
    oi, oj = i[~anchor], j[~anchor]
    nb = np.stack([reflect(oi - 1, h) * w + oj, reflect(oi + 1, h) * w + oj,
                   oi * w + reflect(oj - 1, w), oi * w + reflect(oj + 1, w)])
    return Layout(np.flatnonzero(anchor), np.flatnonzero(~anchor), nb)


BUCKET_OF = np.minimum(np.frexp(np.arange(1 << (BUCKETS - 1), dtype=np.float64))[1],
                       BUCKETS - 1).astype(np.int64)
"""``min(bit_length(g), BUCKETS - 1)`` for g < 2^(BUCKETS - 1) (frexp is exact there)."""


def bucket_np(spread: np.ndarray) -> np.ndarray:
    """``min(bit_length(spread), BUCKETS - 1)`` of non-negative integers."""
    return BUCKET_OF[np.minimum(spread, len(BUCKET_OF) - 1)]


# --- the training side ----------------------------------------------------------------------
def laplace_mass(r: Tensor, b: Tensor) -> Tensor:
    """Mass of a Laplace(0, b) density over [r - 1/2, r + 1/2] (differentiable), computed on
    the side of the mean where the exponentials are small."""
    lo, hi = r - 0.5, r + 0.5
    a, c = torch.exp(-lo.abs() / b), torch.exp(-hi.abs() / b)
    straddle = (lo < 0) & (hi > 0)
    return torch.where(straddle, 1 - 0.5 * (a + c), 0.5 * (a - c).abs())


class CheckerboardContext(nn.Module):
    """The non-anchors' conditional densities of a grid of ``channels`` x ``spatial`` latents
    (see the module docstring); parameters ``alpha``, ``beta``, ``t`` [C] and ``u``
    [BUCKETS]."""

    def __init__(self, channels: int, spatial: tuple[int, ...]):
        super().__init__()
        if len(spatial) not in (1, 2) or min(spatial) < 2:
            raise ValueError(f"a checkerboard needs a 1-D or 2-D grid of sides >= 2, not "
                             f"{list(spatial)}")
        self.channels, self.spatial = channels, tuple(spatial)
        self.alpha = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))
        self.t = nn.Parameter(torch.full((channels,), float(4 * SCALE_STEPS)))
        self.u = nn.Parameter(torch.zeros(BUCKETS))
        self.frozen: FrozenContext | None = None
        lay = layout(self.spatial)
        self.register_buffer("others", torch.from_numpy(lay.others), persistent=False)
        self.register_buffer("anchors", torch.from_numpy(lay.anchors), persistent=False)
        self.register_buffer("neighbours", torch.from_numpy(lay.neighbours), persistent=False)

    def params(self) -> list[Tensor]:
        return [self.alpha, self.beta, self.t, self.u]

    def predict(self, context: Tensor, params: list[Tensor] | None = None,
                select: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(mean, scale) [C, M'] of the non-anchors (or of those at ``select``, indices into
        the M non-anchors) from ``context`` [C, N], the rounded latents."""
        alpha, beta, t, u = self.params() if params is None else params
        nbr = self.neighbours if select is None else self.neighbours[:, select]
        nb = context[:, nbr]  # [C, k, M']
        mean = alpha[:, None] * nb.mean(dim=1) + beta[:, None]
        with torch.no_grad():
            spread = (nb.amax(dim=1) - nb.amin(dim=1)).round().clamp_min(0)
            k = torch.frexp(spread.double())[1].clamp_max(BUCKETS - 1).long()
        s = (t[:, None] + u[k]).clamp(0, SCALES - 1)
        scale = SCALE_MIN * torch.exp2(s / SCALE_STEPS)
        return mean, scale

    def likelihood(self, y: Tensor, context: Tensor, params: list[Tensor] | None = None,
                   select: Tensor | None = None) -> Tensor:
        """Probabilities [C, M'] of the non-anchor values of ``y`` [C, N] (noisy or integer;
        at ``select`` if given) given the rounded latents ``context`` [C, N]."""
        mean, scale = self.predict(context, params, select)
        idx = self.others if select is None else self.others[select]
        return laplace_mass(y[:, idx] - mean, scale).clamp_min(LIKELIHOOD_BOUND)

    def bits(self, y: Tensor, context: Tensor | None = None,
             params: list[Tensor] | None = None, select: Tensor | None = None) -> Tensor:
        """Estimated coded size of the non-anchors of y [C, N] in bits (differentiable);
        ``context`` defaults to ``round(y)``."""
        context = torch.round(y) if context is None else context
        return -torch.log2(self.likelihood(y, context, params, select)).sum()

    def forward(self, y: Tensor, generator: torch.Generator | None = None
                ) -> tuple[Tensor, Tensor]:
        """(quantized latents [C, N], likelihoods of the non-anchors [C, M]) of y [C, N]:
        additive uniform noise while training, rounding otherwise; the neighbours are always
        the rounded latents (straight-through), as the decoder sees them."""
        rounded = y + (torch.round(y) - y).detach()
        if self.training:
            y_hat = y + torch.rand(y.shape, generator=generator, device=y.device) - 0.5
        else:
            y_hat = torch.round(y)
        return y_hat, self.likelihood(y_hat, rounded)

    def compress(self, q: Tensor) -> tuple[bytes, np.ndarray]:
        """Range-coded bytes of the non-anchors of integer latents q [C, N] and the escaped
        values (the anchors are the factorized prior's to code)."""
        if self.frozen is None:
            raise RuntimeError("update() the context model before compress()")
        return self.frozen.compress(torch.round(q.detach()).cpu().to(torch.int64).numpy())

    def decompress(self, data: bytes, escapes: np.ndarray, anchors: Tensor) -> Tensor:
        """Integer latents [C, N] (as float32) from ``compress``'s output and the decoded
        anchors [C, N_a]."""
        if self.frozen is None:
            raise RuntimeError("update() the context model before decompress()")
        q = np.zeros((self.channels, math.prod(self.spatial)), dtype=np.int64)
        q[:, self.anchors.cpu().numpy()] = anchors.cpu().to(torch.int64).numpy()
        return torch.from_numpy(self.frozen.decompress(data, escapes, q)).to(torch.float32)

    @torch.no_grad()
    def initialize(self, q: Tensor) -> None:
        """Least-squares alpha, beta per channel and the scales of the residuals, from integer
        latents q [C, N]."""
        q = q.to(self.alpha.device, torch.float32)
        nbm = q[:, self.neighbours].mean(dim=1)
        y = q[:, self.others]
        xm, ym = nbm.mean(dim=1, keepdim=True), y.mean(dim=1, keepdim=True)
        var = ((nbm - xm) ** 2).mean(dim=1)
        cov = ((nbm - xm) * (y - ym)).mean(dim=1)
        alpha = torch.where(var > 0, cov / var.clamp_min(1e-12), torch.ones_like(var))
        alpha = alpha.clamp(0.0, 2.0)
        beta = ym[:, 0] - alpha * xm[:, 0]
        mad = (y - alpha[:, None] * nbm - beta[:, None]).abs().mean(dim=1).clamp_min(SCALE_MIN)
        self.alpha.copy_(alpha)
        self.beta.copy_(beta)
        self.t.copy_(SCALE_STEPS * torch.log2(mad / SCALE_MIN))
        self.u.zero_()

    def fit(self, q: Tensor, steps: int = 200, lr: float = 0.05, sample: int = 65536,
            seed: int = 0) -> float:
        """Fit to integer latents q [C, N] (least squares, then Adam on the code length of at
        most ``sample`` non-anchors a step); returns the last bits per non-anchor."""
        self.initialize(q)
        q = torch.round(q.detach()).to(self.alpha.device, torch.float32)
        gen = torch.Generator(device=q.device).manual_seed(seed)
        m = self.others.numel()
        per = max(1, sample // max(1, self.channels))

        def bits() -> Tensor:
            select = torch.randint(0, m, (per,), generator=gen, device=q.device) \
                if m > per else None
            n = per if select is not None else m
            return -torch.log2(self.likelihood(q, q, select=select)).sum() / (n * self.channels)

        bpv = minimise(bits, self.params(), steps, lr)
        self.eval()
        return bpv

    @torch.no_grad()
    def update(self) -> FrozenContext:
        """Freeze the parameters into the integers the coder uses (``self.frozen``)."""
        k = self.neighbours.shape[0]
        a = torch.round(self.alpha.double().clamp(-ALPHA_MAX, ALPHA_MAX) * (1 << MEAN_BITS) / k)
        b = torch.round(self.beta.double().clamp(-BETA_MAX, BETA_MAX) * (1 << MEAN_BITS))
        t = torch.round(self.t.double()).clamp(INDEX_MIN, INDEX_MAX)
        u = torch.round(self.u.double()).clamp(INDEX_MIN, INDEX_MAX)
        self.frozen = FrozenContext(self.spatial, np.stack([a.cpu().numpy(), b.cpu().numpy(),
                                                            t.cpu().numpy()], 1).astype(np.int64),
                                    u.cpu().numpy().astype(np.int64))
        return self.frozen


# --- exact tables -----------------------------------------------------------------------------
def exp_neg(x: np.ndarray) -> np.ndarray:
    """exp(-x) for x >= 0 with IEEE-754 basic operations only, in a fixed order (so every
    machine gets the same bits): x is clamped to 64, halved 16 times (exact), the Taylor
    polynomial of degree 8 taken, and the result squared 16 times (relative error ~1e-11)."""
    y = np.minimum(np.asarray(x, dtype=np.float64), 64.0) / 65536.0
    total = np.ones_like(y)
    term = np.ones_like(y)
    for n in range(1, 9):
        term = term * (-y) / float(n)
        total = total + term
    for _ in range(16):
        total = total * total
    return total


def integer_frequencies(w: np.ndarray, precision: int = PRECISION) -> np.ndarray:
    """Frequencies summing to 2^precision from integer weights w: each 1 plus its integer share
    of the rest, the remainder to the largest fractional parts (integer arithmetic only)."""
    w = w.astype(np.int64)
    total = 1 << precision
    weight = int(w.sum())
    if weight == 0:
        w, weight = np.ones_like(w), w.size
    share = w * (total - w.size)
    freq = 1 + share // weight
    rem = share % weight
    deficit = total - int(freq.sum())
    freq[np.argsort(-rem, kind="stable")[:deficit]] += 1
    return freq


@lru_cache(maxsize=4096)
def table(key: int) -> tuple[int, np.ndarray]:
    """(radius R, 2R + 2 frequencies) of table ``key = s * FRACTIONS + d``: a Laplace density of
    scale b_s centred at the fraction ``delta_d = (2d + 1 - FRACTIONS) / (2 FRACTIONS)``, its
    mass over each integer bin r in [-R, R], then the escape (the tails)."""
    s, d = divmod(int(key), FRACTIONS)
    inv_b = 32.0 * float(exp_neg(np.float64(s * LN2 / SCALE_STEPS)))  # 1 / b_s, SCALE_MIN 1/32
    radius = min(MAX_RADIUS, int(math.ceil(TAIL_WIDTH / inv_b + 0.5)))
    delta = (2 * d + 1 - FRACTIONS) / (2 * FRACTIONS)
    edges = np.arange(-radius, radius + 2, dtype=np.float64) - 0.5 - delta  # 2R + 2 edges
    e = exp_neg(np.abs(edges) * inv_b)
    lo, hi = edges[:-1], edges[1:]
    straddle = (lo < 0) & (hi > 0)
    mass = np.where(straddle, 1.0 - 0.5 * (e[:-1] + e[1:]), 0.5 * np.abs(e[:-1] - e[1:]))
    tail = 0.5 * (e[0] + e[-1])
    scale = float(1 << WEIGHT_BITS)
    w = np.floor(np.append(mass, tail) * scale).astype(np.int64)
    freq = integer_frequencies(w)
    freq.setflags(write=False)
    return radius, freq


@lru_cache(maxsize=4096)
def categorical(key: int):  # -> constriction.stream.model.Categorical
    return constriction.stream.model.Categorical(table(key)[1].astype(np.float64),
                                                 perfect=False)


@dataclass
class FrozenContext:
    """What the coder needs: the spatial shape, per channel ``params`` [C, 3] = (A_c, B_c,
    T_c) and the bucket offsets ``buckets`` [BUCKETS] (all integers)."""

    spatial: tuple[int, ...]
    params: np.ndarray
    buckets: np.ndarray
    _layout: Layout = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.check()
        self._layout = layout(tuple(self.spatial))

    @property
    def channels(self) -> int:
        return int(self.params.shape[0])

    def check(self) -> None:
        """Every number in range (FormatError otherwise: this is what a decoder reads)."""
        if len(self.spatial) not in (1, 2) or min(self.spatial) < 2:
            raise FormatError(f"context model: spatial shape {list(self.spatial)} is not a "
                              "1-D or 2-D grid of sides >= 2")
        p, u = self.params, self.buckets
        if p.ndim != 2 or p.shape[1] != 3 or p.shape[0] < 1 or u.shape != (BUCKETS,):
            raise FormatError(f"context model: parameters [C, 3] and {BUCKETS} bucket offsets "
                              f"expected, got {list(p.shape)} and {list(u.shape)}")
        k = 2 * len(self.spatial)
        if np.abs(p[:, 0]).max() > ALPHA_MAX * (1 << MEAN_BITS) / k or \
                np.abs(p[:, 1]).max() > BETA_MAX * (1 << MEAN_BITS) or \
                min(p[:, 2].min(), u.min()) < INDEX_MIN or \
                max(p[:, 2].max(), u.max()) > INDEX_MAX:
            raise FormatError("context model: a parameter out of range")

    def predict(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rounded mean m, table key) [C, M] of every non-anchor, from the anchors of integer
        latents q [C, N] (integer arithmetic only)."""
        nbr = self._layout.neighbours
        first = q[:, nbr[0]]
        total, high, low = first.copy(), first.copy(), first
        for i in range(1, nbr.shape[0]):
            v = q[:, nbr[i]]
            total += v
            np.maximum(high, v, out=high)
            low = np.minimum(low, v)
        spread = high - low
        a, b, t = (self.params[:, i:i + 1] for i in range(3))
        mu = a * total + b  # the mean times 2^MEAN_BITS
        half = 1 << (MEAN_BITS - 1)
        m = (mu + half) >> MEAN_BITS  # floor: round half up
        frac = mu + half - (m << MEAN_BITS)  # in [0, 2^MEAN_BITS)
        d = frac >> (MEAN_BITS - int(math.log2(FRACTIONS)))
        s = np.clip(t + self.buckets[bucket_np(spread)], 0, SCALES - 1)
        return m, s * FRACTIONS + d

    def symbols(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Coding order (indices into the flattened [C, M] non-anchors), table keys and rounded
        means in that order."""
        m, key = self.predict(q)
        key, m = key.reshape(-1), m.reshape(-1)
        order = np.argsort(key.astype(np.int16), kind="stable")  # keys < 2^15: a radix sort
        return order, key[order], m[order]

    def groups(self, keys: np.ndarray) -> list[tuple[int, int, int]]:
        """(key, start, stop) of each run of equal keys in the sorted ``keys``."""
        if not keys.size:
            return []
        starts = np.flatnonzero(np.diff(keys, prepend=keys[0] - 1))
        stops = np.append(starts[1:], keys.size)
        return [(int(keys[a]), int(a), int(b)) for a, b in zip(starts, stops)]

    def compress(self, q: np.ndarray) -> tuple[bytes, np.ndarray]:
        """Range-coded bytes of the non-anchors of integer latents q [C, N] given its anchors,
        and the escaped latents in coding order."""
        q = np.asarray(q, dtype=np.int64)
        if q.ndim != 2 or q.shape != (self.channels, math.prod(self.spatial)):
            raise ValueError(f"latents of shape {list(q.shape)} for a {self.channels} x "
                             f"{list(self.spatial)} context model")
        order, keys, m = self.symbols(q)
        values = q[:, self._layout.others].reshape(-1)[order]
        encoder = constriction.stream.queue.RangeEncoder()
        escapes = []
        for key, a, b in self.groups(keys):
            radius = table(key)[0]
            r = values[a:b] - m[a:b]
            out = np.abs(r) > radius
            idx = np.where(out, 2 * radius + 1, r + radius).astype(np.int32)
            encoder.encode(idx, categorical(key))
            escapes.append(values[a:b][out])
        esc = np.concatenate(escapes) if escapes else np.zeros(0, np.int64)
        return encoder.get_compressed().astype("<u4").tobytes(), esc

    def decompress(self, data: bytes | memoryview, escapes: np.ndarray, q: np.ndarray
                   ) -> np.ndarray:
        """Fill the non-anchors of q [C, N] (int64, anchors decoded) from ``compress``'s
        bytes and escapes; returns q."""
        if len(data) % 4:
            raise FormatError("context-coded stream is not a whole number of 32-bit words")
        decoder = constriction.stream.queue.RangeDecoder(
            np.frombuffer(data, dtype="<u4").astype(np.uint32))
        order, keys, m = self.symbols(q)
        values = np.empty(keys.size, dtype=np.int64)
        used = 0
        for key, a, b in self.groups(keys):
            radius = table(key)[0]
            try:
                idx = decoder.decode(categorical(key), b - a).astype(np.int64)
            except (AssertionError, ValueError, RuntimeError) as e:
                raise FormatError(f"context-coded stream is corrupted ({first_line(e)})") from e
            v = idx - radius + m[a:b]
            out = np.flatnonzero(idx == 2 * radius + 1)
            if used + out.size > escapes.size:
                raise FormatError("context-coded stream escapes more values than are stored")
            v[out] = escapes[used:used + out.size]
            used += out.size
            values[a:b] = v
        if not decoder.maybe_exhausted():
            raise FormatError("context-coded stream does not end with its last symbol "
                              "(truncated or corrupted)")
        if used != escapes.size:
            raise FormatError(f"{escapes.size - used} escaped values left after the context "
                              "stream")
        others = np.empty_like(values)
        others[order] = values
        q[:, self._layout.others] = others.reshape(self.channels, -1)
        return q

    def bits(self, q: np.ndarray) -> float:
        """Exact ideal code length of the non-anchors of integer latents q [C, N] (escapes
        counted as their symbol plus 32 bits)."""
        q = np.asarray(q, dtype=np.int64)
        order, keys, m = self.symbols(q)
        values = q[:, self._layout.others].reshape(-1)[order]
        total = 0.0
        for key, a, b in self.groups(keys):
            radius, freq = table(key)
            r = values[a:b] - m[a:b]
            out = np.abs(r) > radius
            idx = np.where(out, 2 * radius + 1, r + radius)
            total += float(-np.log2(freq[idx] / float(1 << PRECISION)).sum()) + 32 * int(out.sum())
        return total

